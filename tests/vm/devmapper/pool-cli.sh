#!/usr/bin/env bash
# `thinsnap pool` and `thinsnap thin` against the kernel (VM lane, as root):
# create/attach/status/destroy, idempotency, persistence across a simulated
# reboot, and every bad input the CLI must refuse without changing anything.
set -u
bin=${1:?usage: vm-pool-cli.sh THINSNAP}
work=$(mktemp -d /tmp/tscli-XXXXXX)
export THINSNAP_STATE_DIR=$work/state
fails=0; count=0
PY=/usr/bin/python3

check() { # check DESCRIPTION COMMAND...: the command must succeed
        local what=$1; shift
        count=$((count + 1))
        if ! "$@" >"$work/out" 2>&1; then
                echo "FAIL: $what: $(cat "$work/out")"; fails=$((fails + 1)); return 1
        fi
}
expect() { # expect CODE NEEDLE ARGS...: thinsnap ARGS exits CODE and says NEEDLE
        local code=$1 needle=$2; shift 2
        local out rc
        out=$("$bin" "$@" 2>&1); rc=$?
        count=$((count + 1))
        if [ "$rc" -ne "$code" ] || ! grep -qF -- "$needle" <<<"$out"; then
                echo "FAIL: thinsnap $* -> exit $rc (want $code): $out (want '$needle')"
                fails=$((fails + 1))
        fi
}
json_field() { # json_field FIELD.PATH < json
        $PY -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"
}
sum() { sha256sum "$1" | cut -d' ' -f1; }

d=$work/d; m=$work/m
expect 0 "pool tp created" pool create tp --data "$d" --data-size 256M --meta "$m"
[ -f "$d" ] && [ "$(stat -c %s "$d")" = $((256 << 20)) ] || { echo "FAIL: data file not 256 MiB"; fails=$((fails+1)); }
# metadata default for 256 MiB in 64 KiB blocks: 2 MiB minimum + 4 MiB headroom -> 5 MiB
[ "$(stat -c %s "$m")" = $((5 << 20)) ] || { echo "FAIL: meta file is $(stat -c %s "$m") bytes"; fails=$((fails+1)); }
expect 0 "nothing changed" pool create tp --data "$d" --data-size 256M --meta "$m"
expect 0 "nothing changed" pool create tp --data "$d" --meta "$m"
expect 0 "\"result\":\"unchanged\"" pool create tp --data "$d" --meta "$m" --json

status=$("$bin" pool status tp --json)
count=$((count + 1))
if [ "$(json_field data.total_blocks <<<"$status")" != 4096 ] || [ "$(json_field state <<<"$status")" != active ] ||
   [ "$(json_field data.block_size <<<"$status")" != 65536 ]; then
        echo "FAIL: pool status --json: $status"; fails=$((fails + 1))
fi
expect 0 "0/4096 blocks of 64 KiB" pool status tp

# Thin device and snapshot through the CLI, data written and read back.
expect 1 "activate thin 1 of pool tp" thin activate tp 1 tp-snap-1 --size 32M
check "create thin 1" "$bin" thin create tp 1
check "activate thin 1" "$bin" thin activate tp 1 tp-snap-1 --size 32M
head -c 4M /dev/urandom > "$work/blob"
check "write thin 1" dd if="$work/blob" of=/dev/mapper/tp-snap-1 bs=1M conv=fsync status=none
check "snapshot 2 of active 1" "$bin" thin snap tp 2 1 --origin-name tp-snap-1
check "activate 2" "$bin" thin activate tp 2 tp-snap-2 --size 32M --read-only
count=$((count + 1))
[ "$(head -c 4M /dev/mapper/tp-snap-2 | sha256sum | cut -d' ' -f1)" = "$(sum "$work/blob")" ] ||
        { echo "FAIL: snapshot content differs"; fails=$((fails + 1)); }
mapped=$("$bin" thin status tp-snap-1 --json | json_field mapped_sectors)
count=$((count + 1))
[ "$mapped" -ge 8192 ] || { echo "FAIL: mapped_sectors $mapped < 8192"; fails=$((fails + 1)); }
expect 0 "active devices 2" pool status tp

# A device held open: deactivate retries, then says busy; the device stays.
exec 7</dev/mapper/tp-snap-2
expect 1 "Device or resource busy" thin deactivate tp-snap-2
exec 7<&-
check "deactivate 2" "$bin" thin deactivate tp-snap-2
expect 1 "delete 1 in pool tp: Device or resource busy" thin delete tp 1

