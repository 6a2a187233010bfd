#!/usr/bin/env bash
# Runs inject-bench inside the VM lane: a thin pool on loop files, ext4 thin
# devices of 1 GiB and 10 GiB (formatted once, as the pool's base devices are),
# a 16 MiB binary and a 4 KiB file, 20 runs each of inject and of
# mount + cp + sync + umount on the same devices, in the same guest.
#
#   bench/run-inject-bench.sh [BUILD_DIR]       (on the host; boots the guest)
#   bench/run-inject-bench.sh --in-guest BUILD_DIR
#
# BUILD_DIR defaults to build/release (configured and built here when absent;
# benchmarks run without sanitizers).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

if [ "${1:-}" != "--in-guest" ]; then
  build=${1:-$top/build/release}
  case $build in /*) ;; *) build=$PWD/$build ;; esac
  if [ ! -x "$build/bench/inject-bench" ]; then
    cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTS_VM_TESTS=OFF >/dev/null
    cmake --build "$build" -j2 --target inject-bench >/dev/null
  fi
  exec "$top/tests/vm/run" --cache "${TS_VM_CACHE:-$top/build/vm-cache}" --timeout 3000 -- \
    "$here/run-inject-bench.sh" --in-guest "$build"
fi

build=$2
runs=${TS_INJECT_BENCH_RUNS:-20}
work=$(mktemp -d /tmp/inject-bench.XXXXXX)
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  for d in ib-1g ib-10g ib-pool; do dmsetup remove "$d" 2>/dev/null || true; done
  for l in ${loops:-}; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
loops=
mkdir "$work/mnt"

head -c $((16 << 20)) /dev/urandom >"$work/agent-16M"
head -c 4096 /dev/urandom >"$work/config-4K"

truncate -s 64M "$work/meta.img"
truncate -s 16G "$work/data.img"
meta=$(losetup --find --show "$work/meta.img"); loops="$meta"
data=$(losetup --find --show "$work/data.img"); loops="$loops $data"
dmsetup create ib-pool --table "0 $(blockdev --getsz "$data") thin-pool $meta $data 128 0"
dmsetup message ib-pool 0 "create_thin 1"
dmsetup message ib-pool 0 "create_thin 2"
dmsetup create ib-1g --table "0 $((1 << 21)) thin /dev/mapper/ib-pool 1"
dmsetup create ib-10g --table "0 $((10 << 21)) thin /dev/mapper/ib-pool 2"
mkfs.ext4 -q -F /dev/mapper/ib-1g
mkfs.ext4 -q -F /dev/mapper/ib-10g

echo "inject-bench: $runs runs each, kernel $(uname -r), $(nproc) vCPU (TCG)"
echo
"$build/bench/inject-bench" --runs "$runs" --mnt "$work/mnt" "$work/agent-16M" "$work/config-4K" -- \
  "1 GiB=/dev/mapper/ib-1g" "10 GiB=/dev/mapper/ib-10g"
e2fsck -fn /dev/mapper/ib-1g >/dev/null && e2fsck -fn /dev/mapper/ib-10g >/dev/null &&
  echo && echo "inject-bench: both filesystems check clean after the runs"
# TS_INJECT_BENCH_LAYOUT=1: also show where each method put its 16 MiB file.
if [ -n "${TS_INJECT_BENCH_LAYOUT:-}" ]; then
  for d in ib-1g ib-10g; do
    echo "$d:"; debugfs -R "stat /bench/inject-agent-16M" /dev/mapper/$d 2>/dev/null | sed -n '/EXTENTS/,$p' | head -4
    debugfs -R "stat /bench/peer-agent-16M" /dev/mapper/$d 2>/dev/null | sed -n '/EXTENTS/,$p' | head -3
    dumpe2fs /dev/mapper/$d 2>/dev/null | grep -A8 "^Group 0" | grep -E "Free blocks:|free blocks"
  done
fi
