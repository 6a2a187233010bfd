#!/usr/bin/env bash
# What a VM manager does with thinsnap, end to end, on a host with device-mapper (as root; the
# QEMU lane is one): a thin pool, thinsnapd serving containerd's Snapshots API and thinsnap's
# provisioner, containerd with thinsnapd as its proxy snapshotter, a local registry holding a
# test image, then the provisioner's commands a manager would run.
#
#   demo-provision.sh BUILD_DIR IMAGE_DIR
#
# BUILD_DIR holds cli/thinsnap and plugin/thinsnapd; IMAGE_DIR an image from
# tests/lib/build-image (image.tar). Everything lives under a temporary directory and
# /run/thinsnap-demo and is removed at the end.
set -euo pipefail
build=${1:?usage: demo-provision.sh BUILD_DIR IMAGE_DIR}
image_dir=${2:?usage: demo-provision.sh BUILD_DIR IMAGE_DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
thinsnap=$build/cli/thinsnap
thinsnapd=$build/plugin/thinsnapd

work=$(mktemp -d /tmp/thinsnap-demo.XXXXXX)
run=/run/thinsnap-demo
mkdir -p "$run"
export THINSNAP_STATE_DIR=$work/pools THINSNAP_ADDRESS=$run/provisioner.sock DM_DISABLE_UDEV=1
pids=()
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
        /usr/bin/python3 "$top/tests/lib/registry.py" stop "$work/registry" >/dev/null 2>&1 || true
        "$thinsnap" pool destroy demo --force --delete-files >/dev/null 2>&1 || true
        rm -rf "$work" "$run"
}
trap cleanup EXIT
wait_for() { # wait_for SECONDS WHAT COMMAND...
        local limit=$1 what=$2 i
        shift 2
        for ((i = 0; i < limit * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
        echo "demo: $what did not come up; its log:" >&2
        tail -n 20 "$work"/*.log >&2
        exit 1
}

step "A thin pool on sparse files"
show "$thinsnap" pool create demo --data "$work/data" --data-size 8G --meta "$work/meta"
show "$thinsnap" pool status demo

step "thinsnapd: containerd's snapshotter, and the provisioner on $THINSNAP_ADDRESS"
"$thinsnapd" --root "$work/thinsnapd" --pool demo --address "$run/thinsnapd.sock" --base-size 1G \
        --provisioner-address "$THINSNAP_ADDRESS" --containerd-address "$run/containerd.sock" \
        >"$work/thinsnapd.log" 2>&1 &
pids+=($!)
wait_for 60 thinsnapd test -S "$THINSNAP_ADDRESS"
echo "thinsnapd is up (log: $work/thinsnapd.log)"

step "containerd with thinsnapd as its proxy plugin 'thinsnap'"
cat >"$work/containerd.toml" <<EOF
version = 2
root = "$work/containerd"
state = "$run/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[proxy_plugins.thinsnap]
  type = "snapshot"
  address = "$run/thinsnapd.sock"
EOF
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
wait_for 90 containerd ctr --address "$run/containerd.sock" version
echo "containerd is up"

step "A local registry with a test image (docker-registry, skopeo)"
host=$(/usr/bin/python3 "$top/tests/lib/registry.py" start "$work/registry" |
        /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["host"])')
/usr/bin/python3 "$top/tests/lib/registry.py" push "$work/registry" "$image_dir/image.tar" demo/app:v1
ref=$host/demo/app:v1
echo "pushed $ref"

step "Warm the image into the pool (pull + unpack through containerd)"
show "$thinsnap" image pull "$ref"
show "$thinsnap" image ls
show "$thinsnap" image config "$ref"

step "Three VMs, each a private copy-on-write device"
for vm in vm1 vm2 vm3; do
        dev=$("$thinsnap" vm snapshot "$vm" "$ref")
        echo "$vm: $dev"
done
show "$thinsnap" vm ls
show "$thinsnap" pool status demo

step "The guest agent, written into vm1's filesystem without mounting it"
printf '#!/bin/sh\necho agent ready\n' >"$work/agent"
show "$thinsnap" vm inject vm1 "$work/agent" /usr/local/bin/agent --mode 0755
dev=$("$thinsnap" vm snapshot vm1 "$ref")
mkdir -p "$work/mnt"
mount -o ro "$dev" "$work/mnt"
echo "on vm1's device: $(ls -l "$work/mnt/usr/local/bin/agent")"
umount "$work/mnt"

step "Teardown: vm1 alone, then a manager's reconcile keeping vm2"
show "$thinsnap" vm teardown vm1
show "$thinsnap" vm gc --keep vm2
show "$thinsnap" vm ls
show "$thinsnap" vm teardown vm2
show "$thinsnap" pool status demo
