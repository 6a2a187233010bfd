#!/usr/bin/python3
"""Crash safety of thinsnapd, in the VM lane (root, dm-thin).

thinsnapd is killed (SIGKILL, by its own fault-injection switch
THINSNAPD_FAULT=<op>:<point>) between every two steps of Prepare, Commit and
Remove. After a restart the interrupted operation must be rolled back or
completed, no thin device may exist without a record nor a record without
its device, and the same operation must then succeed.

Usage: crash_test.py BUILD_DIR SOURCE_DIR"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Harness, devid  # noqa: E402

bindir, src = sys.argv[1], sys.argv[2]
h = Harness(bindir, src, "crash", "tscrash-")
POOL, work, env = h.pool, h.work, h.env
check, start, stop, crashed = h.check, h.start, h.stop, h.crashed
prepare, stat, commit, remove = h.prepare, h.stat, h.commit, h.remove
pool_ids, active_devs = h.pool_ids, h.active_devs


try:
    h.pool_create("--data-size", "2G")
    start()
    check("set-up prepare", prepare("p").startswith("/dev/mapper/"), True)
    check("set-up commit", commit("P", "p"), "OK")
    stop()
    base = pool_ids()
    check("ids at start (base, P)", len(base), 2)

    for point in ("after-record", "after-snap", "after-activate"):
        start(fault="prepare:" + point)
        prepare("x", "P")
        crashed()
        start()
        check(f"prepare:{point}: rolled back", stat("x"), "NOT_FOUND")
        check(f"prepare:{point}: pool ids", pool_ids(), base)
        check(f"prepare:{point}: active devices", active_devs(), [])
        check(f"prepare:{point}: prepare again", prepare("x", "P").startswith("/dev/mapper/"), True)
        check(f"prepare:{point}: active", stat("x"), "ACTIVE")
        check(f"prepare:{point}: remove", remove("x"), "OK")
        stop()

    start()
    x = devid(prepare("x", "P"))
    stop()
    start(fault="commit:after-deactivate")
    commit("X", "x")
    crashed()
    start()
    check("commit: still active", stat("x"), "ACTIVE")
    check("commit: device active again", active_devs(), [f"{POOL}-snap-{x}"])
    check("commit: commit again", commit("X", "x"), "OK")
    check("commit: committed", stat("X"), "COMMITTED")
    check("commit: pool ids", pool_ids(), sorted(base + [x]))
    check("commit: remove", remove("X"), "OK")
    stop()

    for point in ("after-mark", "after-deactivate", "after-delete"):
        start()
        prepare("y", "P")
        stop()
        start(fault="remove:" + point)
        remove("y")
        crashed()
        start()
        check(f"remove:{point}: finished", stat("y"), "NOT_FOUND")
        check(f"remove:{point}: pool ids", pool_ids(), base)
        check(f"remove:{point}: active devices", active_devs(), [])
        stop()

    # A missing pool is refused at start with a clear message.
    r = subprocess.run([bindir + "/plugin/thinsnapd", "--root", work + "/root2", "--pool", "nosuchpool",
                        "--address", work + "/x.sock"], capture_output=True, text=True)
    check("missing pool refused", (r.returncode, "pool nosuchpool does not exist" in r.stderr), (1, True))
finally:
    h.kill()
    h.pool_destroy()
    if h.failed:
        h.dump_log()

print(f"crash-test: {h.passed} passed, {h.failed} failed")
sys.exit(1 if h.failed else 0)
