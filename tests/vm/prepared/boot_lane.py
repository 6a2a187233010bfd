#!/usr/bin/python3
"""The guest half of vm-prepared-boot (runs in the QEMU lane: root, dm-thin): a pool,
thinsnapd with its provisioner, containerd 1.6 with thinsnapd as its proxy snapshotter, a
local docker-registry, the `thinsnap` CLI.

    boot_lane.py BINDIR SRCDIR WORKDIR OUTDIR

WORKDIR holds what the host made (image.tar + image.json from image.py, the static agent);
OUTDIR (the lane's results share) gets a sparse copy of each VM's device (vm1.img, vm2.img,
e2image -ra: only the blocks the filesystem uses) and facts.json for the host half, which
boots them. Checks here:
  - prepare: the agent layer's snapshot (written with inject/, committed in thinsnapd) mounted
    read-only has the same tree as containerd's own Diff.Apply of the same blobs on its native
    snapshotter (`ctr images mount` of the prepared record on both); prepared again: unchanged;
  - cutting two VMs from prepared:sha256:<hex> allocates no data block in the pool (pool used
    blocks equal before and after);
  - a write into VM 1's device reaches neither VM 2's device nor the prepared image's snapshot
    (its device content hashed before the cuts and at the end);
  - unprepare and teardown leave no device behind."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from lane import Failed, Lane  # noqa: E402
from registry import Registry  # noqa: E402

GUEST_PATH = "/.hpcc/agent"


def builder(lane):
    return [sys.executable, f"{lane.src}/tests/lib/build-image"]


def scan(lane, root):
    return json.loads(lane.run(builder(lane) + ["scan", root, "--ignore", "lost+found"],
                               check=True).stdout)


def mounted_tree(lane, name, snapshotter):
    """The image's tree as `ctr images mount` gives it (read-only: a view)."""
    mnt = f"{lane.work}/mnt-{snapshotter}"
    os.makedirs(mnt, exist_ok=True)
    lane.ctr("images", "mount", "--snapshotter", snapshotter, name, mnt)
    try:
        opts = next((ln.split()[3] for ln in open("/proc/mounts") if ln.split()[1] == mnt), "")
        lane.ok(f"{snapshotter}: mounted read-only", snapshotter == "native" or
                "ro" in opts.split(","), opts)
        return scan(lane, mnt)
    finally:
        lane.ctr("images", "unmount", "--rm", mnt, check=False)


def device_hash(lane, chain, key):
    """sha256 of a view of the committed snapshot chain: its whole device."""
    lane.ctr("snapshots", "--snapshotter", "thinsnap", "view", key, chain)
    try:
        m = lane.ctr("snapshots", "--snapshotter", "thinsnap", "mounts", "/x", key).stdout.split()
        dev = next(w for w in m if w.startswith("/dev/mapper/"))
        return lane.run(["sha256sum", dev], check=True).stdout.split()[0]
    finally:
        lane.ctr("snapshots", "--snapshotter", "thinsnap", "rm", key, check=False)


def used_blocks(lane):
    return lane.pool_status()["data"]["used_blocks"]


def prepare(lane, ref, digest, agent):
    p = lane.thinsnap("image", "prepare", ref, "--digest", digest, "--agent", agent, "--plain-http",
                      "--json", check=False, parse=False)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    x = lines[-1].get("prepared") if lines and p.returncode == 0 else None
    if not lane.ok("prepare exits 0", x is not None, p.stderr):
        raise Failed("prepare failed")
    return x


def debugfs_has(lane, dev, path):
    p = lane.run(["debugfs", "-R", f"stat {path}", dev])
    return p.returncode == 0 and "Inode:" in p.stdout


def main():
    bindir, src, work, out = sys.argv[1:5]
    # Small devices: the image is small, and their copies leave the guest.
    lane = Lane(bindir, src, "prepboot", base_size="64M")
    try:
        facts = json.load(open(f"{work}/image.json"))
        digest, agent = facts["target_digest"], f"{work}/agent"
        lane.pool_create()
        lane.start_thinsnapd()
        lane.start_containerd()
        reg = Registry(f"{lane.work}/registry", "plain")
        reg.start()
        reg.push(f"{work}/image.tar", "prep/boot:v1")
        ref = f"{reg.host}/prep/boot:v1"
        lane.say("prepare")
        x = prepare(lane, ref, digest, agent)
        lane.check("prepared: changed", x.get("changed"), True)
        lane.check("prepared: three layers", x.get("layers"), 3)
        lane.say("trees")
        mine = mounted_tree(lane, x["name"], "thinsnap")
        applied = mounted_tree(lane, x["name"], "native")
        lane.ok("the agent layer written with inject/ is the tree Diff.Apply of its blob gives",
                mine == applied and any(j["path"] == ".hpcc/agent" for j in mine.get("tree", [])),
                f"{json.dumps(mine)[:1500]} != {json.dumps(applied)[:1500]}")
        again = prepare(lane, ref, digest, agent)
        lane.check("prepared again: unchanged", again.get("changed"), False)
        before = device_hash(lane, x["chain_id"], "check-before")
        lane.say("cut two VMs")
        blocks = used_blocks(lane)
        devs = [lane.thinsnap("vm", "snapshot", vm, "prepared:" + digest).stdout.strip()
                for vm in ("vm1", "vm2")]
        lane.check("cutting two VMs from the prepared image allocates no data block",
                   used_blocks(lane), blocks)
        for vm, dev in zip(("vm1", "vm2"), devs):
            lane.ok(f"{vm}'s device has the agent", debugfs_has(lane, dev, GUEST_PATH), dev)
            lane.run(["e2image", "-ra", dev, f"{out}/{vm}.img"], check=True)
        lane.say("a write into VM 1's device")
        mnt = f"{lane.work}/vm1"
        os.makedirs(mnt)
        lane.run(["mount", devs[0], mnt], check=True)
        with open(f"{mnt}/guest-wrote", "w") as f:
            f.write("vm1\n")
        lane.run(["umount", mnt], check=True)
        lane.ok("the write is on VM 1's device", debugfs_has(lane, devs[0], "/guest-wrote"))
        lane.ok("... not on VM 2's", not debugfs_has(lane, devs[1], "/guest-wrote"))
        lane.check("the prepared image's snapshot is unchanged",
                   device_hash(lane, x["chain_id"], "check-after"), before)
        with open(f"{out}/facts.json", "w") as f:
            json.dump({"digest": digest, "guest_path": GUEST_PATH, "vms": ["vm1", "vm2"]}, f)
        lane.thinsnap("vm", "teardown", "vm1", "vm2")
        lane.thinsnap("image", "unprepare", digest)
        snaps = lane.ctr("snapshots", "--snapshotter", "thinsnap", "ls").stdout
        lane.ok("unprepared and torn down: the agent layer's snapshot is collected",
                x["chain_id"] not in snaps, snaps)
        lane.ok("... and no VM device is left", all(not os.path.exists(d) for d in devs))
        reg.stop()
    except (Failed, subprocess.CalledProcessError) as e:
        lane.ok("the run went through", False, str(e))
    lane.finish()


if __name__ == "__main__":
    main()
