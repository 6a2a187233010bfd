#!/usr/bin/env bash
# Runs on the host: checks that tests/vm/run reports exactly what happened in the guest
# (exit statuses, arguments that need quoting, output, timeouts, usage errors).
#   check-status.sh RUNNER CACHE_DIR
set -uo pipefail

runner=$1
cache=$2
fails=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# expect WANT_STATUS OUTPUT_REGEX RUNNER_ARGS...: runs the runner, checks status and output.
expect() {
  local want=$1 regex=$2 got
  shift 2
  "$runner" --cache "$cache" "$@" >"$out" 2>&1
  got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL run $*: status $got, expected $want; output:"
    sed 's/^/  | /' "$out"
    fails=$((fails + 1))
  elif [ -n "$regex" ] && ! grep -Eq -- "$regex" "$out"; then
    echo "FAIL run $*: output does not match /$regex/; output:"
    sed 's/^/  | /' "$out"
    fails=$((fails + 1))
  else
    echo "ok   run $* -> $got"
  fi
}

# Usage errors are caught before any guest boots.
expect 2 "no command given" --
expect 2 "unknown option" --bogus -- true
expect 2 "is not a whole number" --timeout 0 -- true

# The command's own status, with arguments that need quoting, comes back exactly.
expect 42 "^args=\\[\\]\\[x y\\]\\[\\\$HOME\\]\\[a'b\\]\\[\\*\\]\$" -- \
  bash -c 'printf "args="; printf "[%s]" "$@"; echo; exit 42' _ "" "x y" '$HOME' "a'b" '*'
# A command that cannot be found gives the shell's 127.
expect 127 "" -- /nonexistent/ts-vm-command
# A guest that outlives the timeout is killed: 124. (The timeout counts boot too, which can
# take long on a loaded machine, so whether the command started is not checked here.)
expect 124 "TIMEOUT: the guest was killed after 8s" --timeout 8 -- sleep 600

if [ "$fails" -ne 0 ]; then
  echo "check-status: $fails check(s) failed"
  exit 1
fi
echo "check-status: all checks passed"
