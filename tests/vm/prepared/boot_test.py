#!/usr/bin/python3
"""vm-prepared-boot: a prepared image boots (issue 10).

    boot_test.py SRCDIR BINDIR WORKDIR VM_CACHE [TIMEOUT]

On the host: builds a small user image (image.py: an /etc/os-release, a few files) and a
static agent from agent.c; then runs boot_lane.py in the QEMU lane, which prepares the image
through thinsnapd, cuts two VMs from it and leaves a sparse copy of each VM's device on the
results share; then boots each copy here with QEMU on Debian's kernel from the lane's cache,
`root=/dev/vda init=/.hpcc/agent` (boot.py). Booting in the lane's guest would be QEMU/TCG
inside QEMU/TCG: measured at over ten minutes per boot against about eight seconds here.
Checks: both VMs print the agent's marker and the image's os-release; the file VM 1's agent
wrote is on VM 1's device and not on VM 2's (and the other way round)."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "..", "lib"))
import boot  # noqa: E402
import image  # noqa: E402
from lane import Tally  # noqa: E402

MARKER = "THINSNAP-PREPARED-AGENT"


def debugfs_cat(img, path):
    p = subprocess.run(["debugfs", "-R", f"cat {path}", img], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 and "File not found" not in p.stderr else None


def build_inputs(work):
    os.makedirs(work, exist_ok=True)
    facts = image.build(f"{work}/image.tar", "docker.io/prep/boot:v1")
    with open(f"{work}/image.json", "w") as f:
        json.dump(facts, f)
    subprocess.run(["cc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", f"{work}/agent",
                    f"{here}/agent.c"], check=True)


def run_lane(src, bindir, work, cache, timeout, tmp):
    """boot_lane.py in the guest; returns its status and the kept results directory."""
    env = dict(os.environ, TMPDIR=tmp)
    argv = [f"{src}/tests/vm/run", "--cache", cache, "--timeout", str(timeout), "--keep", "--",
            "/usr/bin/python3", f"{here}/boot_lane.py", bindir, src, work, "/run/ts-vm"]
    rc = subprocess.run(argv, env=env).returncode
    kept = glob.glob(f"{tmp}/ts-vm.*")
    return rc, kept[0] if len(kept) == 1 else None


def boots(t, cache, results, facts):
    initramfs = f"{results}/boot-initramfs.gz"
    boot.build_initramfs(f"{cache}/kernel", initramfs)
    for vm in facts["vms"]:
        img = f"{results}/{vm}.img"
        if not t.ok(f"{vm}: a copy of its device came out of the lane", os.path.exists(img)):
            continue
        console, secs = boot.boot(f"{cache}/kernel", initramfs, img, facts["guest_path"], vm)
        print(f"[{vm}: booted and powered off in {secs:.1f} s]", flush=True)
        t.ok(f"{vm}: the agent ran as init and printed its marker",
             f"{MARKER} start vm={vm} pid=1 proc=ok" in console, console[-1500:])
        t.ok(f"{vm}: it read the image's /etc/os-release",
             f'{MARKER} os-release: PRETTY_NAME="thinsnap prepared-image test"' in console)
        t.ok(f"{vm}: it wrote its file", f"{MARKER} wrote=ok vm={vm}" in console)
    vm1, vm2 = (f"{results}/{vm}.img" for vm in facts["vms"])
    if os.path.exists(vm1) and os.path.exists(vm2):
        t.ok("VM 1's file is on VM 1's device", debugfs_cat(vm1, "/agent-wrote-vm1") ==
             "written by the agent in VM vm1\n")
        t.ok("... and not on VM 2's", debugfs_cat(vm2, "/agent-wrote-vm1") is None)
        t.ok("VM 2's file is on VM 2's device only", debugfs_cat(vm2, "/agent-wrote-vm2") and
             debugfs_cat(vm1, "/agent-wrote-vm2") is None)
        fsck = subprocess.run(["e2fsck", "-fn", vm1], capture_output=True, text=True)
        t.ok("VM 1's filesystem is clean after the boot", fsck.returncode == 0, fsck.stdout[-800:])


def main():
    src, bindir, work, cache = sys.argv[1:5]
    timeout = int(sys.argv[5]) if len(sys.argv) > 5 else 900
    t = Tally()
    build_inputs(work)
    tmp = tempfile.mkdtemp(prefix="prepared-boot.")
    try:
        t0 = time.monotonic()
        rc, results = run_lane(src, bindir, work, cache, timeout, tmp)
        print(f"[lane: {time.monotonic() - t0:.1f} s]", flush=True)
        t.ok("the lane half passed", rc == 0, f"status {rc}")
        facts = f"{results}/facts.json" if results else ""
        if t.ok("the lane half left its facts", os.path.exists(facts)):
            boots(t, cache, results, json.load(open(facts)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    sys.exit(1 if t.failed else 0)


if __name__ == "__main__":
    main()
