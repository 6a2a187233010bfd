#!/usr/bin/env bash
# Demo of the pool provisioner and thin devices; needs root and dm-thin.
# Creates a file-backed pool, cuts a thin device and a snapshot, writes and
# reads them back, shows `thinsnap pool status`, destroys the pool.
set -euo pipefail
bin=${1:?usage: demo-pool.sh THINSNAP}
dir=$(mktemp -d /tmp/thinsnap-demo-XXXXXX)
export THINSNAP_STATE_DIR=$dir/state
trap '"$bin" pool destroy demo --force --delete-files >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
step() { printf '\n$ %s\n' "$*"; "$@"; }

step "$bin" pool create demo --data "$dir/data" --data-size 1G --meta "$dir/meta"
step "$bin" thin create demo 1
step "$bin" thin activate demo 1 demo-snap-1 --size 256M
printf '\n$ echo "written to the base device" > /dev/mapper/demo-snap-1\n'
printf 'written to the base device\n' | dd of=/dev/mapper/demo-snap-1 conv=fsync status=none
step "$bin" thin snap demo 2 1 --origin-name demo-snap-1
step "$bin" thin activate demo 2 demo-snap-2 --size 256M
printf '\n$ echo "written to the snapshot only" > /dev/mapper/demo-snap-2\n'
printf 'written to the snapshot only\n' | dd of=/dev/mapper/demo-snap-2 conv=fsync status=none
printf '\n$ head -1 /dev/mapper/demo-snap-1   # the origin keeps its data\n'
head -c 27 /dev/mapper/demo-snap-1
printf '$ head -1 /dev/mapper/demo-snap-2   # the snapshot has its own\n'
head -c 29 /dev/mapper/demo-snap-2
step "$bin" thin status demo-snap-2
step "$bin" pool status demo
step "$bin" pool destroy demo --force --delete-files
trap 'rm -rf "$dir"' EXIT
echo
echo "demo: done"
