#!/usr/bin/env bash
# Real containerd 1.6 against a thin-pool snapshotter, inside the VM lane (as root):
#
#   ctr-import.sh --snapshotter thinsnap --thinsnap THINSNAP --thinsnapd THINSNAPD [--base-size SIZE]
#   ctr-import.sh --snapshotter devmapper --thinsnap THINSNAP        (containerd's built-in peer)
#   further options: --image DIR (an image made by `build-image build DIR`; default: build one
#   here), --pool NAME (ctrtest), --snippet FILE (deploy/containerd-thinsnap.toml)
#
# Builds a multi-layer OCI archive (build-image), creates a pool with `thinsnap pool create`,
# starts the snapshotter (thinsnapd as a proxy plugin through deploy/containerd-thinsnap.toml,
# or containerd's Go devmapper snapshotter on the same pool) and containerd, then:
#   1. ctr images import --snapshotter S: the chain of committed snapshots is the image's;
#   2. a view of the top snapshot, mounted read-only, matches the image byte for byte
#      (contents, modes, owners, link targets, user xattrs, hard links, fifos, whiteouts);
#   3. ctr snapshots ls, info, usage, tree, prepare, view, mounts, commit and rm do what they
#      say, and refuse what they must (parent with children, uncommitted parent, ...);
#   4. after ctr images rm and containerd's GC, no snapshot is left and the pool holds only
#      the base device (thinsnap) or nothing (devmapper): thin_ls on a metadata snapshot,
#      dmsetup, and `thinsnap pool status --json` agree, and no data block is leaked.
# Every wait is bounded; on failure the logs of both daemons are printed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top_dir=$(cd "$here/../../.." && pwd)

usage() {
        sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
}

mode=
thinsnap=
thinsnapd=
base_size=256M
pool=ctrtest
builder=$here/../../lib/build-image
snippet=$top_dir/deploy/containerd-thinsnap.toml
image_dir=
while [ $# -gt 0 ]; do
        case $1 in
        --snapshotter) mode=${2:-}; shift 2 || usage ;;
        --thinsnap) thinsnap=${2:-}; shift 2 || usage ;;
        --thinsnapd) thinsnapd=${2:-}; shift 2 || usage ;;
        --base-size) base_size=${2:-}; shift 2 || usage ;;
        --pool) pool=${2:-}; shift 2 || usage ;;
        --builder) builder=${2:-}; shift 2 || usage ;;
        --snippet) snippet=${2:-}; shift 2 || usage ;;
        --image) image_dir=${2:-}; shift 2 || usage ;;
        -h | --help) usage ;;
        *) echo "ctr-import: unknown argument '$1'" >&2; usage ;;
        esac
done
case $mode in
thinsnap) [ -n "$thinsnapd" ] || { echo "ctr-import: --snapshotter thinsnap needs --thinsnapd" >&2; usage; } ;;
devmapper) ;;
*) echo "ctr-import: --snapshotter must be thinsnap or devmapper" >&2; usage ;;
esac
[ -n "$thinsnap" ] || { echo "ctr-import: --thinsnap THINSNAP (the CLI that creates pools) is required" >&2; usage; }

