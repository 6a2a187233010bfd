#!/usr/bin/env bash
# Argument handling of the thinsnap CLI: every bad command line exits 2 with
# a message naming what was wrong, and touches nothing (the state directory
# stays empty). Needs no device-mapper.
set -u
bin=${1:?usage: cli-args.sh THINSNAP}
state=$(mktemp -d)
export THINSNAP_STATE_DIR=$state/pools
fails=0; count=0

expect() { # expect CODE NEEDLE ARGS...
        local code=$1 needle=$2; shift 2
        local out rc
        out=$("$bin" "$@" 2>&1); rc=$?
        count=$((count + 1))
        if [ "$rc" -ne "$code" ] || ! grep -qF -- "$needle" <<<"$out"; then
                echo "FAIL: thinsnap $* -> exit $rc (want $code), output: $out (want '$needle')"
                fails=$((fails + 1))
        fi
}

expect 2 "Usage: thinsnap"
expect 0 "Usage: thinsnap" --help
expect 0 "thinsnap 0." --version
expect 2 "unknown command 'frob'" frob
expect 2 "unknown option '--bogus'" --bogus
expect 2 "--log-level 'loud'" --log-level loud pool status tp
expect 2 "Usage: thinsnap pool" pool
expect 0 "Usage: thinsnap pool" pool --help
expect 0 "create NAME --data FILE|DEV" pool create --help
expect 2 "unknown command 'grow'" pool grow tp
expect 2 "needs a pool NAME" pool status
expect 2 "unexpected argument 'extra'" pool status tp extra
expect 2 "pool name 'a/b'" pool status a/b
expect 2 "create needs --data" pool create tp --meta /tmp/m
expect 2 "create needs --meta" pool create tp --data /tmp/d
expect 2 "--data-size '12Q' is not a size" pool create tp --data /tmp/d --data-size 12Q --meta /tmp/m
expect 2 "--data-size must not be 0" pool create tp --data /tmp/d --data-size 0 --meta /tmp/m
expect 2 "--meta-size '-4M' is not a size" pool create tp --data /tmp/d --meta /tmp/m --meta-size -4M
expect 2 "--block-size '100K' must be a multiple" pool create tp --data /tmp/d --meta /tmp/m --block-size 100K
expect 2 "--block-size '2G' must be a multiple" pool create tp --data /tmp/d --meta /tmp/m --block-size 2G
expect 2 "--low-water 'x'" pool create tp --data /tmp/d --meta /tmp/m --low-water x
expect 2 "--data needs a value" pool create tp --data
expect 2 "unknown option '--force'" pool create tp --data /tmp/d --meta /tmp/m --force
expect 2 "ID 'x' is not a whole number" thin create tp x
expect 2 "ID '16777216' is not a whole number from 0 to 16777215" thin create tp 16777216
expect 2 "expects 3 arguments, got 2" thin activate tp 1
expect 2 "--size is needed" thin activate tp 1 name
expect 2 "--size is needed" thin activate tp 1 name --size 1000
expect 2 "unknown command 'grow'" thin grow
# thinsnap image and vm: clients of thinsnapd's provisioner
export THINSNAP_ADDRESS=$state/no-provisioner.sock
expect 2 "Usage: thinsnap image" image
expect 0 "pull REF [--platform" image --help
expect 2 "unknown command 'frob'" image frob
expect 2 "expected one REF" image pull
expect 2 "unexpected argument 'b'" image pull a b
expect 2 "image ls takes no --platform" image ls --platform linux/amd64
expect 2 "--password-stdin goes with --user USER" image pull alpine --password-stdin
expect 2 "expected one IMAGE" image inspect
expect 2 "expected one IMAGE or more" image rm
expect 2 "Usage: thinsnap vm" vm
expect 0 "snapshot VM_ID IMAGE" vm --help
expect 2 "expected VM_ID IMAGE" vm snapshot vm1
expect 2 "--owner 'x' is not UID:GID" vm snapshot vm1 alpine --owner x
expect 2 "--mode goes with --owner" vm snapshot vm1 alpine --mode 0600
expect 2 "GUEST_PATH 'rel' must be absolute" vm inject vm1 /etc/hostname rel
expect 2 "this would tear down every VM" vm gc
expect 2 "--all and --keep exclude each other" vm gc --all --keep a
expect 2 "vm ls takes no --keep" vm ls --keep a
expect 1 "no provisioner at $THINSNAP_ADDRESS" vm ls
expect 1 "\"errno\":\"ENOENT\"" image ls --json
expect 1 "no provisioner at /nowhere.sock" image ls --address /nowhere.sock
unset THINSNAP_ADDRESS
if [ ! -e /dev/mapper/control ]; then
        # On a kernel without device-mapper the operations say so and exit 1.
        expect 1 "device-mapper is not available" pool status tp
        expect 1 "device-mapper is not available" pool create tp --data "$state/d" --data-size 64M --meta "$state/m"
        expect 1 "\"errno\":\"ENODEV\"" pool status tp --json
        # ... and leave the host as it was (libdevmapper makes /dev/mapper/control when asked
        # for the kernel's version, and the node would then pass for device-mapper).
        if [ -e /dev/mapper/control ]; then
                echo "FAIL: /dev/mapper/control was made on a kernel without device-mapper"
                fails=$((fails + 1))
        fi
fi
# Nothing above may have written anything.
if [ -n "$(ls -A "$state")" ]; then
        echo "FAIL: bad command lines left files behind: $(ls -A "$state")"
        fails=$((fails + 1))
fi
rm -rf "$state"
echo "cli-args: $((count - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
