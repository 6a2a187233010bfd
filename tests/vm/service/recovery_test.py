#!/usr/bin/python3
"""Start-up recovery against half-made and foreign devices, in the VM lane.

1. A snapshot's device left unusable while thinsnapd was down, as a process
   killed while making it leaves it (the test makes each state with dmsetup):
   created with no table, with its table loaded but not live, suspended, or
   without its /dev/mapper node. The next start makes it again: Stat says
   ACTIVE and the path Mounts returns mounts, with the files written before.
2. A device of a snapshot's name that is not that thin device of this pool
   (a `zero` target) is never removed: Remove of the snapshot is refused
   with the device named and leaves both as they were, and a start whose
   recovery meets one refuses to start, naming it.
3. Recovery itself killed, 16 times: a simulated reboot (every snapshot
   device removed) every other round, then a start killed by
   THINSNAPD_FAULT=recover:after-create or recover:after-load (between the
   device's create and its table load, or the load and the resume) at a
   different device each time; then a clean start: every active and view
   snapshot mounts with its files, the pool holds exactly the thin ids it
   held before, and exactly the active and view snapshots have a device.

Usage: recovery_test.py BUILD_DIR SOURCE_DIR"""
import os
import subprocess
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Harness, devid  # noqa: E402

bindir, src = sys.argv[1], sys.argv[2]
h = Harness(bindir, src, "rcv", "tsrecovery-")
POOL, work = h.pool, h.work
check, ok, start, stop, crashed = h.check, h.ok, h.start, h.stop, h.crashed
prepare, view, stat, commit, remove, mounts = h.prepare, h.view, h.stat, h.commit, h.remove, h.mounts
pool_ids, active_devs = h.pool_ids, h.active_devs
MNT = os.path.join(work, "mnt")
os.makedirs(MNT)
ROUNDS = 16  # each point at each of the 4 devices after a reboot, and again without one


def dmsetup(*args):
    return subprocess.run(["dmsetup"] + list(args), capture_output=True, text=True, timeout=120)


def name_of(dev_id):
    return f"{POOL}-snap-{dev_id}"


def mount_read(path, read_only=False, write=None):
    """Mounts path; writes `write` into /f or returns what /f holds (None when
    the mount fails, with the reason printed)."""
    opts = ["-o", "ro,noload"] if read_only else []
    try:
        r = subprocess.run(["mount", "-t", "ext4"] + opts + [path, MNT], capture_output=True, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        print(f"mount {path}: hung", flush=True)
        return None
    if r.returncode != 0:
        print(f"mount {path}: {r.stderr.strip()}", flush=True)
        return None
    try:
        f = os.path.join(MNT, "f")
        if write is not None:
            with open(f, "w") as fh:
                fh.write(write)
            return write
        return open(f).read() if os.path.exists(f) else ""
    finally:
        subprocess.run(["umount", MNT], check=True, timeout=120)


def table_of(name):
    r = dmsetup("table", name)
    return r.stdout.strip() if r.returncode == 0 else None


try:
    h.pool_create("--data-size", "2G")
    start()
    check("set-up p", mount_read(prepare("p"), write="parent"), "parent")
    check("set-up commit P", commit("P", "p"), "OK")
    x = devid(prepare("x", "P"))
    check("set-up x", mount_read(mounts("x"), write="x"), "x")
    stop()
    ids = pool_ids()

    # 1. Half-made devices, the reproduction first: a Commit killed
    # after the deactivate, and the device then created with no table.
    start(fault="commit:after-deactivate")
    commit("X", "x")
    crashed()
    table = f"0 {64 << 11} thin {os.major(os.stat('/dev/mapper/' + POOL).st_rdev)}:" \
            f"{os.minor(os.stat('/dev/mapper/' + POOL).st_rdev)} {x}"
    states = [
        ("created with no table", [("create", name_of(x), "--notable")]),
        ("table loaded, not live", [("create", name_of(x), "--notable"), ("load", name_of(x), "--table", table)]),
        ("suspended", [("create", name_of(x), "--table", table), ("suspend", name_of(x))]),
        ("without its node", [("create", name_of(x), "--table", table), ("rmnode",)]),
    ]
    for what, steps in states:
        dmsetup("remove", name_of(x))
        for st in steps:
            if st[0] == "rmnode":
                os.unlink("/dev/mapper/" + name_of(x))
            else:
                r = dmsetup(*st)
                check(f"{what}: dmsetup {st[0]}", (r.returncode, r.stderr), (0, ""))
        start()
        check(f"{what}: x active", stat("x"), "ACTIVE")
        check(f"{what}: x mounts with its file", mount_read(mounts("x")), "x")
        check(f"{what}: devices", active_devs(), [name_of(x)])
        stop()

    # 2. A device of x's name that is not x's: never removed.
    start()
    dmsetup("remove", name_of(x))
    check("foreign: created", dmsetup("create", name_of(x), "--table", "0 8 zero").returncode, 0)
    try:
        h.raw("Remove", h.pb.RemoveSnapshotRequest(key="x"))
        check("foreign: remove refused", "OK", "FAILED_PRECONDITION")
    except grpc.RpcError as e:
        check("foreign: remove refused", e.code().name, "FAILED_PRECONDITION")
        ok("foreign: the refusal names the device and its table",
           f"device {name_of(x)} is not thin device {x} of pool {POOL}" in e.details() and
           "zero" in e.details(), e.details())
    check("foreign: left as it was", table_of(name_of(x)), "0 8 zero")
    check("foreign: x still there", stat("x"), "ACTIVE")
    stop()
    h.log.flush()
    seen = os.path.getsize(h.log.name)
    rc = h.start_once()
    with open(h.log.name) as f:
        f.seek(seen)
        said = f.read()
    check("foreign: start refused", (rc, f"device {name_of(x)} is not thin device" in said), (1, True))
    check("foreign: still left as it was", table_of(name_of(x)), "0 8 zero")
    dmsetup("remove", name_of(x))
    start()
    check("foreign gone: x mounts", mount_read(mounts("x")), "x")
    stop()

    # 3. Recovery killed again and again.
    start()
    keep = {"x": "x"}
    for k in ("a", "b"):
        keep[k] = mount_read(prepare(k, "P"), write=k)
    check("soak set-up: view", view("v", "P").startswith("/dev/mapper/"), True)
    keep["v"] = "parent"
    devs = sorted(name_of(devid(mounts(k))) for k in keep)
    stop()
    ids = pool_ids()
    killed = 0
    for i in range(ROUNDS):
        reboot = i % 2 == 0
        if reboot:
            dmsetup("remove", *devs)
        point = "after-create" if i < ROUNDS // 2 else "after-load"
        nth = (i // 2) % len(devs) + 1 if reboot else 1
        rc = h.start_once(f"recover:{point}:{nth}")
        killed += rc == -9
        if rc != -9:
            print(f"round {i}: recover:{point}:{nth} did not kill thinsnapd (status {rc})", flush=True)
    check("soak: every start killed in its recovery", killed, ROUNDS)
    start()
    for k, content in sorted(keep.items()):
        check(f"soak: {k} mounts with its file", mount_read(mounts(k), read_only=(k == "v")), content)
    check("soak: pool ids", pool_ids(), ids)
    check("soak: no dangling device", active_devs(), devs)
    stop()
finally:
    h.kill()
    subprocess.run(["umount", MNT], capture_output=True)
    h.pool_destroy()
    if h.failed:
        h.dump_log()

print(f"recovery-test: {h.passed} passed, {h.failed} failed")
sys.exit(1 if h.failed else 0)
