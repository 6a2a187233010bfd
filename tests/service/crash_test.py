#!/usr/bin/python3
"""Crash safety of thinsnapd, in the VM lane (root, dm-thin).

thinsnapd is killed (SIGKILL, by its own fault-injection switch
THINSNAPD_FAULT=<op>:<point>) between every two steps of Prepare, Commit and
Remove. After a restart the interrupted operation must be rolled back or
completed, no thin device may exist without a record nor a record without
its device, and the same operation must then succeed.

Usage: crash_test.py BUILD_DIR SOURCE_DIR"""
import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

bindir, src = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="tscrash-")
gen = os.path.join(work, "gen")
os.makedirs(gen)
if protoc.main(["protoc", "-I" + src + "/proto", "--python_out=" + gen,
                src + "/proto/containerd/types/mount.proto",
                src + "/proto/containerd/services/snapshots/v1/snapshots.proto"]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, gen)
from containerd.services.snapshots.v1 import snapshots_pb2 as pb  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402

POOL = "crash"
SOCK = os.path.join(work, "ts.sock")
LOG = open(os.path.join(work, "daemon.log"), "ab")
env = dict(os.environ, THINSNAP_STATE_DIR=os.path.join(work, "state"))
passed = failed = 0


def check(name, got, want):
    global passed, failed
    if got == want:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name}: got {got!r}, want {want!r}", flush=True)


# ---- the pool's thin ids, probed with create_thin through the DM ioctl ----
DM_NAME_LEN, DM_UUID_LEN = 128, 129
HDR = struct.Struct(f"=3I I I I i I I I Q {DM_NAME_LEN}s {DM_UUID_LEN}s 7s")  # struct dm_ioctl
DM_TARGET_MSG = (3 << 30) | (HDR.size << 16) | (0xFD << 8) | 14
ctl = os.open("/dev/mapper/control", os.O_RDWR)


def dm_message(dev, msg):
    body = struct.pack("=Q", 0) + msg.encode() + b"\0"
    size = HDR.size + len(body) + 64
    buf = bytearray(HDR.pack(4, 0, 0, size, HDR.size, 0, 0, 0, 0, 0, 0,
                             dev.encode(), b"", b"") + body + bytes(64))
    try:
        fcntl.ioctl(ctl, DM_TARGET_MSG, buf)
        return 0
    except OSError as e:
        return e.errno


def pool_ids(limit=40):
    ids = []
    for i in range(1, limit + 1):
        r = dm_message(POOL, f"create_thin {i}")
        if r == 0:
            dm_message(POOL, f"delete {i}")
        elif r == errno.EEXIST:
            ids.append(i)
        else:
            raise OSError(r, f"create_thin {i}")
    return ids


def active_devs():
    return sorted(d for d in os.listdir("/dev/mapper") if d.startswith(POOL + "-snap-"))


# ---- the daemon ----
daemon = None
chan = None


def start(fault=None):
    global daemon, chan
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    e = dict(env)
    if fault:
        e["THINSNAPD_FAULT"] = fault
    daemon = subprocess.Popen([bindir + "/plugin/thinsnapd", "--root", work + "/root", "--pool", POOL,
                               "--address", SOCK, "--base-size", "64M"], stderr=LOG, env=e)
    for _ in range(600):
        if os.path.exists(SOCK):
            break
        if daemon.poll() is not None:
            sys.exit(f"thinsnapd exited {daemon.returncode} at start; see {LOG.name}")
        time.sleep(0.1)
    chan = grpc.insecure_channel("unix:" + SOCK)
    grpc.channel_ready_future(chan).result(timeout=60)


def stop():
    chan.close()
    daemon.send_signal(signal.SIGTERM)
    check("graceful stop", daemon.wait(timeout=120), 0)


def crashed():
    """Waits for the fault switch to kill the daemon."""
    chan.close()
    check("killed by the fault switch", daemon.wait(timeout=120), -signal.SIGKILL)


def call(method, req, resp=empty_pb2.Empty):
    fn = chan.unary_unary("/containerd.services.snapshots.v1.Snapshots/" + method,
                          request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp.FromString)
    try:
        return fn(req, metadata=[("containerd-namespace", "default")], timeout=120)
    except grpc.RpcError as e:
        return e.code().name


def prepare(key, parent=""):
    r = call("Prepare", pb.PrepareSnapshotRequest(key=key, parent=parent), pb.PrepareSnapshotResponse)
    return r if isinstance(r, str) else r.mounts[0].source


def stat(key):
    r = call("Stat", pb.StatSnapshotRequest(key=key), pb.StatSnapshotResponse)
    return r if isinstance(r, str) else pb.Kind.Name(r.info.kind)


def commit(name, key):
    r = call("Commit", pb.CommitSnapshotRequest(name=name, key=key))
    return r if isinstance(r, str) else "OK"


def remove(key):
    r = call("Remove", pb.RemoveSnapshotRequest(key=key))
    return r if isinstance(r, str) else "OK"


def devid(source):
    return int(source.rsplit("-", 1)[1])


try:
    subprocess.run([bindir + "/provision/thinsnap", "pool", "create", POOL, "--data", work + "/data",
                    "--data-size", "2G", "--meta", work + "/meta"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    start()
    check("set-up prepare", prepare("p").startswith("/dev/mapper/"), True)
    check("set-up commit", commit("P", "p"), "OK")
    stop()
    base = pool_ids()
    check("ids at start (base, P)", len(base), 2)

    for point in ("after-record", "after-snap", "after-activate"):
        start("prepare:" + point)
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
    start("commit:after-deactivate")
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
        start("remove:" + point)
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
    if daemon and daemon.poll() is None:
        daemon.kill()
    subprocess.run([bindir + "/provision/thinsnap", "pool", "destroy", POOL, "--force", "--delete-files"],
                   env=env, stdout=subprocess.DEVNULL)
    if failed:
        LOG.flush()
        print("--- thinsnapd log")
        print(open(LOG.name).read())

print(f"crash-test: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
