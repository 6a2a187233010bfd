"""What the VM-lane service tests share: the Snapshots protocol compiled with
grpc_tools, a pool made with `thinsnap pool create`, thinsnapd started and
stopped, calls through python3-grpcio, and the pool's thin ids probed through
the DM ioctl (create_thin answers EEXIST for an id in use).

Used by crash_test.py and pool_test.py, inside the guest (root, dm-thin)."""
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

SVC = "/containerd.services.snapshots.v1.Snapshots/"

# struct dm_ioctl, and the DM_TARGET_MSG ioctl
DM_NAME_LEN, DM_UUID_LEN = 128, 129
HDR = struct.Struct(f"=3I I I I i I I I Q {DM_NAME_LEN}s {DM_UUID_LEN}s 7s")
DM_TARGET_MSG = (3 << 30) | (HDR.size << 16) | (0xFD << 8) | 14


class Harness:
    def __init__(self, bindir, src, pool, prefix):
        self.bindir, self.src, self.pool = bindir, src, pool
        self.work = tempfile.mkdtemp(prefix=prefix)
        gen = os.path.join(self.work, "gen")
        os.makedirs(gen)
        if protoc.main(["protoc", "-I" + src + "/proto", "--python_out=" + gen,
                        src + "/proto/containerd/types/mount.proto",
                        src + "/proto/containerd/services/snapshots/v1/snapshots.proto"]) != 0:
            sys.exit("protoc failed")
        sys.path.insert(0, gen)
        from containerd.services.snapshots.v1 import snapshots_pb2
        from google.protobuf import empty_pb2
        self.pb, self.empty = snapshots_pb2, empty_pb2.Empty
        self.sock = os.path.join(self.work, "ts.sock")
        self.log = open(os.path.join(self.work, "daemon.log"), "ab")
        self.env = dict(os.environ, THINSNAP_STATE_DIR=os.path.join(self.work, "state"))
        self.passed = self.failed = 0
        self.daemon = self.chan = None
        self.ctl = os.open("/dev/mapper/control", os.O_RDWR)

    # ---- results ----
    def check(self, name, got, want):
        if got == want:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {name}: got {got!r}, want {want!r}", flush=True)

    def ok(self, name, cond, detail=""):
        """check() for a condition; detail says what was seen."""
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {name} {detail}", flush=True)

    # ---- the pool ----
    def pool_create(self, *args):
        subprocess.run([self.bindir + "/cli/thinsnap", "pool", "create", self.pool,
                        "--data", self.work + "/data", "--meta", self.work + "/meta"] + list(args),
                       env=self.env, check=True, stdout=subprocess.DEVNULL)

    def pool_destroy(self):
        subprocess.run([self.bindir + "/cli/thinsnap", "pool", "destroy", self.pool, "--force",
                        "--delete-files"], env=self.env, stdout=subprocess.DEVNULL)

    def dm_message(self, dev, msg):
        body = struct.pack("=Q", 0) + msg.encode() + b"\0"
        size = HDR.size + len(body) + 64
        buf = bytearray(HDR.pack(4, 0, 0, size, HDR.size, 0, 0, 0, 0, 0, 0,
                                 dev.encode(), b"", b"") + body + bytes(64))
        try:
            fcntl.ioctl(self.ctl, DM_TARGET_MSG, buf)
            return 0
        except OSError as e:
            return e.errno

    def pool_ids(self, limit=40):
        ids = []
        for i in range(1, limit + 1):
            r = self.dm_message(self.pool, f"create_thin {i}")
            if r == 0:
                self.dm_message(self.pool, f"delete {i}")
            elif r == errno.EEXIST:
                ids.append(i)
            else:
                raise OSError(r, f"create_thin {i}")
        return ids

    def pool_status(self):
        """The pool's `dmsetup status` fields after the target name."""
        out = subprocess.run(["dmsetup", "status", self.pool], check=True, capture_output=True,
                             text=True).stdout.split()
        return out[3:]

    def active_devs(self):
        return sorted(d for d in os.listdir("/dev/mapper") if d.startswith(self.pool + "-snap-"))

    # ---- the daemon ----
    def start(self, *args, fault=None):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        e = dict(self.env)
        if fault:
            e["THINSNAPD_FAULT"] = fault
        self.daemon = subprocess.Popen([self.bindir + "/plugin/thinsnapd", "--root", self.work + "/root",
                                        "--pool", self.pool, "--address", self.sock, "--base-size", "64M"]
                                       + list(args), stderr=self.log, env=e)
        for _ in range(600):
            if os.path.exists(self.sock):
                break
            if self.daemon.poll() is not None:
                self.dump_log()
                sys.exit(f"thinsnapd exited {self.daemon.returncode} at start")
            time.sleep(0.1)
        self.chan = grpc.insecure_channel("unix:" + self.sock)
        grpc.channel_ready_future(self.chan).result(timeout=60)

    def stop(self):
        self.chan.close()
        self.daemon.send_signal(signal.SIGTERM)
        self.check("graceful stop", self.daemon.wait(timeout=120), 0)

    def start_once(self, fault=None):
        """Starts thinsnapd (with THINSNAPD_FAULT=fault) and waits until it
        exits (returns its status) or serves (then stops it; None)."""
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        d = subprocess.Popen([self.bindir + "/plugin/thinsnapd", "--root", self.work + "/root",
                              "--pool", self.pool, "--address", self.sock, "--base-size", "64M"],
                             stderr=self.log, env=dict(self.env, THINSNAPD_FAULT=fault or ""))
        for _ in range(3000):
            if d.poll() is not None:
                return d.returncode
            if os.path.exists(self.sock):
                d.send_signal(signal.SIGTERM)
                d.wait(timeout=120)
                return None
            time.sleep(0.1)
        d.kill()
        d.wait()
        return None

    def crashed(self):
        """Waits for the fault switch to kill the daemon."""
        self.chan.close()
        self.check("killed by the fault switch", self.daemon.wait(timeout=120), -signal.SIGKILL)

    def kill(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()

    # ---- calls: the response, or the status code's name; raw() keeps the error ----
    def raw(self, method, req, resp=None):
        fn = self.chan.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=(resp or self.empty).FromString)
        return fn(req, metadata=[("containerd-namespace", "default")], timeout=120)

    def call(self, method, req, resp=None):
        try:
            return self.raw(method, req, resp)
        except grpc.RpcError as e:
            return e.code().name

    def prepare(self, key, parent=""):
        r = self.call("Prepare", self.pb.PrepareSnapshotRequest(key=key, parent=parent),
                      self.pb.PrepareSnapshotResponse)
        return r if isinstance(r, str) else r.mounts[0].source

    def view(self, key, parent=""):
        r = self.call("View", self.pb.ViewSnapshotRequest(key=key, parent=parent), self.pb.ViewSnapshotResponse)
        return r if isinstance(r, str) else r.mounts[0].source

    def mounts(self, key):
        r = self.call("Mounts", self.pb.MountsRequest(key=key), self.pb.MountsResponse)
        return r if isinstance(r, str) else r.mounts[0].source

    def stat(self, key):
        r = self.call("Stat", self.pb.StatSnapshotRequest(key=key), self.pb.StatSnapshotResponse)
        return r if isinstance(r, str) else self.pb.Kind.Name(r.info.kind)

    def commit(self, name, key):
        r = self.call("Commit", self.pb.CommitSnapshotRequest(name=name, key=key))
        return r if isinstance(r, str) else "OK"

    def remove(self, key):
        r = self.call("Remove", self.pb.RemoveSnapshotRequest(key=key))
        return r if isinstance(r, str) else "OK"

    def list_names(self):
        fn = self.chan.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=self.pb.ListSnapshotsResponse.FromString)
        return sorted(i.name for resp in fn(self.pb.ListSnapshotsRequest(),
                                            metadata=[("containerd-namespace", "default")], timeout=120)
                      for i in resp.info)

    def rss(self, field="VmRSS"):
        """The daemon's memory, bytes: VmRSS now, or VmHWM (its peak)."""
        with open(f"/proc/{self.daemon.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def dump_log(self):
        self.log.flush()
        print("--- thinsnapd log")
        print(open(self.log.name).read())


def devid(source):
    return int(source.rsplit("-", 1)[1])
