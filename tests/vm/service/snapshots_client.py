#!/usr/bin/python3
"""Drives thinsnapd's Snapshots service with python3-grpcio, an independent gRPC
implementation: containerd's semantics, and bad inputs that must get the
right status codes. Usage: snapshots_client.py SOCKET PROTO_DIR"""
import os
import subprocess
import sys
import tempfile

import grpc

sock, proto_dir = sys.argv[1], sys.argv[2]
gen = tempfile.mkdtemp(prefix="tsproto-")
from grpc_tools import protoc  # noqa: E402

files = ["google/protobuf/empty.proto", "google/protobuf/timestamp.proto",
         "google/protobuf/field_mask.proto", "containerd/types/mount.proto",
         "containerd/services/snapshots/v1/snapshots.proto"]
if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + gen] +
               [os.path.join(proto_dir, f) for f in files[3:]]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, gen)
from containerd.services.snapshots.v1 import snapshots_pb2 as pb  # noqa: E402
from google.protobuf import empty_pb2, field_mask_pb2  # noqa: E402

chan = grpc.insecure_channel("unix:" + sock)
grpc.channel_ready_future(chan).result(timeout=30)
SVC = "/containerd.services.snapshots.v1.Snapshots/"
NS = [("containerd-namespace", "pytest")]
passed = failed = 0


def unary(method, req, resp_cls, md=NS, timeout=60):
    fn = chan.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)
    return fn(req, metadata=md, timeout=timeout)


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}")


def expect_code(name, code, f):
    try:
        f()
    except grpc.RpcError as e:
        check(name, e.code() == code, f"got {e.code()} {e.details()!r}, want {code}")
        return e
    check(name, False, f"succeeded, want {code}")
    return None


C = grpc.StatusCode
# Semantics
r = unary("Prepare", pb.PrepareSnapshotRequest(key="a", labels={"l1": "v1"}), pb.PrepareSnapshotResponse)
check("prepare mounts", len(r.mounts) == 1 and r.mounts[0].type == "ext4" and
      r.mounts[0].source.startswith("/dev/mapper/") and list(r.mounts[0].options) == [], str(r))
check("prepare device exists", os.path.exists(r.mounts[0].source))
src_a = r.mounts[0].source
st = unary("Stat", pb.StatSnapshotRequest(key="a"), pb.StatSnapshotResponse)
check("stat active", st.info.kind == pb.ACTIVE and st.info.name == "a" and st.info.labels["l1"] == "v1"
      and st.info.created_at.seconds > 0, str(st))
expect_code("prepare twice", C.ALREADY_EXISTS,
            lambda: unary("Prepare", pb.PrepareSnapshotRequest(key="a"), pb.PrepareSnapshotResponse))
m = unary("Mounts", pb.MountsRequest(key="a"), pb.MountsResponse)
check("mounts", m.mounts[0].source == src_a)
# write something into the active snapshot's filesystem
mnt = tempfile.mkdtemp(prefix="tsmnt-")
subprocess.run(["mount", "-t", "ext4", src_a, mnt], check=True)
with open(os.path.join(mnt, "hello"), "wb") as f:
    f.write(os.urandom(1 << 20))
subprocess.run(["umount", mnt], check=True)
u = unary("Usage", pb.UsageRequest(key="a"), pb.UsageResponse)
check("usage of active counts its own writes", u.size >= (1 << 20), str(u))
expect_code("commit while mounted elsewhere? no: commit of missing key", C.NOT_FOUND,
            lambda: unary("Commit", pb.CommitSnapshotRequest(key="nope", name="x"), empty_pb2.Empty))
unary("Commit", pb.CommitSnapshotRequest(key="a", name="A", labels={"c": "1"}), empty_pb2.Empty)
check("committed device inactive", not os.path.exists(src_a))
st = unary("Stat", pb.StatSnapshotRequest(key="A"), pb.StatSnapshotResponse)
check("stat committed", st.info.kind == pb.COMMITTED and dict(st.info.labels) == {"c": "1"}, str(st))
expect_code("stat old key", C.NOT_FOUND, lambda: unary("Stat", pb.StatSnapshotRequest(key="a"), pb.StatSnapshotResponse))
expect_code("mounts of committed", C.FAILED_PRECONDITION,
            lambda: unary("Mounts", pb.MountsRequest(key="A"), pb.MountsResponse))
expect_code("commit of committed", C.FAILED_PRECONDITION,
            lambda: unary("Commit", pb.CommitSnapshotRequest(key="A", name="B"), empty_pb2.Empty))
u = unary("Usage", pb.UsageRequest(key="A"), pb.UsageResponse)
check("usage of committed", u.size >= (1 << 20), str(u))
r = unary("Prepare", pb.PrepareSnapshotRequest(key="b", parent="A"), pb.PrepareSnapshotResponse)
subprocess.run(["mount", "-t", "ext4", "-o", "ro", r.mounts[0].source, mnt], check=True)
check("child sees parent's file", os.path.getsize(os.path.join(mnt, "hello")) == 1 << 20)
subprocess.run(["umount", mnt], check=True)
v = unary("View", pb.ViewSnapshotRequest(key="v", parent="A"), pb.ViewSnapshotResponse)
check("view is ro", list(v.mounts[0].options) == ["ro"], str(v))
expect_code("commit onto an existing name", C.ALREADY_EXISTS,
            lambda: unary("Commit", pb.CommitSnapshotRequest(key="b", name="A"), empty_pb2.Empty))
