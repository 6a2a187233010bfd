#!/usr/bin/env bash
# Filter conformance: thinsnap's parser against containerd's own Go filters
# package, on every seed of the filter fuzz target. Usage: run.sh FILTER_DIFF SEEDS_DIR
# Exits 77 (skipped) when Go or containerd's Go source is not installed.
set -euo pipefail
diff_bin=$1
seeds=$2
here=$(cd "$(dirname "$0")" && pwd)
gocode=/usr/share/gocode
if ! command -v go >/dev/null || [ ! -d "$gocode/src/github.com/containerd/containerd/filters" ]; then
        echo "go or containerd's Go source missing: skipped"
        exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/filtergo" "$work/cache"
cp "$here/main.go" "$work/src/filtergo/"
(cd "$work" && GO111MODULE=off GOPATH="$work:$gocode" GOCACHE="$work/cache" \
        go build -o "$work/filter-go" filtergo)
cd "$seeds"
ls | sort > "$work/list"
xargs "$work/filter-go" < "$work/list" > "$work/go.all"
xargs "$diff_bin" < "$work/list" > "$work/c.all"
# inputs over thinsnap's bounds (TS_FILTER_MAX_*) are refused by design: not compared
limited=$(grep -c ' LIMIT$' "$work/c.all" || true)
awk 'NR == FNR { if ($2 == "LIMIT") skip[$1] = 1; next } !skip[$1]' "$work/c.all" "$work/go.all" > "$work/go.out"
grep -v ' LIMIT$' "$work/c.all" > "$work/c.out" || true
total=$(wc -l < "$work/list")
compared=$(grep -vc ' SKIP$' "$work/go.out" || true)
if ! diff -u "$work/go.out" "$work/c.out" > "$work/diff"; then
        head -40 "$work/diff"
        failed=$(grep -c '^+[^+]' "$work/diff" || true)
        echo "$((compared - failed)) passed, $failed failed"
        exit 1
fi
echo "filter conformance: $compared of $total inputs give the same error or matches as containerd ($limited over thinsnap's limits)"
echo "$compared passed, 0 failed"