fails=0
count=0
t_start=$(date +%s.%N)
declare -A timing=()

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "[$(elapsed "$t_start")s] $*"; }
ok() { count=$((count + 1)); echo "ok   $*"; }
bad() { count=$((count + 1)); fails=$((fails + 1)); echo "FAIL $*"; }
# die MESSAGE: a failure the rest cannot go on from
die() {
        bad "$*"
        exit 1
}
# check DESCRIPTION COMMAND...: the command must succeed; its output is kept in $work/out
check() {
        local what=$1
        shift
        if "$@" >"$work/out" 2>&1; then
                ok "$what"
                return 0
        fi
        bad "$what: '$*' failed: $(tail -n 20 "$work/out")"
        return 1
}
# refuse DESCRIPTION NEEDLE COMMAND...: the command must fail and say NEEDLE (a regex, case-insensitive)
refuse() {
        local what=$1 needle=$2
        shift 2
        if "$@" >"$work/out" 2>&1; then
                bad "$what: '$*' succeeded, it must fail"
                return 1
        fi
        if ! grep -qiE -- "$needle" "$work/out"; then
                bad "$what: '$*' failed without saying /$needle/: $(tail -n 5 "$work/out")"
                return 1
        fi
        ok "$what (refused: $(grep -iEo -- "$needle" "$work/out" | head -n 1))"
}
# expect_eq DESCRIPTION GOT WANT
expect_eq() {
        if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi
}
# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s until COMMAND succeeds
wait_for() {
        local limit=$1 what=$2 t0
        shift 2
        t0=$(date +%s)
        until "$@" >/dev/null 2>&1; do
                if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
                        bad "$what: not within ${limit}s"
                        return 1
                fi
                sleep 0.2
        done
        ok "$what ($(($(date +%s) - t0))s)"
}
# timed NAME COMMAND...: runs COMMAND, records its wall time under NAME
timed() {
        local name=$1 t0 rc
        shift
        t0=$(date +%s.%N)
        "$@"
        rc=$?
        timing[$name]=$(elapsed "$t0")
        return $rc
}

