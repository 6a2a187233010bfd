#!/usr/bin/env bash
# Crash safety, in the VM lane: thinsnapd is killed (SIGKILL, by its own
# fault-injection switch THINSNAPD_FAULT) between every two steps of
# Prepare, Commit and Remove; after a restart the interrupted operation is
# rolled back or completed, no thin device is left without a record and no
# record without its device, and the same operation then succeeds.
set -u
bindir=${1:?usage: vm-crash.sh BUILD_DIR SOURCE_DIR}
src=${2:?}
work=$(mktemp -d /tmp/tscrash-XXXXXX)
export THINSNAP_STATE_DIR=$work/state
pool=crash
export TS_PROTO_GEN=$work/gen
mkdir -p "$TS_PROTO_GEN"
/usr/bin/python3 -m grpc_tools.protoc -I"$src/proto" --python_out="$TS_PROTO_GEN" \
        "$src/proto/containerd/types/mount.proto" "$src/proto/containerd/services/snapshots/v1/snapshots.proto" || exit 1
ctl() { /usr/bin/python3 "$src/tests/service/snapctl.py" "$work/ts.sock" "$src/proto" "$@" 2>/dev/null; }
fails=0; count=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
start() { # start [FAULT]
        rm -f "$work/ts.sock"
        THINSNAPD_FAULT=${1:-} "$bindir/plugin/thinsnapd" --root "$work/root" --pool $pool \
                --address "$work/ts.sock" --base-size 64M 2>>"$work/daemon.log" &
        pid=$!
        for i in $(seq 1 300); do [ -S "$work/ts.sock" ] && return 0; kill -0 $pid 2>/dev/null || break; sleep 0.1; done
        fail "thinsnapd did not start"; cat "$work/daemon.log"; exit 1
}
stop() { kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; }
# The thin ids that exist in the pool, probed with create_thin (EEXIST = exists).
pool_ids() {
        local ids=""
        for id in $(seq 1 10); do
                if dmsetup message $pool 0 "create_thin $id" 2>/dev/null; then
                        dmsetup message $pool 0 "delete $id"
                else
                        ids="$ids $id"
                fi
        done
        echo $ids
}
active_devs() { ls /dev/mapper | grep "^$pool-snap-" | sort | tr '\n' ' ' | sed 's/ $//'; }
expect_eq() { count=$((count + 1)); [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }

"$bindir/provision/thinsnap" pool create $pool --data "$work/data" --data-size 2G --meta "$work/meta" >/dev/null || exit 1
start
ctl prepare p >/dev/null && ctl commit P p || { fail "set-up"; exit 1; }
stop
# base = 1, P = 2; every scenario starts from exactly that.
base_ids=$(pool_ids)
expect_eq "ids at start" "$base_ids" "1 2"

for point in prepare:after-record prepare:after-snap prepare:after-activate; do
        start "$point"
        ctl prepare x P >/dev/null
        wait $pid 2>/dev/null
        start
        expect_eq "$point: stat after restart" "$(ctl stat x)" "NOT_FOUND"
        expect_eq "$point: pool ids" "$(pool_ids)" "1 2"
        expect_eq "$point: active devices" "$(active_devs)" ""
        ctl prepare x P >/dev/null || fail "$point: prepare again"
        expect_eq "$point: active after retry" "$(ctl stat x)" "ACTIVE"
        ctl remove x || fail "$point: remove"
        stop
done

start
dev=$(ctl prepare x P)
id=${dev##*-snap-}
stop
start commit:after-deactivate
ctl commit X x >/dev/null
wait $pid 2>/dev/null
start
expect_eq "commit crash: still active" "$(ctl stat x)" "ACTIVE"
expect_eq "commit crash: device back" "$(active_devs)" "$pool-snap-$id"
ctl commit X x || fail "commit crash: commit again"
expect_eq "commit crash: committed" "$(ctl stat X)" "COMMITTED"
expect_eq "commit crash: ids" "$(pool_ids)" "1 2 $id"
ctl remove X || fail "commit crash: remove"
stop

for point in remove:after-mark remove:after-deactivate remove:after-delete; do
        start
        ctl prepare y P >/dev/null
        stop
        start "$point"
        ctl remove y >/dev/null
        wait $pid 2>/dev/null
        start
        expect_eq "$point: gone after restart" "$(ctl stat y)" "NOT_FOUND"
        expect_eq "$point: pool ids" "$(pool_ids)" "1 2"
        expect_eq "$point: active devices" "$(active_devs)" ""
        stop
done

# A pool that needs_check is refused at start with a clear message.
"$bindir/plugin/thinsnapd" --root "$work/root" --pool nosuchpool --address "$work/x.sock" 2>"$work/err.log"
rc=$?
count=$((count + 1))
[ $rc -eq 1 ] && grep -q "pool nosuchpool does not exist" "$work/err.log" || fail "missing pool: rc=$rc $(cat "$work/err.log")"

if [ $fails -ne 0 ]; then echo "--- thinsnapd log"; cat "$work/daemon.log"; fi
"$bindir/provision/thinsnap" pool destroy $pool --force --delete-files >/dev/null
rm -rf "$work"
echo "vm-crash: $((count - fails)) passed, $fails failed"
[ $fails -eq 0 ]
