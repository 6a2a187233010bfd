#!/usr/bin/env bash
# Builds a release tree and runs the device-mapper benchmark inside the VM
# lane (a kernel with dm-thin). Usage: bench/run-dm-bench.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTS_VM_CACHE="$PWD/build/vm-cache" >/dev/null
cmake --build build/release -j"$(nproc)" --target dm-bench >/dev/null
exec tests/vm/run --cache "$PWD/build/vm-cache" --timeout 1800 -- build/release/bench/dm-bench "${1:-200}"
