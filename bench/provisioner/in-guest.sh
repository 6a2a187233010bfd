#!/usr/bin/env bash
# The provisioner benchmark's guest side (VM lane, as root); bench/run-provisioner-bench.sh
# builds everything on the host and runs this in one guest:
#
#   in-guest.sh --registry DIR --go-flow BIN --thinsnap CLI --thinsnapd DAEMON --out DIR
#               [--vms N] [--warms N] [--rounds N] [--devmapper-rounds N] [--base-size SIZE]
#               [--thinsnap-flow CMD]
#               [--also-warm REF]... [--prewarm REF] [--flows go,thinsnap] [--vm-spares N]
#
# DIR is a registry's storage (`tests/lib/registry.py start DIR`) into which the image was
# pushed as bench/img:v1 on the host (skopeo takes minutes under TCG). Serves a copy of it
# with Debian's docker-registry on 127.0.0.1:5000 (tests/lib/registry.py), then runs each flow on a fresh thin pool (`thinsnap pool create`) and a fresh containerd 1.6
# of its own, all pulling the same image from the same registry (the Go flows side by side):
#   go-devmapper  containerd's Go client, containerd's built-in devmapper snapshotter;
#   go-thinsnapd  containerd's Go client, thinsnapd as containerd's proxy plugin `thinsnap`;
#   thinsnap      the thinsnap provisioner's own API (setup_thinsnap below: the third column);
# the concurrent rounds of the Go flows and of the thinsnap flow take turns (run_in_turns).
# --also-warm REF: another image in the same registry that the thinsnap flow warms (untimed)
# before its VMs, so thinsnapd's memory is sampled with several images; --prewarm REF: an image
# every flow pulls and deletes, untimed, before its first warm (no first warm then pays for
# client code paged in over 9p for the first time); --flows: which flows
# run (go: both Go flows, go-thinsnapd: the Go flow on thinsnapd alone, thinsnap: the third;
# default go,thinsnap); --rounds: concurrent rounds (default 15; a burst's spread moves a lot
# from one to the next), of which go-devmapper runs the first --devmapper-rounds (default 3);
# --vm-spares: the thinsnap flow's thinsnapd keeps this many spares of the image (default: as
# many as VMs in a round, as a VM manager starting such bursts would; 0: none).
# Each flow writes OUT/<flow>.json (bench/provisioner/README.md); a flow that is not run writes
# {"flow": ..., "skipped": reason}.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() {
        sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
}

registry_src= go_flow= thinsnap= thinsnapd= out= thinsnap_flow= also=() prewarm=() flows=go,thinsnap
vms=50 warms=3 rounds=15 dm_rounds=3 base_size=128M vm_spares=
while [ $# -gt 0 ]; do
        case $1 in
        --registry) registry_src=${2:-}; shift 2 || usage ;;
        --go-flow) go_flow=${2:-}; shift 2 || usage ;;
        --thinsnap) thinsnap=${2:-}; shift 2 || usage ;;
        --thinsnapd) thinsnapd=${2:-}; shift 2 || usage ;;
        --out) out=${2:-}; shift 2 || usage ;;
        --vms) vms=${2:-}; shift 2 || usage ;;
        --rounds) rounds=${2:-}; shift 2 || usage ;;
        --devmapper-rounds) dm_rounds=${2:-}; shift 2 || usage ;;
        --warms) warms=${2:-}; shift 2 || usage ;;
        --base-size) base_size=${2:-}; shift 2 || usage ;;
        --thinsnap-flow) thinsnap_flow=${2:-}; shift 2 || usage ;;
        --also-warm) also+=(-also-warm "${2:-}"); shift 2 || usage ;;
        --prewarm) prewarm=(-prewarm "${2:-}"); shift 2 || usage ;;
        --flows) flows=${2:-}; shift 2 || usage ;;
        --vm-spares) vm_spares=${2:-}; shift 2 || usage ;;
        *) echo "in-guest: unknown argument '$1'" >&2; usage ;;
        esac