st = unary("Stat", pb.StatSnapshotRequest(key="b"), pb.StatSnapshotResponse)
check("refused commit leaves the active snapshot", st.info.kind == pb.ACTIVE and st.info.parent == "A", str(st))
check("refused commit leaves its device", os.path.exists(r.mounts[0].source))
expect_code("prepare on active parent", C.INVALID_ARGUMENT,
            lambda: unary("Prepare", pb.PrepareSnapshotRequest(key="c", parent="b"), pb.PrepareSnapshotResponse))
expect_code("prepare on missing parent", C.NOT_FOUND,
            lambda: unary("Prepare", pb.PrepareSnapshotRequest(key="c", parent="zz"), pb.PrepareSnapshotResponse))
expect_code("remove parent with children", C.FAILED_PRECONDITION,
            lambda: unary("Remove", pb.RemoveSnapshotRequest(key="A"), empty_pb2.Empty))
# Update with field masks
up = unary("Update", pb.UpdateSnapshotRequest(info=pb.Info(name="b", labels={"x": "1", "y": "2"}),
                                              update_mask=field_mask_pb2.FieldMask(paths=["labels.x"])),
           pb.UpdateSnapshotResponse)
check("update labels.x", dict(up.info.labels) == {"x": "1"}, str(up))
expect_code("update bad path", C.INVALID_ARGUMENT,
            lambda: unary("Update", pb.UpdateSnapshotRequest(info=pb.Info(name="b"),
                                                             update_mask=field_mask_pb2.FieldMask(paths=["kind"])),
                          pb.UpdateSnapshotResponse))


def list_names(filters=()):
    fn = chan.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=pb.ListSnapshotsResponse.FromString)
    return sorted(i.name for resp in fn(pb.ListSnapshotsRequest(filters=list(filters)), metadata=NS, timeout=60)
                  for i in resp.info)


check("list all", list_names() == ["A", "b", "v"], str(list_names()))
check("list kind", list_names(['kind==committed']) == ["A"])
check("list or", list_names(['kind==view', 'name==b']) == ["b", "v"])
check("list labels", list_names(['labels."x"==1']) == ["b"])
check("list parent", list_names(['parent==A,kind==active']) == ["b"])
check("list regexp", list_names(['name~=^[a-z]$']) == ["b", "v"])
expect_code("list bad filter", C.INVALID_ARGUMENT, lambda: list_names(['name==']))
# One key space, whatever namespace header a call carries: containerd namespaces the keys it
# hands a proxy snapshotter itself, and 2.x sends its caller's namespace on Prepare but none on
# the walk its garbage collector makes.
other = [("containerd-namespace", "other")]
check("another namespace header lists the same keys",
      sorted(i.name for resp in chan.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                                                  response_deserializer=pb.ListSnapshotsResponse.FromString)(
          pb.ListSnapshotsRequest(), metadata=other, timeout=60) for i in resp.info) == ["A", "b", "v"])
check("no namespace header: the same keys",
      unary("Stat", pb.StatSnapshotRequest(key="A"), pb.StatSnapshotResponse, md=[]).info.name == "A")
r = unary("Prepare", pb.PrepareSnapshotRequest(key="default/1/x"), pb.PrepareSnapshotResponse, md=[])
check("prepare without namespace header", len(r.mounts) == 1)
check("... seen with one", "default/1/x" in list_names())
unary("Remove", pb.RemoveSnapshotRequest(key="default/1/x"), empty_pb2.Empty, md=[])
expect_code("empty key", C.INVALID_ARGUMENT,
            lambda: unary("Prepare", pb.PrepareSnapshotRequest(key=""), pb.PrepareSnapshotResponse))
# Bad inputs at the gRPC layer
raw = chan.unary_unary(SVC + "Prepare")
expect_code("undecodable request", C.INVALID_ARGUMENT, lambda: raw(b"\xff\xff\xff", metadata=NS, timeout=30))
expect_code("unknown method", C.UNIMPLEMENTED,
            lambda: chan.unary_unary(SVC + "Frobnicate")(b"", metadata=NS, timeout=30))
expect_code("oversized request", C.RESOURCE_EXHAUSTED,
            lambda: raw(pb.PrepareSnapshotRequest(key="big", labels={"k": "x" * (17 << 20)}).SerializeToString(),
                        metadata=NS, timeout=60))
for k in ("v", "b", "A"):
    unary("Remove", pb.RemoveSnapshotRequest(key=k), empty_pb2.Empty)
expect_code("remove missing", C.NOT_FOUND, lambda: unary("Remove", pb.RemoveSnapshotRequest(key="A"), empty_pb2.Empty))
check("list empty at the end", list_names() == [])
unary("Cleanup", pb.CleanupRequest(), empty_pb2.Empty)
# grpc-go dialled with a socket path sends that path as :authority; accept it.
odd = grpc.insecure_channel("unix:" + sock, options=[("grpc.default_authority", sock)])
r = odd.unary_unary(SVC + "Stat", request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=pb.StatSnapshotResponse.FromString)
expect_code("path as :authority", C.NOT_FOUND, lambda: r(pb.StatSnapshotRequest(key="gone"), metadata=NS, timeout=30))
print(f"snapshots-client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
