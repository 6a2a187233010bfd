#!/usr/bin/env bash
# Builds the snapshotter benchmark on the host and runs it in the VM lane:
# containerd's Go devmapper snapshotter (in-process) and thinsnapd (through
# containerd's proxy client), same workload, same guest; prints markdown tables.
#   bench/run-snapshotter-bench.sh [--build DIR] [--timeout S] [-- BENCH-ARGS...]
# BENCH-ARGS go to snapshotter-bench (e.g. -only devmapper, -vms 40,
# -rss-snapshots 1000; see bench/snapshotter/main.go). Without a thinsnapd
# binary in DIR the thinsnapd side is skipped with a message.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
build=build/release timeout=3000
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?--build needs a value}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--build DIR] [--timeout S] [-- BENCH-ARGS...]" >&2; exit 2 ;;
  esac
done
case $build in /*) ;; *) build=$top/$build ;; esac

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=(thinsnap)
cmake --build "$build" --target help > "$build/targets.txt"
if grep -qw thinsnapd "$build/targets.txt"; then targets+=(thinsnapd); fi
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null
thinsnap=${TS_THINSNAP:-$build/cli/thinsnap}
thinsnapd=${TS_THINSNAPD:-$(find "$build" -type f -name thinsnapd -perm -u+x 2>/dev/null | head -n1)}
[ -n "$thinsnapd" ] || echo "run-snapshotter-bench: no thinsnapd binary in $build: its side will be skipped" >&2
tests/vm/conformance/go-build.sh "$build/go"

exec tests/vm/run --cache "${TS_VM_CACHE:-$build/vm-cache}" --timeout "$timeout" -- \
  "$build/go/snapshotter-bench" -thinsnap "$thinsnap" ${thinsnapd:+-thinsnapd "$thinsnapd"} "$@"
