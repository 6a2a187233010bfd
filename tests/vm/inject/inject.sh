#!/usr/bin/env bash
# Runs inside the guest (tests/vm/run): `thinsnap inject` against the real kernel.
#   inject.sh BUILD_DIR
# A thin pool on loop files (dmsetup/losetup here, so this test does not depend
# on devmapper/), a base thin device formatted once, a snapshot cut from it as a
# VM's device. Files are injected into the snapshot, then the guest kernel
# mounts it and every file is compared byte for byte. Devices that are mounted
# (here or in another mount namespace), held by device-mapper, or image files
# attached to a loop device are refused with nothing written.
set -euo pipefail

build=$1
thinsnap=$build/cli/thinsnap
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
refused() { # refused DESCRIPTION PATTERN COMMAND... : exit 1 and PATTERN on stderr
  local what=$1 pattern=$2 rc=0
  shift 2
  "$@" 2>"$work/err" >/dev/null || rc=$?
  if [ "$rc" -eq 1 ] && grep -q -- "$pattern" "$work/err"; then
    ok "$what ($(head -c 200 "$work/err"))"
  else
    bad "$what: exit $rc, stderr: $(cat "$work/err")"
  fi
}

work=$(mktemp -d /tmp/inject-vm.XXXXXX)
nspid=
cleanup() {
  [ -n "$nspid" ] && kill "$nspid" 2>/dev/null
  umount "$work/mnt" 2>/dev/null || true
  for d in inj-linear inj-small inj-snap inj-base inj-pool; do dmsetup remove "$d" 2>/dev/null || true; done
  for l in ${loops:-}; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
loops=
mkdir "$work/mnt"

# Host-side payloads: a 16 MiB binary, a 4 KiB file, a sparse file, an empty one.
head -c $((16 << 20)) /dev/urandom >"$work/agent"
head -c 4096 /dev/urandom >"$work/small"
truncate -s 8M "$work/sparse"
printf 'start' | dd of="$work/sparse" conv=notrunc status=none
printf 'end' | dd of="$work/sparse" bs=1 seek=$(((8 << 20) - 3)) conv=notrunc status=none
: >"$work/empty"

# The pool: 64 KiB blocks on loop files, a 1 GiB base device, a snapshot of it.
truncate -s 32M "$work/meta.img"
truncate -s 2G "$work/data.img"
meta=$(losetup --find --show "$work/meta.img")
loops="$meta"
data=$(losetup --find --show "$work/data.img")
loops="$loops $data"
dmsetup create inj-pool --table "0 $(blockdev --getsz "$data") thin-pool $meta $data 128 0"
dmsetup message inj-pool 0 "create_thin 0"
dmsetup create inj-base --table "0 $((1 << 21)) thin /dev/mapper/inj-pool 0"
mkfs.ext4 -q -F /dev/mapper/inj-base
dmsetup remove inj-base
dmsetup message inj-pool 0 "create_snap 1 0"
dmsetup create inj-snap --table "0 $((1 << 21)) thin /dev/mapper/inj-pool 1"
dev=/dev/mapper/inj-snap

check "inject the 16 MiB agent" \
  "$thinsnap" inject "$dev" "$work/agent" /usr/local/bin/agent --mode 0755 --uid 1000 --gid 1001 \
  --mtime 1700000000
check "inject the 4 KiB file" "$thinsnap" inject "$dev" "$work/small" /etc/agent/config
check "inject a sparse file" "$thinsnap" inject "$dev" "$work/sparse" /var/sparse
check "inject an empty file" "$thinsnap" inject "$dev" "$work/empty" /etc/agent/empty
check "create the mount points" "$thinsnap" inject --mountpoints "$dev"
check "e2fsck -fn is clean after injection" e2fsck -fn "$dev"

check "the kernel mounts the snapshot" mount -t ext4 -o ro "$dev" "$work/mnt"
check "agent reads back byte for byte" cmp "$work/agent" "$work/mnt/usr/local/bin/agent"
check "4 KiB file reads back byte for byte" cmp "$work/small" "$work/mnt/etc/agent/config"
check "sparse file reads back byte for byte" cmp "$work/sparse" "$work/mnt/var/sparse"
check "empty file reads back empty" cmp "$work/empty" "$work/mnt/etc/agent/empty"
check "agent mode, owner and mtime" \
  test "$(stat -c '%a %u %g %Y' "$work/mnt/usr/local/bin/agent")" = "755 1000 1001 1700000000"
check "sparse file stayed sparse" test "$(stat -c %b "$work/mnt/var/sparse")" -lt 64
check "parents are 0755 root:root" test "$(stat -c '%a %u %g' "$work/mnt/usr/local")" = "755 0 0"
check "mount points exist" sh -c "cd '$work/mnt' && test -d proc -a -d sys -a -d dev -a -d run -a -d tmp"
check "/tmp is 1777" test "$(stat -c %a "$work/mnt/tmp")" = 1777
umount "$work/mnt"

# Replacement is visible to the kernel too.
head -c 12345 /dev/urandom >"$work/agent2"
check "replace the agent" "$thinsnap" inject "$dev" "$work/agent2" /usr/local/bin/agent
check "e2fsck -fn is clean after replacement" e2fsck -fn "$dev"
check "the kernel mounts it read-write" mount -t ext4 "$dev" "$work/mnt"
check "replaced agent reads back byte for byte" cmp "$work/agent2" "$work/mnt/usr/local/bin/agent"
check "the kernel writes next to injected files" sh -c "echo guest >'$work/mnt/etc/agent/by-kernel' && sync"
umount "$work/mnt"
check "e2fsck -fn is clean after the kernel wrote" e2fsck -fn "$dev"

# A file with hundreds of extents (an extent tree block), replaced, then a file
# written into the blocks it freed: metadata freed in one operation must not
# land on data written in the next.
/usr/bin/python3 - "$work/frag" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(600):
    os.pwrite(fd, os.urandom(4096), i * 8192)
os.close(fd)
PY
check "inject a file with 600 extents" "$thinsnap" inject "$dev" "$work/frag" /var/frag
check "it has an extent tree block" sh -c "debugfs -R 'stat /var/frag' '$dev' 2>/dev/null | grep -q '(ETB0)'"
check "replace it" "$thinsnap" inject "$dev" "$work/small" /var/frag
head -c $((3 << 20)) /dev/urandom >"$work/after"
check "inject into the freed blocks" "$thinsnap" inject "$dev" "$work/after" /var/after
check "e2fsck -fn is clean after extent-tree churn" e2fsck -fn "$dev"
mount -t ext4 -o ro "$dev" "$work/mnt"
check "replaced file reads back" cmp "$work/small" "$work/mnt/var/frag"
check "file in the freed blocks reads back byte for byte" cmp "$work/after" "$work/mnt/var/after"
umount "$work/mnt"

# The base device the snapshot was cut from is untouched.
dmsetup create inj-base --table "0 $((1 << 21)) thin /dev/mapper/inj-pool 0"
check "base device is unchanged" sh -c "! debugfs -R 'stat /usr/local/bin/agent' /dev/mapper/inj-base 2>/dev/null | grep -q Inode"
dmsetup remove inj-base

# Refusals, each leaving the device byte-identical (a small thin device, so
# hashing it is cheap under TCG).
sum() { sha256sum "$1" | cut -d' ' -f1; }
dmsetup message inj-pool 0 "create_thin 2"
dmsetup create inj-small --table "0 $((64 << 11)) thin /dev/mapper/inj-pool 2"
mkfs.ext4 -q -F /dev/mapper/inj-small
dev=/dev/mapper/inj-small
mount -t ext4 -o noinit_itable "$dev" "$work/mnt"
sync
before=$(sum "$dev")
refused "a mounted device is refused" "mounted on" "$thinsnap" inject "$dev" "$work/small" /x
refused "mount points on a mounted device are refused" "mounted on" "$thinsnap" inject --mountpoints "$dev"
sync
check "nothing was written to the mounted device" test "$(sum "$dev")" = "$before"
umount "$work/mnt"

# Mounted in another mount namespace only: /proc/mounts here does not show it.
unshare -m sh -c "mount -t ext4 -o noinit_itable '$dev' '$work/mnt' && echo mounted >'$work/ns' && exec sleep 600" &
nspid=$!
for _ in $(seq 50); do [ -s "$work/ns" ] && break; sleep 0.1; done
check "mounted in the other namespace only" sh -c "! grep -q inj-small /proc/mounts && test -s '$work/ns'"
before=$(sum "$dev")
refused "a device mounted in another namespace is refused" "in use" \
  "$thinsnap" inject "$dev" "$work/small" /x
check "nothing was written to it" test "$(sum "$dev")" = "$before"
kill "$nspid"
wait "$nspid" 2>/dev/null || true
nspid=

# A device held by device-mapper.
truncate -s 64M "$work/held.img"
held=$(losetup --find --show "$work/held.img")
loops="$loops $held"
mkfs.ext4 -q -F "$held"
dmsetup create inj-linear --table "0 $(blockdev --getsz "$held") linear $held 0"
before=$(sum "$held")
refused "a device held by dm is refused" "held by" "$thinsnap" inject "$held" "$work/small" /x
check "nothing was written to the held device" test "$(sum "$held")" = "$before"
dmsetup remove inj-linear

# An image file attached to a loop device.
before=$(sum "$work/held.img")
refused "an image attached to a loop device is refused" "attached to" \
  "$thinsnap" inject "$work/held.img" "$work/small" /x
check "nothing was written to the image" test "$(sum "$work/held.img")" = "$before"

# Not ext4 at all.
dd if=/dev/zero of="$held" bs=1M count=4 status=none
refused "a device without ext2/3/4 is refused" "no filesystem found" \
  "$thinsnap" inject "$held" "$work/small" /x

if [ "$fails" -ne 0 ]; then
  echo "inject: $fails check(s) failed"
  exit 1
fi
echo "inject: all checks passed"