for tool in containerd ctr dmsetup thin_ls jq mount umount findmnt python3 timeout mkfs.ext4; do
        command -v "$tool" >/dev/null || { echo "ctr-import: '$tool' not found (scripts/deps.sh)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "ctr-import: must run as root (the VM lane: tests/vm/run)" >&2; exit 1; }
[ -c /dev/mapper/control ] || { echo "ctr-import: no device-mapper in this kernel; run through tests/vm/run" >&2; exit 1; }
[ -x "$thinsnap" ] || { echo "ctr-import: $thinsnap is not executable" >&2; exit 1; }
[ -z "$thinsnapd" ] || [ -x "$thinsnapd" ] || { echo "ctr-import: $thinsnapd is not executable" >&2; exit 1; }
[ -f "$snippet" ] || { echo "ctr-import: containerd snippet $snippet not found" >&2; exit 1; }

work=$(mktemp -d /tmp/ctr-import.XXXXXX)
export THINSNAP_STATE_DIR=$work/pool-state
export DM_DISABLE_UDEV=1 # no udev in the guest; dmsetup (and the Go devmapper snapshotter) make nodes
sock=/run/ctrtest/containerd.sock
ns=ctrtest
mnt=$work/mnt
ctd_pid=
tsd_pid=
pool_made=0

CTR=(timeout 300 ctr --address "$sock" --namespace "$ns" --timeout 240s)
sn() { "${CTR[@]}" snapshots --snapshotter "$mode" "$@"; }

show_logs() {
        local f
        for f in "$work/thinsnapd.log" "$work/containerd.log"; do
                [ -s "$f" ] || continue
                echo "---- last 150 lines of $(basename "$f") ----"
                tail -n 150 "$f"
        done
        echo "---- dmsetup ls ----"
        dmsetup ls 2>&1
        echo "---- dmsetup table / status ----"
        dmsetup table 2>&1
        dmsetup status 2>&1
        echo "---- mounts under $work ----"
        grep -F "$work" /proc/mounts
}

# stop_daemon NAME PID SECONDS: SIGTERM, wait; the status goes to $stop_status
stop_daemon() {
        local name=$1 pid=$2 limit=$3 t0
        stop_status=
        kill -0 "$pid" 2>/dev/null || {
                wait "$pid" 2>/dev/null
                stop_status=$?
                bad "$name had already exited (status $stop_status)"
                return 1
        }
        kill -TERM "$pid"
        t0=$(date +%s)
        while kill -0 "$pid" 2>/dev/null; do
                if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
                        bad "$name did not stop within ${limit}s of SIGTERM; killed"
                        kill -KILL "$pid" 2>/dev/null
                        wait "$pid" 2>/dev/null
                        return 1
                fi
                sleep 0.2
        done
        wait "$pid"
        stop_status=$?
        return 0
}

cleanup() {
        local rc=$?
        trap - EXIT
        [ "$fails" -eq 0 ] || show_logs
        umount "$mnt" 2>/dev/null
        if [ -n "$ctd_pid" ] && kill -0 "$ctd_pid" 2>/dev/null; then
                kill -KILL "$ctd_pid" 2>/dev/null
                wait "$ctd_pid" 2>/dev/null
        fi
        if [ -n "$tsd_pid" ] && kill -0 "$tsd_pid" 2>/dev/null; then
                kill -KILL "$tsd_pid" 2>/dev/null
                wait "$tsd_pid" 2>/dev/null
        fi
        if [ "$pool_made" = 1 ]; then
                "$thinsnap" pool destroy "$pool" --force --delete-files >/dev/null 2>&1 ||
                        echo "ctr-import: cleanup could not destroy pool $pool"
        fi
        echo "ctr-import ($mode): $((count - fails)) passed, $fails failed in $(elapsed "$t_start")s"
        if [ "${#timing[@]}" -gt 0 ]; then
                local k line=
                for k in build pool snapshotter containerd import view-compare ctr-ops gc stop; do
                        [ -n "${timing[$k]:-}" ] && line+=" $k=${timing[$k]}s"
                done
                echo "ctr-import ($mode) timings:$line"
        fi
        rm -rf "$work"
        [ "$fails" -eq 0 ] && [ "$rc" -eq 0 ] && exit 0
        exit 1
}
trap cleanup EXIT

json() { jq -r "$@"; }

# ---------------------------------------------------------------------------------------------
if [ -n "$image_dir" ]; then
        say "using the image archive built in $image_dir"
else
        say "building the image archive"
        image_dir=$work/img
        timed build check "build-image builds the archive" /usr/bin/python3 "$builder" build "$image_dir" ||
                die "cannot build the image"
fi
expected=$image_dir/expected.json
archive=$image_dir/image.tar
[ -f "$expected" ] && [ -f "$archive" ] || die "$image_dir holds no image.tar and expected.json"
image=$(json .name "$expected")
mapfile -t chain <<<"$(json '.chain_ids[]' "$expected")"
top=${chain[-1]}
big_layer=$(json .big_file.layer "$expected")
big_size=$(json .big_file.size "$expected")
big_path=$(json .big_file.path "$expected")
big_sha=$(json .big_file.sha256 "$expected")
say "image $image: ${#chain[@]} layers, top snapshot $top"

# ---------------------------------------------------------------------------------------------
say "creating pool $pool"
timed pool check "thinsnap pool create $pool" "$thinsnap" pool create "$pool" \
        --data "$work/pool.data" --data-size 2G --meta "$work/pool.meta" || die "cannot create the pool"
pool_made=1
# meta_device is a path or major:minor; thin_ls wants the node.
meta_dev=$("$thinsnap" pool status "$pool" --json | json .meta_device)
if [[ $meta_dev =~ ^[0-9]+:[0-9]+$ ]]; then
        meta_dev=/dev/$(sed -n 's/^DEVNAME=//p' "/sys/dev/block/$meta_dev/uevent" 2>/dev/null)
fi
pool_devno=$(dmsetup info -c --noheadings -o major,minor "$pool" | tr -d ' ')
[ -b "$meta_dev" ] && [ -n "$pool_devno" ] || die "pool $pool: no metadata device ($meta_dev) or dm number ($pool_devno)"

# pool_thin_ids: the thin device ids in the pool's metadata (on a metadata snapshot, live pool)
pool_thin_ids() {
        dmsetup message "$pool" 0 reserve_metadata_snap || return 1
        thin_ls --metadata-snap --no-headers -o DEV,MAPPED_BLOCKS "$meta_dev" >"$work/thin_ls" 2>&1
        local rc=$?
        dmsetup message "$pool" 0 release_metadata_snap || return 1
        [ $rc -eq 0 ] || { cat "$work/thin_ls" >&2; return 1; }
        awk '{ print $1 }' "$work/thin_ls" | sort -n
}
# pool_active_thins: "name id" of every active thin device on the pool
pool_active_thins() {
        dmsetup table --target thin 2>/dev/null |
                awk -v p="$pool_devno" '$4 == "thin" && $5 == p { sub(/:$/, "", $1); print $1, $6 }' | sort
}
pool_used_blocks() { "$thinsnap" pool status "$pool" --json | json .data.used_blocks; }

# ---------------------------------------------------------------------------------------------
mkdir -p /run/ctrtest "$mnt"
cfg=$work/containerd.toml
{
        echo "version = 2"
        echo "root = \"$work/containerd-root\""
        echo "state = \"/run/ctrtest/state\""
        echo "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"
        echo "[grpc]"
        echo "  address = \"$sock\""
        echo "[ttrpc]"
        echo "  address = \"$sock.ttrpc\""
        echo "[debug]"
        echo "  level = \"debug\""
        echo "[plugins.\"io.containerd.internal.v1.opt\"]"
        echo "  path = \"$work/opt\""
} >"$cfg"

if [ "$mode" = thinsnap ]; then
        tsd_sock=$(sed -n 's/^[[:space:]]*address[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$snippet")
        [ -n "$tsd_sock" ] || die "no address in $snippet"
        cat "$snippet" >>"$cfg"
        mkdir -p "$(dirname "$tsd_sock")"
        say "starting thinsnapd on $tsd_sock"
        t0=$(date +%s.%N)
        "$thinsnapd" --root "$work/thinsnapd" --pool "$pool" --address "$tsd_sock" \
                --base-size "$base_size" >"$work/thinsnapd.log" 2>&1 &
        tsd_pid=$!
        tsd_up() { kill -0 "$tsd_pid" 2>/dev/null || return 2; [ -S "$tsd_sock" ]; }
        wait_for 60 "thinsnapd listens on $tsd_sock" tsd_up || die "thinsnapd did not come up"
        timing[snapshotter]=$(elapsed "$t0")
        expect_eq "thinsnapd's socket has mode 0660" "$(stat -c %a "$tsd_sock")" 660
else
        {
                echo "[plugins.\"io.containerd.snapshotter.v1.devmapper\"]"
                echo "  root_path = \"$work/devmapper\""
                echo "  pool_name = \"$pool\""
                echo "  base_image_size = \"$base_size\""
                echo "  async_remove = false"
                echo "  discard_blocks = false"
        } >>"$cfg"
fi

say "starting containerd"
t0=$(date +%s.%N)
containerd --config "$cfg" >"$work/containerd.log" 2>&1 &
ctd_pid=$!
ctd_up() { kill -0 "$ctd_pid" 2>/dev/null || return 2; [ -S "$sock" ] && "${CTR[@]}" version; }
wait_for 90 "containerd answers on $sock" ctd_up || die "containerd did not come up"
timing[containerd]=$(elapsed "$t0")
"${CTR[@]}" plugins ls >"$work/plugins" 2>&1
if awk -v n="$mode" '$1 == "io.containerd.snapshotter.v1" && $2 == n && $NF == "ok" { f = 1 } END { exit !f }' \
        "$work/plugins"; then
        ok "containerd lists snapshotter $mode as ok"
else
        die "containerd does not list snapshotter $mode as ok: $(grep snapshotter "$work/plugins")"
fi
if [ "$mode" = thinsnap ]; then
        ids_before=$(pool_thin_ids | tr '\n' ' ')
        say "thin devices in the pool after thinsnapd started: [${ids_before}]"
fi

# ---------------------------------------------------------------------------------------------
say "importing $archive"
timed import check "ctr images import --snapshotter $mode" \
        "${CTR[@]}" images import --snapshotter "$mode" "$archive" || die "import failed"
grep -q "unpacking $image" "$work/out" && grep -q done "$work/out" ||
        bad "import did not report unpacking $image: $(cat "$work/out")"
"${CTR[@]}" images ls >"$work/images" 2>&1
if awk -v n="$image" -v d="$(json .manifest_digest "$expected")" '$1 == n && $3 == d { f = 1 } END { exit !f }' \
        "$work/images"; then
        ok "image $image is listed with manifest $(json .manifest_digest "$expected" | cut -c1-19)..."
else
        bad "image $image with its manifest digest not in ctr images ls: $(cat "$work/images")"
fi

# snap_table: "key parent kind" from ctr snapshots ls (parent "-" when none)
snap_table() {
        sn ls | awk 'NR > 1 { if (NF == 2) print $1, "-", $2; else print $1, $2, $3 }' | sort
}
want_chain() {
        local i parent
        for i in "${!chain[@]}"; do
                parent=-
                [ "$i" -gt 0 ] && parent=${chain[$((i - 1))]}
                echo "${chain[$i]} $parent Committed"
        done | sort
}
got=$(snap_table)
expect_eq "ctr snapshots ls: exactly the image's chain of ${#chain[@]} committed snapshots" "$got" "$(want_chain)"

# ---------------------------------------------------------------------------------------------
# A GC now (lease create + delete --sync), so none runs between `view` and labelling the view
# as a GC root below.
check "ctr leases create" "${CTR[@]}" leases create --id ctrtest-gc-trigger
check "ctr leases delete --sync (runs the GC now)" "${CTR[@]}" leases delete --sync ctrtest-gc-trigger
expect_eq "the image's snapshots survive a GC" "$(snap_table)" "$(want_chain)"

# mount_of KEY: "type source options" of the single mount ctr snapshots mounts prints for KEY
mount_of() {
        local out
        out=$(sn mounts "$mnt" "$1") || return 1
        [ "$(wc -l <<<"$out")" = 1 ] || { echo "several mounts: $out" >&2; return 1; }
        # mount -t TYPE SOURCE TARGET -o OPTIONS
        awk '{ print $3, $4, $7 }' <<<"$out"
}
# mount_snapshot KEY: mounts KEY's mount on $mnt
mount_snapshot() {
        local m
        m=$(mount_of "$1") || return 1
        read -r mtype msrc mopts <<<"$m"
        if [ -n "$mopts" ]; then
                mount -t "$mtype" -o "$mopts" "$msrc" "$mnt"
        else
                mount -t "$mtype" "$msrc" "$mnt"
        fi
}
src_re="^/dev/mapper/$pool-snap-[0-9]+$"

say "view of the top snapshot, compared with the image"
t0=$(date +%s.%N)
check "ctr snapshots view ctrtest-view <top>" sn view --mounts ctrtest-view "$top" || die "view failed"
view_json=$(cat "$work/out")
check "label the view as a GC root" sn label ctrtest-view containerd.io/gc.root=ctrtest
vm=$(mount_of ctrtest-view) || die "ctr snapshots mounts ctrtest-view failed"
read -r vtype vsrc vopts <<<"$vm"
expect_eq "view mounts as ext4" "$vtype" ext4
[[ $vsrc =~ $src_re ]] && ok "view's source $vsrc is /dev/mapper/$pool-snap-<id>" ||
        bad "view's source '$vsrc' is not /dev/mapper/$pool-snap-<id>"
[[ ,$vopts, == *,ro,* ]] && ok "view's mount options ($vopts) include ro" ||
        bad "view's mount options '$vopts' lack ro"
expect_eq "view --mounts JSON agrees with ctr snapshots mounts" \
        "$(jq -r '.[0] | "\(.Type) \(.Source) \((.Options // []) | join(","))"' <<<"$view_json") $(jq length <<<"$view_json")" \
        "$vtype $vsrc $vopts 1"
if mount_snapshot ctrtest-view; then
        ok "mounted the view on $mnt"
        expect_eq "the view is mounted read-only" "$(findmnt -no OPTIONS "$mnt" | tr ',' '\n' | grep -x ro)" ro
        refuse "writing into the view" "read-only" touch "$mnt/ctrtest-write-probe"
        if /usr/bin/python3 "$builder" compare "$expected" "$mnt" --ignore lost+found >"$work/compare" 2>&1; then
                ok "$(tail -n 1 "$work/compare")"
        else
                bad "the mounted view differs from the image: $(cat "$work/compare")"
        fi
        umount "$mnt" || bad "umount the view"
else
        bad "mount the view ($vtype $vsrc -o $vopts)"
fi
timing[view-compare]=$(elapsed "$t0")

# ---------------------------------------------------------------------------------------------
say "ctr snapshots prepare, mounts, info, usage, commit, tree, rm"
t0=$(date +%s.%N)
info() { sn info "$1"; }
check "prepare ctrtest-active from the top snapshot" sn prepare --mounts ctrtest-active "$top"
prep_json=$(cat "$work/out")
am=$(mount_of ctrtest-active) || bad "ctr snapshots mounts ctrtest-active failed"
read -r atype asrc aopts <<<"${am:-x x x}"
expect_eq "prepare --mounts JSON agrees with ctr snapshots mounts" \
        "$(jq -r '.[0] | "\(.Type) \(.Source) \((.Options // []) | join(","))"' <<<"$prep_json")" \
        "$atype $asrc $aopts"
expect_eq "active snapshot mounts as ext4" "$atype" ext4
[[ $asrc =~ $src_re ]] && ok "active's source $asrc is /dev/mapper/$pool-snap-<id>" ||
        bad "active's source '$asrc' is not /dev/mapper/$pool-snap-<id>"
[[ ,$aopts, != *,ro,* ]] && ok "active's mount options ($aopts) are read-write" ||
        bad "active's mount options '$aopts' include ro"
[ "$asrc" != "$vsrc" ] && ok "active and view are different devices" || bad "active and view share $asrc"
info ctrtest-active >"$work/info" 2>&1
expect_eq "info ctrtest-active: kind, parent, gc.root label" \
        "$(jq -r '"\(.Kind) \(.Parent) \(.Labels["containerd.io/gc.root"] != null)"' "$work/info")" \
        "Active $top true"

head -c $((4 << 20)) /dev/urandom >"$work/payload"
payload_sha=$(sha256sum <"$work/payload" | cut -d' ' -f1)
if mount_snapshot ctrtest-active; then
        check "write 4 MiB into the active snapshot" cp "$work/payload" "$mnt/ctrtest-payload"
        check "make a directory in the active snapshot" mkdir "$mnt/ctrtest-dir"
        check "remove an image file in the active snapshot" rm "$mnt/etc/passwd"
        sync
        umount "$mnt" || bad "umount the active snapshot"
else
        bad "mount the active snapshot ($atype $asrc -o $aopts)"
fi
# usage_of KEY: bytes
usage_of() { sn usage -b "$1" | awk -v k="$1" '$1 == k { print $2 }'; }
u=$(usage_of ctrtest-active)
[[ $u =~ ^[0-9]+$ ]] && [ "$u" -ge $((4 << 20)) ] && [ "$u" -lt "$big_size" ] &&
        ok "usage of the active snapshot: $u bytes (>= the 4 MiB written, < the parent's $big_size-byte file)" ||
        bad "usage of the active snapshot is '$u' bytes; want >= $((4 << 20)) and < $big_size (its own writes only)"
ub=$(usage_of "${chain[$big_layer]}")
[[ $ub =~ ^[0-9]+$ ]] && [ "$ub" -ge "$big_size" ] &&
        ok "usage of the layer with the big file: $ub bytes (>= $big_size)" ||
        bad "usage of the layer with the $big_size-byte file is '$ub'"
sn usage -b >"$work/usage_all" 2>&1
expect_eq "ctr snapshots usage lists every snapshot" "$(awk 'NR > 1 { print $1 }' "$work/usage_all" | sort | tr '\n' ' ')" \
        "$(printf '%s\n' "${chain[@]}" ctrtest-active ctrtest-view | sort | tr '\n' ' ')"

refuse "prepare with a parent that is not committed (a view)" "not committed|failed precondition|invalid|not found|parent" \
        sn prepare ctrtest-bad ctrtest-view
refuse "prepare with an active parent" "not committed|failed precondition|invalid|not found|parent" \
        sn prepare ctrtest-bad ctrtest-active
refuse "prepare an existing key" "already exists" sn prepare ctrtest-active "$top"
refuse "commit a view" "not active|failed precondition|invalid|not found" sn commit ctrtest-bad ctrtest-view
refuse "info of a key that does not exist" "not found" info ctrtest-nonexistent
refuse "rm of a key that does not exist" "not found" sn rm ctrtest-nonexistent

check "commit ctrtest-active as ctrtest-committed" sn commit ctrtest-committed ctrtest-active
info ctrtest-committed >"$work/info" 2>&1
expect_eq "info ctrtest-committed: Committed, parent is the top snapshot" \
        "$(jq -r '"\(.Kind) \(.Parent)"' "$work/info")" "Committed $top"
refuse "the active key is gone after commit" "not found" info ctrtest-active
u=$(usage_of ctrtest-committed)
[[ $u =~ ^[0-9]+$ ]] && [ "$u" -ge $((4 << 20)) ] && [ "$u" -lt "$big_size" ] &&
        ok "usage of the committed snapshot: $u bytes" ||
        bad "usage of the committed snapshot is '$u'; want >= $((4 << 20)) and < $big_size"
check "prepare ctrtest-active2 from the top snapshot" sn prepare ctrtest-active2 "$top"
refuse "commit onto an existing name" "already exists" sn commit ctrtest-committed ctrtest-active2
check "rm ctrtest-active2" sn rm ctrtest-active2

check "prepare ctrtest-child from ctrtest-committed" sn prepare ctrtest-child ctrtest-committed
if mount_snapshot ctrtest-child; then
        expect_eq "the child sees the committed payload" \
                "$(sha256sum <"$mnt/ctrtest-payload" 2>/dev/null | cut -d' ' -f1)" "$payload_sha"
        expect_eq "the child sees the image's big file" \
                "$(sha256sum <"$mnt/$big_path" 2>/dev/null | cut -d' ' -f1)" "$big_sha"
        [ -d "$mnt/ctrtest-dir" ] && [ ! -e "$mnt/etc/passwd" ] &&
                ok "the child sees the committed mkdir and rm" || bad "the child lacks the committed mkdir/rm"
        check "write into the child" sh -c "echo child >'$mnt/child-file'"
        umount "$mnt" || bad "umount the child"
else
        bad "mount ctrtest-child"
fi
info ctrtest-child >"$work/info" 2>&1
expect_eq "info ctrtest-child: Active, parent ctrtest-committed" \
        "$(jq -r '"\(.Kind) \(.Parent)"' "$work/info")" "Active ctrtest-committed"

# The tree: each line's parent is the nearest line above with one level less.
sn tree >"$work/tree" 2>&1 || bad "ctr snapshots tree failed: $(cat "$work/tree")"
tree_edges=$(awk '{
        match($0, /^ */); lvl = int(RLENGTH / 2)
        name = $NF; stack[lvl] = name
        print name, (lvl > 0 ? stack[lvl - 1] : "-") }' "$work/tree" | sort)
want_edges=$( {
        for i in "${!chain[@]}"; do
                [ "$i" -gt 0 ] && echo "${chain[$i]} ${chain[$((i - 1))]}" || echo "${chain[$i]} -"
        done
        echo "ctrtest-view $top"
        echo "ctrtest-committed $top"
        echo "ctrtest-child ctrtest-committed"
} | sort)
expect_eq "ctr snapshots tree shows every snapshot under its parent" "$tree_edges" "$want_edges"
want_ls=$( {
        want_chain
        echo "ctrtest-view $top View"
        echo "ctrtest-committed $top Committed"
        echo "ctrtest-child ctrtest-committed Active"
} | sort)
expect_eq "ctr snapshots ls shows keys, parents and kinds" "$(snap_table)" "$want_ls"

refuse "rm of a committed snapshot with a child" "children|failed precondition|has child" sn rm ctrtest-committed
refuse "rm of an image layer with children" "children|failed precondition|has child" sn rm "${chain[0]}"
info ctrtest-committed >/dev/null 2>&1 && ok "ctrtest-committed is still there after the refused rm" ||
        bad "ctrtest-committed vanished after a refused rm"
check "rm ctrtest-child" sn rm ctrtest-child
refuse "ctrtest-child is gone" "not found" info ctrtest-child
check "rm ctrtest-committed (no children now)" sn rm ctrtest-committed
refuse "ctrtest-committed is gone" "not found" info ctrtest-committed
check "rm ctrtest-view" sn rm ctrtest-view
expect_eq "ctr snapshots ls is back to the image's chain" "$(snap_table)" "$(want_chain)"
for dev in "$vsrc" "$asrc"; do
        [ ! -e "$dev" ] && ok "$dev is gone after rm" || bad "$dev still exists after its snapshot was removed"
done
timing[ctr-ops]=$(elapsed "$t0")

# ---------------------------------------------------------------------------------------------
say "ctr images rm and containerd's GC"
t0=$(date +%s.%N)
check "ctr images rm --sync $image" "${CTR[@]}" images rm --sync "$image"
no_snapshots() { [ -z "$(snap_table)" ]; }
no_content() { [ -z "$("${CTR[@]}" content ls -q)" ]; }
gc_done() {
        no_snapshots && no_content && return 0
        # Another synchronous GC in case the first one raced with the removal.
        "${CTR[@]}" leases create --id ctrtest-gc-again >/dev/null 2>&1 &&
                "${CTR[@]}" leases delete --sync ctrtest-gc-again >/dev/null 2>&1
        return 1
}
wait_for 120 "GC removed every snapshot and all content" gc_done ||
        bad "left after GC: snapshots [$(snap_table | tr '\n' ';')] content [$("${CTR[@]}" content ls -q | tr '\n' ' ')]"
timing[gc]=$(elapsed "$t0")

expect_base=0
[ "$mode" = thinsnap ] && expect_base=1
ids=$(pool_thin_ids) || bad "thin_ls on a metadata snapshot of $pool failed"
nids=$(grep -c . <<<"$ids")
expect_eq "thin devices left in the pool (thin_ls: [$(tr '\n' ' ' <<<"$ids")])" "$nids" "$expect_base"
if [ "$mode" = thinsnap ] && [ -n "${ids_before:-}" ]; then
        expect_eq "the device left is the base device thinsnapd had at start" "$(tr '\n' ' ' <<<"$ids")" "$ids_before"
fi
active=$(pool_active_thins)
while read -r name id; do
        [ -n "$name" ] || continue
        grep -qx "$id" <<<"$ids" && ok "active thin device $name ($id) is the one left in the pool" ||
                bad "active thin device $name maps id $id, which thin_ls does not list"
done <<<"$active"
nactive=$(grep -c . <<<"$active")
[ "$nactive" -le "$expect_base" ] && ok "$nactive active thin device(s) on the pool (at most $expect_base)" ||
        bad "$nactive active thin devices on the pool: $(tr '\n' ';' <<<"$active")"
expect_eq "thinsnap pool status --json active_devices agrees with dmsetup" \
        "$("$thinsnap" pool status "$pool" --json | jq -r '.active_devices[]' | sort | tr '\n' ' ')" \
        "$(awk 'NF { print $1 }' <<<"$active" | sort | tr '\n' ' ')"
mapped=$(awk '{ s += $2 } END { print s + 0 }' "$work/thin_ls")
expect_eq "pool's used data blocks equal the remaining devices' mapped blocks (nothing leaked)" \
        "$(pool_used_blocks)" "$mapped"
dmsetup ls | awk -v p="$pool" 'index($1, p "-") == 1 { print $1 }' >"$work/dmnames"
expect_eq "device-mapper names of the pool's devices match the active thins" \
        "$(sort "$work/dmnames" | tr '\n' ' ')" "$(awk 'NF { print $1 }' <<<"$active" | sort | tr '\n' ' ')"
say "pool after GC: $(dmsetup status "$pool")"

# ---------------------------------------------------------------------------------------------
say "stopping containerd and the snapshotter"
t0=$(date +%s.%N)
stop_daemon containerd "$ctd_pid" 60 && ok "containerd stopped on SIGTERM (status $stop_status)"
ctd_pid=
if [ -n "$tsd_pid" ]; then
        stop_daemon thinsnapd "$tsd_pid" 60 && expect_eq "thinsnapd exits 0 on SIGTERM" "$stop_status" 0
        tsd_pid=
        [ ! -S "$tsd_sock" ] && ok "thinsnapd removed its socket" || bad "thinsnapd left $tsd_sock behind"
fi
check "thinsnap pool destroy $pool --force --delete-files" \
        "$thinsnap" pool destroy "$pool" --force --delete-files && pool_made=0
left=$(dmsetup ls | awk -v p="$pool" '$1 == p || index($1, p "-") == 1 { print $1 }')
expect_eq "no device-mapper device of the pool is left" "$left" ""
timing[stop]=$(elapsed "$t0")
[ "$fails" -eq 0 ]
