#!/usr/bin/env bash
# run.sh SUITE CACHE TEST-BINARY: runs the ctrd suite against the system's containerd
# (SUITE "system") or the one of a Debian suite (tests/lib/fetch-containerd).
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: run.sh system|SUITE CACHE TEST-BINARY" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$1" = system ]; then
  bin=/usr/bin/containerd
else
  bin=$("$here/../../lib/fetch-containerd" --cache "$2" "$1")
fi
TS_CONTAINERD=$bin exec "$3"
