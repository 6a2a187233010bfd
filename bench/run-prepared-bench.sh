#!/usr/bin/env bash
# Prepared images against what they replace, in the VM lane (bench/prepared-bench.py):
# `thinsnap image prepare` against hpcc's rootfs path (bench/hpcc-rootfs.sh), and a VM cut
# from a prepared image against a cut plus `thinsnap vm inject` of a 16 MiB agent.
#
#   bench/run-prepared-bench.sh [BUILD_DIR] [--vms N] [--rounds N]
#
# BUILD_DIR defaults to build/release (configured and built here when absent; benchmarks run
# without sanitizers). The image (tests/lib/build-image, 4 layers, ~20 MiB) and the
# agent are made on the host: TCG makes that slow in the guest.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
build=$top/build/release
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then build=$1; shift; fi
case $build in /*) ;; *) build=$PWD/$build ;; esac
if [ ! -x "$build/bench/prepared-cut" ] || [ ! -x "$build/plugin/thinsnapd" ]; then
  cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTS_VM_TESTS=OFF >/dev/null
  cmake --build "$build" -j2 --target thinsnap thinsnapd prepared-cut >/dev/null
fi
work=$build/prepared-bench
rm -rf "$work"
mkdir -p "$work"
python3 "$top/tests/lib/build-image" build "$work/image" --seed 7 >/dev/null
# A 16 MiB agent that compresses like one: the head of a large Go binary (containerd's).
bin=$(command -v containerd || true)
if [ -n "$bin" ] && [ "$(stat -c %s "$bin")" -ge $((16 << 20)) ]; then
  head -c $((16 << 20)) "$bin" >"$work/agent-16M"
else
  head -c $((16 << 20)) /dev/urandom >"$work/agent-16M"
fi
exec "$top/tests/vm/run" --cache "${TS_VM_CACHE:-$top/build/vm-cache}" --timeout 3000 -- \
  /usr/bin/python3 "$here/prepared-bench.py" "$build" "$top" "$work" "$@"