done
for v in registry_src go_flow thinsnap thinsnapd out; do
        [ -n "${!v}" ] || { echo "in-guest: --${v//_/-} is required" >&2; usage; }
done
[ -d "$registry_src/data" ] || { echo "in-guest: no registry storage in $registry_src" >&2; exit 2; }
for b in "$go_flow" "$thinsnap" "$thinsnapd"; do
        [ -x "$b" ] || { echo "in-guest: $b is not executable" >&2; exit 2; }
done
for tool in containerd docker-registry python3; do
        command -v "$tool" >/dev/null || { echo "in-guest: '$tool' not found (scripts/deps.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] && [ -c /dev/mapper/control ] ||
        { echo "in-guest: needs root and device-mapper: run it through tests/vm/run" >&2; exit 1; }

work=$(mktemp -d /tmp/provbench.XXXXXX)
mkdir -p "$out" "$HOME"
export THINSNAP_STATE_DIR=$work/pool-state DM_DISABLE_UDEV=1
ref=127.0.0.1:5000/bench/img:v1
ns=bench
pids=() pools=() logs=() registry_up=
t_start=$(date +%s.%N)
say() { echo "[$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s] $*"; }
die() {
        echo "in-guest: $*" >&2
        local f
        for f in "${logs[@]}"; do
                [ -s "$f" ] && { echo "---- last 40 lines of $f ----"; tail -n 40 "$f"; }
        done
        exit 1
}

cleanup() {
        local rc=$? p
        for p in "${pids[@]}"; do
                kill -KILL "$p" 2>/dev/null && { wait "$p" 2>/dev/null || true; }
        done
        [ -z "$registry_up" ] || /usr/bin/python3 "$registry" stop "$registry_dir" ||
                echo "in-guest: cleanup could not stop docker-registry" >&2
        for p in "${pools[@]}"; do
                "$thinsnap" pool destroy "$p" --force --delete-files >/dev/null 2>&1 ||
                        echo "in-guest: cleanup could not destroy pool $p" >&2
        done
        rm -rf "$work"
        exit "$rc"
}
trap cleanup EXIT

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s
wait_until() {
        local limit=$1 what=$2 t0
        shift 2
        t0=$(date +%s)
        until "$@" >/dev/null 2>&1; do
                [ $(($(date +%s) - t0)) -lt "$limit" ] || die "$what: not within ${limit}s"
                sleep 0.2
        done
}

# stop PID: SIGTERM, then SIGKILL after 60 s
stop() {
        local pid=$1 i
        kill -TERM "$pid" 2>/dev/null || return 0
        for ((i = 0; i < 300; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
}

# ---- the registry (tests/lib/registry.py: docker-registry, skopeo) ---------------------------
registry=$here/../../tests/lib/registry.py
registry_dir=$work/registry

start_registry() {
        mkdir -p "$registry_dir"
        cp -a "$registry_src/data" "$registry_dir/data"
        logs+=("$registry_dir/registry.log")
        # registry.py gives docker-registry 30 s to answer: on a busy host a TCG guest can
        # take longer than that just to start it.
        local try
        for try in 1 2 3; do
                if /usr/bin/python3 "$registry" start "$registry_dir" --port 5000 \
                        >"$work/registry.start" 2>&1; then
                        registry_up=1
                        return 0
                fi
                say "docker-registry did not answer in time (try $try of 3)"
        done
        die "cannot start docker-registry: $(cat "$work/registry.start")"
}

# ---- pools, thinsnapd, containerd --------------------------------------------------------------
# new_pool NAME: a fresh pool on sparse files (data 4G, metadata 64M, 64K blocks)
new_pool() {
        "$thinsnap" pool create "$1" --data "$work/$1.data" --data-size 4G \
                --meta "$work/$1.meta" --meta-size 64M --block-size 64K >"$work/$1.pool.log" 2>&1 ||
                die "thinsnap pool create $1: $(cat "$work/$1.pool.log")"
        pools+=("$1")
}

# start_thinsnapd POOL SOCKET [PROVISIONER-SOCKET CONTAINERD-SOCKET]: thinsnapd on POOL, with
# its provisioner (talking to that containerd) when given, else the Snapshots API alone;
# sets tsd_pid
start_thinsnapd() {
        local pool=$1 sock=$2 prov=${3:-} args=(--no-provisioner)
        [ -z "$prov" ] || args=(--provisioner-address "$prov" --containerd-address "$4" --namespace "$ns"
                --vm-spares "${vm_spares:-$vms}")
        mkdir -p "$(dirname "$sock")"
        logs+=("$work/thinsnapd-$pool.log")
        "$thinsnapd" --root "$work/thinsnapd-$pool" --pool "$pool" --address "$sock" \
                --base-size "$base_size" "${args[@]}" >"$work/thinsnapd-$pool.log" 2>&1 &
        tsd_pid=$!
        pids+=("$tsd_pid")
        wait_until 60 "thinsnapd listens on $sock" test -S "$sock"
        [ -z "$prov" ] || wait_until 60 "thinsnapd's provisioner listens on $prov" test -S "$prov"
}

# start_containerd NAME SNIPPET: a containerd of its own (root, state, socket) with the
# snapshotter configuration SNIPPET appended; sets ctd_pid and ctd_sock
start_containerd() {
        local name=$1 snippet=$2 cfg=$work/containerd-$1.toml
        ctd_sock=/run/pb-$name/containerd.sock
        mkdir -p "/run/pb-$name"
        cat >"$cfg" <<-EOF
	version = 2
	root = "$work/containerd-$name"
	state = "/run/pb-$name/state"
	disabled_plugins = ["io.containerd.grpc.v1.cri"]
	[grpc]
	  address = "$ctd_sock"
	[ttrpc]
	  address = "$ctd_sock.ttrpc"
	[plugins."io.containerd.internal.v1.opt"]
	  path = "$work/opt-$name"
	EOF
        printf '%s\n' "$snippet" >>"$cfg"
        logs+=("$work/containerd-$name.log")
        containerd --config "$cfg" >"$work/containerd-$name.log" 2>&1 &
        ctd_pid=$!
        pids+=("$ctd_pid")
        wait_until 90 "containerd ($name) answers on $ctd_sock" ctr --address "$ctd_sock" version
}

skipped() {
        printf '{"flow": "%s", "skipped": "%s"}\n' "$1" "$2" >"$out/$1.json"
        say "$1: skipped: $2"
}

# Each setup_* makes a flow's pool, snapshotter and containerd and adds the flow to
# go_flows (provisioner-bench's -flow/-rss arguments) and its daemons to daemons.
go_flows=() daemons=()

setup_go_devmapper() {
        new_pool pb-dm
        start_containerd go-devmapper "$(printf '%s\n' \
                '[plugins."io.containerd.snapshotter.v1.devmapper"]' \
                "  root_path = \"$work/devmapper\"" \
                '  pool_name = "pb-dm"' \
                "  base_image_size = \"$base_size\"" \
                '  async_remove = false' \
                '  discard_blocks = false')"
        go_flows+=(-flow "go-devmapper=devmapper@$ctd_sock")
        # Its 50 snapshots at once take about a minute a round (against seconds for the
        # others): it runs only the first --devmapper-rounds of them.
        [ "$dm_rounds" -ge "$rounds" ] || go_flows+=(-flow-rounds "go-devmapper=$dm_rounds")
        daemons+=("$ctd_pid")
}

setup_go_thinsnapd() {
        local sock=/run/pb-thinsnapd/thinsnapd.sock
        new_pool pb-ts
        start_thinsnapd pb-ts "$sock"
        start_containerd go-thinsnapd "$(printf '%s\n' '[proxy_plugins.thinsnap]' \
                '  type = "snapshot"' "  address = \"$sock\"")"
        go_flows+=(-flow "go-thinsnapd=thinsnap@$ctd_sock" -rss "go-thinsnapd=$tsd_pid:thinsnapd")
        daemons+=("$ctd_pid" "$tsd_pid")
}

# The Go flows run side by side in one provisioner-bench, one operation of each in turn, so
# that a host whose load changes during the run weighs on both alike.
# go_argv: the Go program's command line (after setup_go_*)
go_argv() {
        go_argv=("$go_flow" -namespace "$ns" -image "$ref" -plain-http -vms "$vms" -warms "$warms"
                -rounds "$rounds" -out "$out" "${prewarm[@]}" "${go_flows[@]}")
}

stop_daemons() {
        local p
        for p in "${daemons[@]}"; do
                stop "$p"
        done
        daemons=()
}

run_go_flows() {
        say "go flows: $warms warms, $vms VMs one by one, $vms at once ($rounds rounds), in lockstep"
        go_argv
        "${go_argv[@]}" || die "a Go flow failed (see its JSON)"
        stop_daemons
}

# ---- the thinsnap provisioner's own flow (the third column) ------------------------------------
# The same steps through thinsnap.v1.Provisioner on thinsnapd: a fresh pool, thinsnapd serving
# both containerd's Snapshots API and the Provisioner, a fresh containerd with thinsnap as its
# proxy plugin, and the program given as --thinsnap-flow CMD (bench/prov-flow, which
# bench/run-provisioner-bench.sh builds and passes), run as
#   CMD -address PROVISIONER-SOCKET -image REF -plain-http -vms N -warms N -rounds N -flow thinsnap
#       -out OUT/thinsnap.json -rss-pid PID -rss-name thinsnapd
# and writing provisioner-bench's JSON. bench/provisioner-table.py prints it as a third column
# with its ratios against both Go flows.
setup_thinsnap() {
        local sock=/run/pb-thinsnap/thinsnapd.sock
        ts_prov=/run/pb-thinsnap/provisioner.sock
        new_pool pb-tp
        start_thinsnapd pb-tp "$sock" "$ts_prov" /run/pb-thinsnap/containerd.sock
        start_containerd thinsnap "$(printf '%s\n' '[proxy_plugins.thinsnap]' \
                '  type = "snapshot"' "  address = \"$sock\"")"
        daemons+=("$ctd_pid" "$tsd_pid")
        ts_rss_pid=$tsd_pid
}

