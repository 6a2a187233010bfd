#!/usr/bin/env bash
# Runs containerd's snapshotter conformance suite in the VM lane.
#
#   tests/vm/conformance/run.sh [--peer devmapper] [--build DIR] [--timeout S] [-- GO-TEST-ARGS...]
#
# Default: against thinsnapd (through containerd's proxy client), a fresh pool
# and daemon per case. --peer devmapper: against containerd's Go devmapper
# snapshotter in-process instead (long: 15+ min under TCG; kept out of ctest).
# Builds thinsnap (and thinsnapd when the target exists) in DIR (default
# build/release) and the Go test binary on the host in DIR/go, then runs the
# binary as root inside the guest. Extra args go to the test binary, e.g.
# -- -test.run 'TestSnapshotterConformance/Basic'.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$top"
peer=thinsnapd build=build/release timeout=
while [ $# -gt 0 ]; do
  case $1 in
    --peer) peer=${2:?--peer needs a value}; shift 2 ;;
    --build) build=${2:?--build needs a value}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--peer devmapper] [--build DIR] [--timeout S] [-- GO-TEST-ARGS...]" >&2; exit 2 ;;
  esac
done
case $peer in thinsnapd|devmapper) ;; *) echo "run.sh: --peer '$peer': want devmapper (or thinsnapd)" >&2; exit 2 ;; esac
case $build in /*) ;; *) build=$top/$build ;; esac
# The Go devmapper snapshotter starts dmsetup processes for every step; under
# TCG its 128LayersMount case alone takes well over ten minutes.
[ -n "$timeout" ] || { [ "$peer" = devmapper ] && timeout=3600 || timeout=1500; }

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=(thinsnap)
cmake --build "$build" --target help > "$build/targets.txt"
if grep -qw thinsnapd "$build/targets.txt"; then targets+=(thinsnapd); fi
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null
thinsnap=${TS_THINSNAP:-$build/cli/thinsnap}
thinsnapd=${TS_THINSNAPD:-$(find "$build" -type f -name thinsnapd -perm -u+x 2>/dev/null | head -n1)}
if [ "$peer" = thinsnapd ] && [ -z "$thinsnapd" ]; then
  echo "run.sh: no thinsnapd binary in $build (target not built yet?); try --peer devmapper" >&2
  exit 1
fi
tests/vm/conformance/go-build.sh "$build/go"

exec tests/vm/run --cache "${TS_VM_CACHE:-$build/vm-cache}" --timeout "$timeout" -- \
  "$build/go/conformance.test" -test.root -test.v -test.timeout "$((timeout - 60))s" \
  -ts.snapshotter "$peer" -ts.thinsnap "$thinsnap" ${thinsnapd:+-ts.thinsnapd "$thinsnapd"} "$@"
