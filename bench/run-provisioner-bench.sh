#!/usr/bin/env bash
# Builds the provisioner benchmark on the host and runs it in one VM-lane guest: a VM
# manager's flow (warm an image from a local registry, a lease and a Prepare per VM, teardown)
# written with containerd's Go client, on containerd's Go devmapper snapshotter and on
# thinsnapd, then prints markdown tables with the ratios (bench/provisioner/README.md).
#   bench/run-provisioner-bench.sh [--build DIR] [--timeout S] [--out DIR] [-- GUEST-ARGS...]
# GUEST-ARGS go to bench/provisioner/in-guest.sh (--vms N, --warms N, --rounds N,
# --devmapper-rounds N, --base-size SIZE, --flows LIST, --vm-spares N). The samples of each flow stay in
# OUT/flows/*.json (default DIR/provisioner-bench), the guest's CPU in the concurrent rounds in
# OUT/flows/cpu.jsonl; bench/provisioner-table.py prints the tables from them again.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
build=build/release timeout=7200 out=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?--build needs a value}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--build DIR] [--timeout S] [--out DIR] [-- GUEST-ARGS...]" >&2; exit 2 ;;
  esac
done
case $build in /*) ;; *) build=$top/$build ;; esac
out=${out:-$build/provisioner-bench}
case $out in /*) ;; *) out=$top/$out ;; esac

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
# prov-flow is the thinsnap provisioner's own flow (the third column), where it exists.
targets=(thinsnap thinsnapd)
cmake --build "$build" --target help >"$build/targets.txt"
if grep -qw prov-flow "$build/targets.txt"; then targets+=(prov-flow); fi
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null
thinsnap=$build/cli/thinsnap
thinsnapd=$build/plugin/thinsnapd
thinsnap_flow=()
[ ! -x "$build/bench/prov-flow" ] || thinsnap_flow=(--thinsnap-flow "$build/bench/prov-flow")
tests/vm/conformance/go-build.sh "$build/go" provisioner-bench

# The guest sees the host's / read-only, except its own /tmp: everything it reads lives
# under $out, and what it writes goes to the results share, kept and copied back. The image
# is pushed here (skopeo takes minutes under TCG); the guest serves a copy of the storage.
rm -rf "$out/flows" "$out/vm" "$out/registry"
mkdir -p "$out/vm" "$out/flows"
/usr/bin/python3 tests/lib/build-image build "$out/image" --layers 3 \
  --name 127.0.0.1:5000/bench/img:v1 >/dev/null
# Four more images of the same form (other seeds: other layers), which the thinsnap flow
# warms too, so thinsnapd's memory is measured with 50 VMs and 5 images. Every flow pulls the
# first and deletes it again before its timed warms (--prewarm), so that no first warm pays
# for its client's code being paged in over the guest's 9p root for the first time.
extra=(--prewarm 127.0.0.1:5000/bench/small1:v1)
for i in 1 2 3 4; do
  /usr/bin/python3 tests/lib/build-image build "$out/small$i" --layers 3 --seed $((i + 1)) \
    --name "127.0.0.1:5000/bench/small$i:v1" >/dev/null
  extra+=(--also-warm "127.0.0.1:5000/bench/small$i:v1")
done
registry=(/usr/bin/python3 tests/lib/registry.py)
"${registry[@]}" start "$out/registry" >/dev/null
trap '"${registry[@]}" stop "$out/registry"' EXIT
"${registry[@]}" push "$out/registry" "$out/image/image.tar" bench/img:v1
for i in 1 2 3 4; do
  "${registry[@]}" push "$out/registry" "$out/small$i/image.tar" "bench/small$i:v1"
done
"${registry[@]}" stop "$out/registry"
trap - EXIT

cache=${TS_VM_CACHE:-$(sed -n 's/^TS_VM_CACHE:[A-Z]*=//p' "$build/CMakeCache.txt")}
status=0
TMPDIR=$out/vm tests/vm/run --keep --cache "${cache:-$build/vm-cache}" --timeout "$timeout" -- \
  "$top/bench/provisioner/in-guest.sh" --registry "$out/registry" --go-flow "$build/go/provisioner-bench" \
  --thinsnap "$thinsnap" --thinsnapd "$thinsnapd" --out /run/ts-vm/flows "${thinsnap_flow[@]}" \
  "${extra[@]}" "$@" || status=$?
for d in "$out"/vm/ts-vm.*; do
  cp "$d"/flows/*.json "$d"/flows/cpu.jsonl "$out/flows/" 2>/dev/null || true
done
rm -rf "$out/vm"
flows=()
for f in go-devmapper go-thinsnapd thinsnap; do
  [ -f "$out/flows/$f.json" ] && flows+=("$out/flows/$f.json")
done
if [ ${#flows[@]} -eq 0 ]; then
  echo "run-provisioner-bench: no flow wrote its samples (guest status $status)" >&2
  exit 1
fi
echo
cpu=()
[ ! -f "$out/flows/cpu.jsonl" ] || cpu=(--cpu "$out/flows/cpu.jsonl")
/usr/bin/python3 bench/provisioner-table.py "${cpu[@]}" "${flows[@]}" || status=1
exit "$status"