# thinsnap_argv: the thinsnap flow's command line (after setup_thinsnap)
thinsnap_argv() {
        local cmd
        read -r -a cmd <<<"$thinsnap_flow"
        thinsnap_argv=("${cmd[@]}" -address "$ts_prov" -image "$ref" -plain-http -vms "$vms"
                -warms "$warms" -rounds "$rounds" -flow thinsnap -out "$out/thinsnap.json"
                -rss-pid "$ts_rss_pid" -rss-name thinsnapd "${also[@]}" "${prewarm[@]}")
}

run_thinsnap_flow() {
        setup_thinsnap
        say "thinsnap: $warms warms, $vms VMs one by one, $vms at once ($rounds rounds)"
        thinsnap_argv
        "${thinsnap_argv[@]}" || die "the thinsnap flow failed (see thinsnap.json)"
        stop_daemons
}

# ---- both, the concurrent rounds taking turns --------------------------------------------------
# The Go program runs its warms and one-by-one VMs first, then the thinsnap flow its own (each
# alone in the guest, as before); then their concurrent rounds take turns (the first one
# alternating), so that a host whose load drifts during the run weighs on both alike. Each
# program writes "ready ROUND" to its FIFO turn-NAME.out, waits for "go" on turn-NAME.in,
# writes "snapped ROUND" when the round's snapshots are done, waits for "go" again, and writes
# "done ROUND" after their teardowns (-turn-in, -turn-out).

