#!/usr/bin/env bash
# thinsnapd in the VM lane: a pool, the daemon, an independent gRPC client
# (python3-grpcio) for semantics and bad inputs, then a graceful SIGTERM.
set -u
bindir=${1:?usage: vm-service.sh BUILD_DIR SOURCE_DIR}
src=${2:?}
work=$(mktemp -d /tmp/tssvc-XXXXXX)
export THINSNAP_STATE_DIR=$work/state
"$bindir/cli/thinsnap" pool create svc --data "$work/data" --data-size 2G --meta "$work/meta" >/dev/null || exit 1
"$bindir/plugin/thinsnapd" --root "$work/root" --pool svc --address "$work/ts.sock" --base-size 64M \
        --log-level info 2>"$work/daemon.log" &
pid=$!
rc=0
/usr/bin/python3 "$src/tests/vm/service/snapshots_client.py" "$work/ts.sock" "$src/proto" || rc=1
kill -TERM $pid
for i in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then echo "FAIL: thinsnapd did not stop on SIGTERM"; kill -9 $pid; rc=1; fi
wait $pid; st=$?
[ $st -eq 0 ] || { echo "FAIL: thinsnapd exited $st after SIGTERM"; rc=1; }
grep -q 'msg="stopped"' "$work/daemon.log" || { echo "FAIL: no graceful stop in the log"; rc=1; }
[ ! -e "$work/ts.sock" ] || { echo "FAIL: socket left behind"; rc=1; }
if [ $rc -ne 0 ]; then echo "--- thinsnapd log"; cat "$work/daemon.log"; fi
"$bindir/cli/thinsnap" pool destroy svc --force --delete-files >/dev/null
rm -rf "$work"
exit $rc
