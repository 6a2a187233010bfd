#!/usr/bin/env bash
# The main demo: installs what is missing, builds, and runs scripts/demo-pool.sh
# natively on a host with device-mapper (as root), or inside the QEMU lane
# (tests/vm/run) on a host without it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTS_VM_CACHE="$PWD/build/vm-cache" >/dev/null
cmake --build build/release -j"$(nproc)" --target thinsnap >/dev/null
bin=$PWD/build/release/cli/thinsnap
if [ -e /dev/mapper/control ] && [ "$(id -u)" -eq 0 ]; then
  exec ./scripts/demo-pool.sh "$bin"
fi
echo "demo: this host has no usable device-mapper (/dev/mapper/control missing or not root);"
echo "demo: running it inside the QEMU lane instead (Debian's kernel, software emulation)."
exec tests/vm/run --cache "$PWD/build/vm-cache" --timeout 600 -- ./scripts/demo-pool.sh "$bin"