# start_turns NAME CMD...: runs CMD with its turn FIFOs in the background; sets turn_pid_NAME,
# turn_rd_NAME and turn_wr_NAME (its FIFOs, opened in the order the program opens them)
start_turns() {
        local name=$1 fin=$work/turn-$1.in fout=$work/turn-$1.out fd pid
        shift
        mkfifo "$fin" "$fout"
        "$@" -turn-in "$fin" -turn-out "$fout" &
        pid=$!
        pids+=("$pid")
        printf -v "turn_pid_$name" %s "$pid"
        exec {fd}<"$fout"
        printf -v "turn_rd_$name" %s "$fd"
        exec {fd}>"$fin"
        printf -v "turn_wr_$name" %s "$fd"
}

# expect NAME LINE: the next line from NAME's program is LINE
expect() {
        local fd=turn_rd_$1 line
        read -r line <&"${!fd}" || die "the $1 flow stopped before '$2' (see its JSON)"
        [ "$line" = "$2" ] || die "the $1 flow said '$line', not '$2'"
}

# The guest's CPU in each turn, by process, goes to OUT/cpu.jsonl: one line per phase of a
# round that one flow ran alone ({"flow", "round", "phase": snapshots|teardowns, "hz",
# "ticks": {"busy", "idle", COMMAND: utime + stime...}}; kernel workers count as "kworker").

