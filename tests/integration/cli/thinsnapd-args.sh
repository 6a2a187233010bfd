#!/usr/bin/env bash
# thinsnapd's command line: bad input exits 2 naming what was wrong.
set -u
bin=${1:?usage: thinsnapd-args.sh THINSNAPD}
fails=0; count=0
tmp=$(mktemp -d)
expect() { # expect CODE NEEDLE ARGS...
        local code=$1 needle=$2; shift 2
        local out rc
        out=$("$bin" "$@" 2>&1); rc=$?
        count=$((count + 1))
        if [ "$rc" -ne "$code" ] || ! grep -qF -- "$needle" <<<"$out"; then
                echo "FAIL: thinsnapd $* -> exit $rc (want $code): $out (want '$needle')"
                fails=$((fails + 1))
        fi
}
expect 0 "Usage: thinsnapd --root DIR --pool NAME --address SOCKET" --help
expect 0 "thinsnapd 0." --version
expect 2 "--root is required" --pool tp --address /tmp/x.sock
expect 2 "--pool is required" --root /tmp/r --address /tmp/x.sock
expect 2 "--address is required" --root /tmp/r --pool tp
expect 2 "--base-size '12Q' is not a size" --root /tmp/r --pool tp --address /tmp/x --base-size 12Q
expect 2 "--base-size '0' is not a size" --root /tmp/r --pool tp --address /tmp/x --base-size 0
expect 2 "--socket-mode '999'" --root /tmp/r --pool tp --address /tmp/x --socket-mode 999
expect 2 "--log-level 'loud'" --log-level loud
expect 2 "unknown option '--bogus'" --bogus
expect 2 "unexpected argument 'extra'" --root /tmp/r extra
expect 2 "--root needs a value" --root
expect 0 "--max-connections N" --help
expect 2 "--max-connections: '0' is not a count above 0" --max-connections 0
expect 2 "--send-timeout: '10' is not a duration" --send-timeout 10
expect 2 "--max-header-list-size: 'lots' is not a size" --max-header-list-size lots
expect 2 "--connection-window must be at least" --root /tmp/r --pool tp --address /tmp/x --connection-window 1M
printf 'max_connections = 16\nidle_timeout = 5\n' > "$tmp/rpc.toml"
expect 2 "config line 2: idle_timeout: must be a duration string" --config "$tmp/rpc.toml"
expect 2 "--max-warms '0' is not a number from 1 to 64" --root /tmp/r --max-warms 0
expect 0 "--provisioner-address SOCKET" --help
expect 0 "--max-label-bytes SIZE" --help
expect 2 "--max-labels '0' is not a number from 1 to 1048576" --max-labels 0
expect 2 "--max-label-bytes '8M' is not a size from 4K to 4M" --max-label-bytes 8M
printf 'max_label_bytes = 100\n' > "$tmp/labels.toml"
expect 2 "config line 1: max_label_bytes: must be a size from 4K to 4M" --config "$tmp/labels.toml"
printf 'max_warms = 100\n' > "$tmp/warms.toml"
expect 2 "config line 1: max_warms: must be a number from 1 to 64" --config "$tmp/warms.toml"
printf 'provisioner = "yes"\n' > "$tmp/prov.toml"
expect 2 "config line 1: provisioner: must be true or false" --config "$tmp/prov.toml"
printf 'pool = "tp"\nbogus = 1\n' > "$tmp/bad.toml"
expect 2 "config line 2: bogus: unknown setting" --config "$tmp/bad.toml"
expect 2 "No such file or directory" --config "$tmp/missing.toml"
if [ ! -e /dev/mapper/control ]; then
        expect 1 "device-mapper is not available" --root "$tmp/r" --pool tp --address "$tmp/x.sock"
        [ ! -e "$tmp/x.sock" ] || { echo "FAIL: socket created on failure"; fails=$((fails + 1)); }
fi
rm -rf "$tmp"
echo "thinsnapd-args: $((count - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