# destroy refuses while thin devices are active, then --force takes them down.
expect 1 "has 1 active device (first: tp-snap-1)" pool destroy tp
expect 0 "pool tp destroyed" pool destroy tp --force
count=$((count + 1))
[ ! -e /dev/mapper/tp-snap-1 ] && [ ! -e /dev/mapper/tp ] || { echo "FAIL: devices left after destroy"; fails=$((fails + 1)); }
count=$((count + 1))
! grep -q "$d" /sys/block/loop*/loop/backing_file 2>/dev/null || { echo "FAIL: loop device left after destroy"; fails=$((fails + 1)); }

# Re-create on the same files: the metadata is found and reused, data kept.
expect 0 "attached (existing metadata)" pool create tp --data "$d" --meta "$m"
check "activate 1 again" "$bin" thin activate tp 1 tp-snap-1 --size 32M
count=$((count + 1))
[ "$(head -c 4M /dev/mapper/tp-snap-1 | sha256sum | cut -d' ' -f1)" = "$(sum "$work/blob")" ] ||
        { echo "FAIL: data lost across destroy/create"; fails=$((fails + 1)); }
check "deactivate 1" "$bin" thin deactivate tp-snap-1

# A reboot: the pool and its loop devices vanish, the state file stays.
check "simulate reboot" dmsetup remove tp
expect 0 "pool tp attached" pool attach tp
expect 0 "nothing changed" pool attach tp
check "activate 1 after attach" "$bin" thin activate tp 1 tp-snap-1 --size 32M
count=$((count + 1))
[ "$(head -c 4M /dev/mapper/tp-snap-1 | sha256sum | cut -d' ' -f1)" = "$(sum "$work/blob")" ] ||
        { echo "FAIL: data lost across attach"; fails=$((fails + 1)); }

# Extend, online: thin 1 stays active and its data readable; the files and
# the pool grow; shrinking and bad sizes are refused with nothing changed.
expect 0 "pool tp extended: data 256 MiB -> 512 MiB, metadata 5 MiB -> 8 MiB" pool extend tp --data-size 512M --meta-size 8M
count=$((count + 1))
[ "$(stat -c %s "$d")" = $((512 << 20)) ] && [ "$(stat -c %s "$m")" = $((8 << 20)) ] ||
        { echo "FAIL: files not grown: $(stat -c %s "$d") $(stat -c %s "$m")"; fails=$((fails + 1)); }
status=$("$bin" pool status tp --json)
count=$((count + 1))
if [ "$(json_field data.total_blocks <<<"$status")" != 8192 ] || [ "$(json_field metadata.total_blocks <<<"$status")" != 2048 ]; then
        echo "FAIL: pool status after extend: $status"; fails=$((fails + 1))
fi
count=$((count + 1))
[ "$(head -c 4M /dev/mapper/tp-snap-1 | sha256sum | cut -d' ' -f1)" = "$(sum "$work/blob")" ] ||
        { echo "FAIL: data changed by the extend"; fails=$((fails + 1)); }
expect 1 "data cannot shrink (512 MiB recorded, 256 MiB asked for)" pool extend tp --data-size 256M
expect 1 "metadata size 17 GiB is above the maximum of 16 GiB" pool extend tp --meta-size 17G
expect 0 "nothing changed" pool extend tp
expect 0 "\"result\":\"unchanged\"" pool extend tp --json
expect 1 "no state for pool tq" pool extend tq --data-size 1G
expect 2 "--data-size must not be 0" pool extend tp --data-size 0
check "attach after extend: deactivate 1" "$bin" thin deactivate tp-snap-1
check "simulate reboot after extend" dmsetup remove tp
expect 0 "pool tp attached" pool attach tp
expect 0 "of 512 MiB used" pool status tp

# attach checks the devices: zeroed metadata (the kernel would format it) is refused.
check "simulate reboot" dmsetup remove tp
cp "$m" "$work/m.keep"
dd if=/dev/zero of="$m" bs=4096 count=1 conv=notrunc status=none
expect 1 "holds no thin-pool superblock" pool attach tp
count=$((count + 1))
[ ! -e /dev/mapper/tp ] || { echo "FAIL: attach on zeroed metadata made the pool"; fails=$((fails + 1)); }
cp "$work/m.keep" "$m"
expect 0 "pool tp attached" pool attach tp

# A pool on block devices (loop devices set up by hand): their identity is
# recorded; after a "reboot" that swapped the device names, attach refuses.
truncate -s 128M "$work/bd"; truncate -s 4M "$work/bm"
ld=$(losetup -f --show "$work/bd"); lm=$(losetup -f --show "$work/bm")
expect 0 "pool tb created" pool create tb --data "$ld" --meta "$lm"
count=$((count + 1))
grep -qE "\"id\": ?\"loop:$work/bd\"" "$THINSNAP_STATE_DIR/tb.json" ||
        { echo "FAIL: no identity recorded: $(cat "$THINSNAP_STATE_DIR/tb.json")"; fails=$((fails + 1)); }
