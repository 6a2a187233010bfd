#!/usr/bin/env bash
# The containerd client benchmark, on the host (root): one containerd of its own under a
# temporary directory, a blob of SIZE MiB of fresh random bytes written into its content
# store and read back whole, RUNS times each by ctrd/ (bench/ctrd-bench.c) and by
# containerd's Go client (bench/ctrd, content.WriteBlob/ReadBlob), alternating; prints a
# markdown table of p50/p90 with the ratio ctrd/Go.
#
#   bench/run-ctrd-bench.sh [--build DIR] [--containerd BIN] [--size MIB] [--runs N]
#
# DIR defaults to build/release (configured and built here; no sanitizers), BIN to the
# system's containerd (tests/lib/fetch-containerd prints others).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$top/build/release containerd=/usr/bin/containerd size=32 runs=10
usage() { echo "usage: $0 [--build DIR] [--containerd BIN] [--size MIB] [--runs N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?}; shift 2 ;;
    --containerd) containerd=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ $size =~ ^[1-9][0-9]{0,3}$ && $runs =~ ^[1-9][0-9]{0,3}$ ]] || usage
case $build in /*) ;; *) build=$top/$build ;; esac

cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTS_VM_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target ctrd-bench >/dev/null
"$top/tests/vm/conformance/go-build.sh" "$build/go"

work=$(mktemp -d /tmp/ctrd-bench.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
version=$("$containerd" --version | awk '{ print $3 }')
cfgver=2
case $version in v2.*|2.*) cfgver=3 ;; esac
cat >"$work/config.toml" <<EOF
version = $cfgver
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "$work/c.sock"
[ttrpc]
  address = "$work/c.sock.ttrpc"
EOF
"$containerd" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$work/c.sock" ] && break; sleep 0.05; done
[ -S "$work/c.sock" ] || { cat "$work/containerd.log" >&2; echo "containerd did not start" >&2; exit 1; }

for _ in $(seq "$runs"); do
  "$build/bench/ctrd-bench" "$work/c.sock" "$size" 1 | sed 's/^/ctrd /'
  "$build/go/ctrd-peer" "$work/c.sock" "$size" 1 | sed 's/^/go /'
done >"$work/samples"

echo "ctrd-bench: $size MiB blob, $runs runs each, containerd $version, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
echo
python3 - "$work/samples" "$size" <<'EOF'
import sys
samples, size = {}, int(sys.argv[2])
for line in open(sys.argv[1]):
    who, op, ms = line.split()
    samples.setdefault((who, op), []).append(float(ms))
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print("| operation | ctrd p50 | ctrd p90 | Go client p50 | Go client p90 | ctrd/Go (p50) |")
print("|---|---|---|---|---|---|")
for op, name in (("write", "write (open, data, commit)"), ("read", "read whole")):
    c, g = samples[("ctrd", op)], samples[("go", op)]
    print(f"| {name} | {pct(c, 50):.1f} ms ({size / pct(c, 50) * 1000:.0f} MiB/s) | {pct(c, 90):.1f} ms "
          f"| {pct(g, 50):.1f} ms ({size / pct(g, 50) * 1000:.0f} MiB/s) | {pct(g, 90):.1f} ms "
          f"| {pct(c, 50) / pct(g, 50):.2f}x |")
EOF