# cpu_ticks FILE: the guest's busy and idle clock ticks, then each process's pid, command and
# utime + stime (cat goes on past a process that ends meanwhile; the command is what is between
# the first "(" and the last ")", without characters JSON would need escaped)
cpu_ticks() {
        { cat /proc/stat; cat /proc/[0-9]*/stat; } 2>/dev/null |
                awk '$1 == "cpu" { print "busy busy", $2 + $3 + $4 + $7 + $8; print "idle idle", $5 + $6; next }
                     $1 ~ /^[0-9]+$/ && match($0, /\(.*\)/) {
                             c = substr($0, RSTART + 1, RLENGTH - 2); gsub(/["\\[:space:]]/, "_", c)
                             if (c ~ /^kworker/) c = "kworker"
                             n = split(substr($0, RSTART + RLENGTH + 1), f, " "); print $1, c, f[12] + f[13] }' \
                        >"$1" || true
}

# cpu_record FLOW ROUND PHASE: the ticks since the last cpu_ticks into $work/cpu.before, as a
# line of OUT/cpu.jsonl (none without FLOW): a process counts when it is in both readings under
# the same command; then starts the next phase's count
cpu_record() {
        cpu_ticks "$work/cpu.after"
        [ -z "$1" ] || awk -v flow="$1" -v round="$2" -v phase="$3" -v hz="$(getconf CLK_TCK)" \
                'NR == FNR { b[$1 " " $2] = $3; next }
                 ($1 " " $2) in b { d = $3 - b[$1 " " $2]; if (d > 0) t[$2] += d }
                 END { printf "{\"flow\": \"%s\", \"round\": %d, \"phase\": \"%s\", \"hz\": %d, \"ticks\": {", flow, round, phase, hz
                       n = 0; for (c in t) printf "%s\"%s\": %d", (n++ ? ", " : ""), c, t[c]; print "}}" }' \
                "$work/cpu.before" "$work/cpu.after" >>"$out/cpu.jsonl"
        mv "$work/cpu.after" "$work/cpu.before"
}

# quiet PID: waits (at most 60 s) until process PID has used no CPU for half a second (its
# clock ticks unchanged over two looks, a quarter of a second apart): what the thinsnap flow's
# thinsnapd does after its calls returned (the spares it cuts once VMs pause, --vm-spares; its
# kernel work runs in its own context) is that flow's work, in its turn and its CPU count (the
# phase "after"), not the next flow's. It starts no process, so adds nothing to that count.
quiet() {
        local last=-1 same=0 i line
        local -a f
        [ -n "${quiet_fd:-}" ] || { mkfifo "$work/quiet"; exec {quiet_fd}<>"$work/quiet"; }
        for ((i = 0; i < 240 && same < 2; i++)); do
                read -r line <"/proc/$1/stat" || die "process $1 is gone"
                read -ra f <<<"${line##*) }"
                if [ $((f[11] + f[12])) = "$last" ]; then same=$((same + 1)); else same=0; fi
                last=$((f[11] + f[12]))
                read -r -t 0.25 -u "$quiet_fd" line || true
        done
}

# turn NAME ROUND: NAME's program runs round ROUND (it said it is ready): its snapshots, then
# on "snapped ROUND" its teardowns, until "done ROUND", then (the thinsnap flow) until its
# thinsnapd is idle. A round without "snapped" (its flow failed or had no more rounds) records nothing.
turn() {
        local fd=turn_wr_$1 rd=turn_rd_$1 line flow=$1 snapped=
        # The Go program runs go-devmapper's rounds in the same turns: its CPU is not one flow's.
        [ "$1" = thinsnap ] || flow=go-thinsnapd
        [ "$1" = thinsnap ] || [ -z "$go_dm" ] || [ "$2" -ge "$dm_rounds" ] || flow=
        say "round $2: $1"
        cpu_ticks "$work/cpu.before"
        echo go >&"${!fd}"
        while read -r line <&"${!rd}"; do
                case $line in
                "snapped $2") cpu_record "$flow" "$2" snapshots; snapped=1; echo go >&"${!fd}" ;;
                "done $2")
                        cpu_record "${snapped:+$flow}" "$2" teardowns
                        # Only the thinsnap flow's thinsnapd works on after its calls returned.
                        [ "$1" = thinsnap ] || return 0
                        quiet "$ts_rss_pid"
                        cpu_record "${snapped:+$flow}" "$2" after
                        return 0 ;;
                *) die "the $1 flow said '$line' in round $2" ;;
                esac
        done
        die "the $1 flow stopped in round $2 (see its JSON)"
}

