#!/usr/bin/env bash
# Runs inside the guest (tests/vm/run): proves the lane gives tests what they rely on.
#   smoke.sh EXPECTED_CWD ARG...   ARG... must be exactly: "two words" "it's" '$HOME' '*'
# (tests/vm/check-status.sh covers empty arguments, which CMake cannot pass.)
set -euo pipefail

fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

expected_cwd=$1
shift

# Arguments and environment arrive intact.
want=("two words" "it's" '$HOME' '*')
check "argument count $# is ${#want[@]}" test "$#" -eq "${#want[@]}"
i=0
for a in "$@"; do
  check "argument $i is [${want[$i]:-}]" test "$a" = "${want[$i]:-}"
  i=$((i + 1))
done
check "working directory is $expected_cwd (is $PWD)" test "$PWD" = "$expected_cwd"
check "TS_SOURCE_DIR is set" test -n "${TS_SOURCE_DIR:-}"
check "TS_BINARY_DIR is set" test -n "${TS_BINARY_DIR:-}"
check "TS_VM_SMOKE_PROBE passed through verbatim" \
  test "${TS_VM_SMOKE_PROBE:-}" = "a b 'c' \$d \"e\""
check "DM_DISABLE_UDEV=1" test "${DM_DISABLE_UDEV:-}" = 1
: "${TS_SOURCE_DIR:=/nonexistent}" "${TS_BINARY_DIR:=/nonexistent}" "${TS_VM_RESULTS:=/nonexistent}"

# Root, and the kernel is the guest's, not the host's.
check "runs as root" test "$(id -u)" = 0
check "running under Debian's kernel with device-mapper" test -c /dev/mapper/control
check "dm-thin-pool target listed by dmsetup targets" \
  sh -c 'dmsetup targets | grep -q "^thin-pool "'
check "thin target listed" sh -c 'dmsetup targets | grep -q "^thin "'

# The host's tree is visible read-only; scratch directories are writable.
check "source tree visible" test -f "$TS_SOURCE_DIR/tests/vm/run"
check "build tree visible" test -f "$TS_BINARY_DIR/CMakeCache.txt"
check "host root is read-only" sh -c '! touch /usr/.ts-vm-write-probe 2>/dev/null'
for d in /tmp /run /var/lib /var/tmp /dev/shm; do
  check "$d is writable" sh -c "echo x >$d/.probe && rm $d/.probe"
done
check "HOME is writable" sh -c 'echo x >"$HOME/.probe" && rm "$HOME/.probe"'
check "bash process substitution (/dev/fd)" bash -c 'test "$(cat <(echo sub))" = sub'
check "/dev/stdout exists" test -e /dev/stdout
check "lo is up" sh -c 'test $(( $(cat /sys/class/net/lo/flags) & 1 )) = 1'
check "results share mounted at TS_VM_RESULTS" test -f "$TS_VM_RESULTS/cmd.sh"

# A loop device, ext4 on it, a thin pool and a thin device with ext4, and overlayfs.
work=$(mktemp -d /tmp/smoke.XXXXXX)
cleanup() {
  umount "$work/thinmnt" "$work/mnt" "$work/ovl" 2>/dev/null || true
  dmsetup remove smoke-thin 2>/dev/null || true
  dmsetup remove smoke-pool 2>/dev/null || true
  for l in ${loops:-}; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
loops=
truncate -s 64M "$work/ext4.img"
if loop=$(losetup --find --show "$work/ext4.img"); then
  loops="$loop"
  ok "losetup attached $loop"
  check "mkfs.ext4 on $loop" mkfs.ext4 -q -F "$loop"
  mkdir "$work/mnt"
  check "mount ext4 from $loop" mount -t ext4 "$loop" "$work/mnt"
  check "write and read back on ext4" \
    sh -c "echo hello >'$work/mnt/f' && sync && test \"\$(cat '$work/mnt/f')\" = hello"
  umount "$work/mnt" || bad "umount $work/mnt"
else
  bad "losetup --find --show"
fi

truncate -s 16M "$work/meta.img"
truncate -s 256M "$work/data.img"
if meta=$(losetup --find --show "$work/meta.img") && loops="$loops $meta" &&
   data=$(losetup --find --show "$work/data.img") && loops="$loops $data"; then
  sectors=$(($(blockdev --getsz "$data")))
  check "dmsetup create thin-pool" \
    dmsetup create smoke-pool --table "0 $sectors thin-pool $meta $data 128 0"
  check "thin device 0 created in the pool" dmsetup message smoke-pool 0 "create_thin 0"
  check "thin device activated" \
    dmsetup create smoke-thin --table "0 131072 thin /dev/mapper/smoke-pool 0"
  check "/dev/mapper/smoke-thin node exists" test -b /dev/mapper/smoke-thin
  check "mkfs.ext4 on the thin device" mkfs.ext4 -q -F /dev/mapper/smoke-thin
  mkdir "$work/thinmnt"
  check "mount the thin device" mount /dev/mapper/smoke-thin "$work/thinmnt"
  umount "$work/thinmnt" 2>/dev/null || true
  check "dmsetup remove thin" dmsetup remove smoke-thin
  check "dmsetup remove pool" dmsetup remove smoke-pool
else
  bad "losetup for the pool's metadata and data files"
fi

# Modules outside the preloaded set: by hand, and on the kernel's own request.
check "modprobe dm-snapshot" modprobe dm-snapshot
check "snapshot target listed" sh -c 'dmsetup targets | grep -q "^snapshot "'
check "kernel loads dm-zero on request for a zero table" \
  dmsetup create smoke-zero --table "0 8 zero"
dmsetup remove smoke-zero 2>/dev/null || true

mkdir "$work/lower" "$work/upper" "$work/owork" "$work/ovl"
echo low >"$work/lower/f"
check "mount overlayfs" mount -t overlay overlay \
  -o "lowerdir=$work/lower,upperdir=$work/upper,workdir=$work/owork" "$work/ovl"
check "overlay shows the lower file" test "$(cat "$work/ovl/f" 2>/dev/null)" = low

if [ "$fails" -ne 0 ]; then
  echo "smoke: $fails check(s) failed"
  exit 1
fi
echo "smoke: all checks passed"
