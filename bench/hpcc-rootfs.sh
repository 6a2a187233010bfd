#!/usr/bin/env bash
# The peer of `thinsnap image prepare` in bench/run-prepared-bench.sh: what hpcc's rootfs
# backend does to give a VM an image with its agent. Pull (skopeo into an OCI layout),
# flatten (each layer's tar extracted in order with GNU tar, OCI whiteouts of a layer applied
# to what is below it first; xattrs are not kept: the lane's tmpfs takes none), a fresh ext4
# file (mkfs.ext4, sized at 1.5 times the tree plus 64 MiB) filled through a loop mount, the
# agent at /.hpcc/agent (0755) and each of /proc /sys /dev /tmp /run the image lacks made.
#
#   hpcc-rootfs.sh REF AGENT OUT.ext4 WORKDIR      (REF on a plain-HTTP registry)
set -euo pipefail
ref=$1 agent=$2 out=$3 work=$4
root=$work/rootfs mnt=$work/mnt
mkdir -p "$work" "$root" "$mnt"

skopeo --tmpdir "$work" copy -q --insecure-policy --src-tls-verify=false \
  "docker://$ref" "oci:$work/oci:img" >/dev/null

layers=$(python3 - "$work/oci" <<'PY'
import json, sys
d = sys.argv[1]
ix = json.load(open(f"{d}/index.json"))
m = ix["manifests"][0]["digest"].split(":")[1]
for layer in json.load(open(f"{d}/blobs/sha256/{m}"))["layers"]:
    print(layer["digest"].split(":")[1])
PY
)
for hex in $layers; do
  f=$work/oci/blobs/sha256/$hex
  while IFS= read -r w; do
    dir=$(dirname "$w") base=$(basename "$w")
    if [ "$base" = .wh..wh..opq ]; then
      find "$root/$dir" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    else
      rm -rf "${root:?}/$dir/${base#.wh.}"
    fi
  done < <(tar -tf "$f" | grep -E '(^|/)\.wh\.' || true)
  tar -xf "$f" -C "$root" --numeric-owner --same-permissions --recursive-unlink --exclude='.wh.*'
done

bytes=$(du -sb "$root" | cut -f1)
truncate -s $((bytes * 3 / 2 + (64 << 20))) "$out"
mkfs.ext4 -q -F "$out"
mount -o loop "$out" "$mnt"
cp -a "$root/." "$mnt/"
mkdir -p "$mnt/.hpcc"
install -m 0755 "$agent" "$mnt/.hpcc/agent"
for d in proc:555 sys:555 dev:755 tmp:1777 run:755; do
  [ -e "$mnt/${d%:*}" ] || [ -L "$mnt/${d%:*}" ] || mkdir -m "${d#*:}" "$mnt/${d%:*}"
done
umount "$mnt"