# finish NAME WHAT: NAME's program exits, successfully
finish() {
        local pid=turn_pid_$1 rd=turn_rd_$1 wr=turn_wr_$1
        local rfd=${!rd} wfd=${!wr}
        exec {rfd}<&- {wfd}>&-
        wait "${!pid}" || die "$2 failed (see its JSON)"
}

run_in_turns() {
        say "go flows: $warms warms, $vms VMs one by one, in lockstep"
        go_argv
        start_turns go "${go_argv[@]}"
        expect go "ready 0"
        setup_thinsnap
        say "thinsnap: $warms warms, $vms VMs one by one"
        thinsnap_argv
        start_turns thinsnap "${thinsnap_argv[@]}"
        expect thinsnap "ready 0"
        say "$vms at once, $rounds rounds, the flows taking turns"
        local r first second
        for ((r = 0; r < rounds; r++)); do
                first=go second=thinsnap
                [ $((r % 2)) = 0 ] || { first=thinsnap second=go; }
                [ "$r" = 0 ] || expect "$first" "ready $r"
                turn "$first" "$r"
                [ "$r" = 0 ] || expect "$second" "ready $r"
                turn "$second" "$r"
        done
        finish go "a Go flow"
        finish thinsnap "the thinsnap flow"
        stop_daemons
}

say "starting docker-registry with $ref"
start_registry
go_on= ts_on= go_dm=
case ",$flows," in
*,go,*)
        setup_go_devmapper
        setup_go_thinsnapd
        go_on=1 go_dm=1
        ;;
*,go-thinsnapd,*)
        skipped go-devmapper "not asked for (--flows $flows)"
        setup_go_thinsnapd
        go_on=1
        ;;
*) skipped go-devmapper "not asked for (--flows $flows)"
   skipped go-thinsnapd "not asked for (--flows $flows)" ;;
esac
case ",$flows," in
*,thinsnap,*)
        if [ -n "$thinsnap_flow" ]; then ts_on=1; else skipped thinsnap "no --thinsnap-flow program given"; fi ;;
*) skipped thinsnap "not asked for (--flows $flows)" ;;
esac
if [ -n "$go_on" ] && [ -n "$ts_on" ]; then
        run_in_turns
elif [ -n "$go_on" ]; then
        run_go_flows
elif [ -n "$ts_on" ]; then
        run_thinsnap_flow
fi
say "done"
