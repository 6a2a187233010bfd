#!/usr/bin/env bash
# The main demo: installs what is missing, builds, and runs scripts/demo-provision.sh (a pool,
# thinsnapd and containerd, a local registry with a test image, `thinsnap image pull`, three
# VMs, an agent injected, teardown) natively on a host with device-mapper (as root), or inside
# the QEMU lane (tests/vm/run) on a host without it. scripts/demo-pool.sh shows the pool
# provisioner and thin devices alone.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTS_VM_CACHE="$PWD/build/vm-cache" >/dev/null
cmake --build build/release -j"$(nproc)" --target thinsnap thinsnapd >/dev/null
# The test image is built here: in the lane, software emulation makes that slow.
/usr/bin/python3 tests/lib/build-image build build/release/demo-image --name demo/app:v1 >/dev/null
args=("$PWD/build/release" "$PWD/build/release/demo-image")
if [ -e /dev/mapper/control ] && [ "$(id -u)" -eq 0 ]; then
  exec ./scripts/demo-provision.sh "${args[@]}"
fi
echo "demo: this host has no usable device-mapper (/dev/mapper/control missing or not root);"
echo "demo: running it inside the QEMU lane instead (Debian's kernel, software emulation)."
exec tests/vm/run --cache "$PWD/build/vm-cache" --timeout 1800 -- ./scripts/demo-provision.sh "${args[@]}"
