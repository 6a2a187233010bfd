#!/usr/bin/env bash
# Builds the Go programs of the snapshotter harness on the host, in GOPATH mode
# against Debian's containerd source (golang-github-containerd-containerd-dev):
#   OUTDIR/conformance.test    containerd's snapshotter suite (tests/vm/conformance)
#   OUTDIR/snapshotter-bench   the snapshotter benchmark (bench/snapshotter)
#   OUTDIR/ctrd-peer           the Go side of the containerd client benchmark (bench/ctrd)
# Usage: tests/vm/conformance/go-build.sh OUTDIR
# The GOPATH and GOCACHE live under OUTDIR: the guest can only run the results.
set -euo pipefail
out=${1:?usage: go-build.sh OUTDIR}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
command -v go >/dev/null || { echo "go-build: 'go' not found (apt-get install golang-go)" >&2; exit 1; }
[ -d /usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite ] ||
  { echo "go-build: containerd's Go source not found (apt-get install golang-github-containerd-containerd-dev)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
gopath=$out/gopath
mkdir -p "$gopath/src"
# Our packages under one import root; Debian ships gotest.tools v3 without its
# /v3 directory, which GOPATH mode needs to resolve "gotest.tools/v3/...".
ln -sfn "$top" "$gopath/src/thinsnap.local"
mkdir -p "$gopath/src/gotest.tools"
[ -e /usr/share/gocode/src/gotest.tools/v3 ] || ln -sfn /usr/share/gocode/src/gotest.tools "$gopath/src/gotest.tools/v3"
export GO111MODULE=off GOPATH=$gopath:/usr/share/gocode GOCACHE=$out/gocache GOFLAGS= CGO_ENABLED=1
# Build to a new name and rename: a guest may be running the old binary.
go test -c -o "$out/.conformance.test.new" thinsnap.local/tests/vm/conformance
mv -f "$out/.conformance.test.new" "$out/conformance.test"
go build -o "$out/.snapshotter-bench.new" thinsnap.local/bench/snapshotter
mv -f "$out/.snapshotter-bench.new" "$out/snapshotter-bench"
go build -o "$out/.ctrd-peer.new" thinsnap.local/bench/ctrd
mv -f "$out/.ctrd-peer.new" "$out/ctrd-peer"
