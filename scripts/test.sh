#!/usr/bin/env bash
# Runs every test: installs what is missing, builds twice (gcc with ASan+UBSan,
# clang with libFuzzer), then runs unit tests, the real-kernel (QEMU) lane and
# the bounded fuzz runs. Warnings are errors in both builds.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
jobs=$(nproc)

./scripts/deps.sh

cmake -S . -B build/asan -DTS_SANITIZE=ON -DTS_WERROR=ON -DTS_VM_CACHE="$top/build/vm-cache" >/dev/null
cmake --build build/asan -j"$jobs"

CC=clang cmake -S . -B build/clang -DTS_WERROR=ON -DTS_FUZZ=ON -DTS_VM_TESTS=OFF >/dev/null
cmake --build build/clang -j"$jobs"

ctest --test-dir build/asan --output-on-failure -j"$jobs"
ctest --test-dir build/clang --output-on-failure -L fuzz -j"$jobs"