expect 1 "less than the 256 MiB asked for: grow the device first" pool extend tb --data-size 256M
truncate -s 256M "$work/bd"; losetup -c "$ld"
expect 0 "pool tb extended: data 128 MiB -> 256 MiB" pool extend tb
check "simulate reboot (tb)" dmsetup remove tb
losetup -d "$ld" "$lm"
losetup "$ld" "$work/bm"; losetup "$lm" "$work/bd"
expect 1 "data device $ld is not the one the pool was created on (that was loop:$work/bd; this is loop:$work/bm)" pool attach tb
count=$((count + 1))
[ ! -e /dev/mapper/tb ] || { echo "FAIL: attach on swapped devices made the pool"; fails=$((fails + 1)); }
losetup -d "$ld" "$lm"
losetup "$ld" "$work/bd"; losetup "$lm" "$work/bm"
expect 0 "pool tb attached" pool attach tb
expect 0 "pool tb destroyed" pool destroy tb
check "destroy leaves block devices (here the user's loop devices) attached" losetup -d "$ld" "$lm"

# Bad input: clear errors, nothing changed.
before=$(ls -A "$work" | sort | tr '\n' ' ')
expect 1 "does not exist and no size was given" pool create tq --data "$work/nd" --meta "$work/nm"
expect 1 "directory" pool create tq --data "$work/nodir/d" --data-size 64M --meta "$work/nm"
expect 1 "smaller than one block" pool create tq --data "$work/nd" --data-size 32K --meta "$work/nm"
expect 1 "below the minimum of 2 MiB" pool create tq --data "$work/nd" --data-size 64M --meta "$work/nm" --meta-size 1M
expect 1 "exists with 512 MiB, not the 1 GiB asked for" pool create tp --data "$d" --data-size 1G --meta "$m"
expect 1 "pool tp exists with a different set-up" pool create tp --data "$work/other" --data-size 64M --meta "$work/om"
expect 1 "same path" pool create tq --data "$work/x" --data-size 64M --meta "$work/x"
expect 1 "is in use" pool create tq --data "$d" --meta "$work/nm" --meta-size 4M
after=$(ls -A "$work" | sort | tr '\n' ' ')
count=$((count + 1))
[ "$before" = "$after" ] || { echo "FAIL: bad input changed $work: '$before' -> '$after'"; fails=$((fails + 1)); }

# A metadata file holding something else is refused, not overwritten.
head -c 4M /dev/urandom > "$work/junk"
junk_sum=$(sum "$work/junk")
expect 1 "not thin-pool metadata; refusing to overwrite" pool create tq --data "$work/nd" --data-size 64M --meta "$work/junk"
count=$((count + 1))
[ "$(sum "$work/junk")" = "$junk_sum" ] && [ ! -e "$work/nd" ] || { echo "FAIL: junk metadata touched or data left"; fails=$((fails + 1)); }

# A device-mapper name that belongs to something else.
head -c 1M /dev/zero > "$work/f"
flo=$(losetup -f --show "$work/f")
check "foreign dm device" dmsetup create foreign --table "0 8 linear $flo 0"
expect 1 "named foreign exists already" pool create foreign --data "$work/nd" --data-size 64M --meta "$work/nm"
check "remove foreign" dmsetup remove foreign
losetup -d "$flo"; rm -f "$work/f"
count=$((count + 1))
[ ! -e "$work/nd" ] && [ ! -e "$work/nm" ] || { echo "FAIL: refused create left files"; fails=$((fails + 1)); }
# A mounted block device as data.
check "mkfs" mkfs.ext4 -q "$work/junk"
lo=$(losetup -f --show "$work/junk")
mkdir -p "$work/mnt" && mount "$lo" "$work/mnt"
expect 1 "data device $lo is in use" pool create tq --data "$lo" --meta "$work/nm" --meta-size 4M
umount "$work/mnt"; losetup -d "$lo"
# No permission.
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$bin" pool create tq --data /tmp/tq-d --data-size 64M --meta /tmp/tq-m 2>&1); rc=$?
count=$((count + 1))
if [ $rc -ne 1 ] || ! grep -qiE "needs root|Permission denied|Operation not permitted" <<<"$out"; then
        echo "FAIL: unprivileged create -> $rc: $out"; fails=$((fails + 1))
fi
[ ! -e /tmp/tq-d ] || { echo "FAIL: unprivileged create left a file"; fails=$((fails + 1)); }

expect 0 "pool tp destroyed; files deleted" pool destroy tp --force --delete-files
count=$((count + 1))
[ ! -e "$d" ] && [ ! -e "$m" ] && [ ! -e "$THINSNAP_STATE_DIR/tp.json" ] || { echo "FAIL: files left after --delete-files"; fails=$((fails + 1)); }
expect 1 "no pool named tp" pool destroy tp
rm -rf "$work"
echo "vm-pool-cli: $((count - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
