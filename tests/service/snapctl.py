#!/usr/bin/python3
"""A tiny Snapshots client for scripts: snapctl.py SOCKET PROTO_DIR OP ARGS...
OP: prepare KEY [PARENT] | view KEY PARENT | commit NAME KEY | remove KEY |
    stat KEY | mounts KEY | list
Prints the result; exit 0 on success, 3 with the status name on a gRPC error."""
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

sock, proto_dir, op, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
gen = os.environ.get("TS_PROTO_GEN")  # generated once by the caller, or here
if not gen or not os.path.isdir(os.path.join(gen, "containerd")):
    gen = tempfile.mkdtemp(prefix="tsproto-")
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + gen,
                    os.path.join(proto_dir, "containerd/types/mount.proto"),
                    os.path.join(proto_dir, "containerd/services/snapshots/v1/snapshots.proto")]) != 0:
        sys.exit("protoc failed")
sys.path.insert(0, gen)
from containerd.services.snapshots.v1 import snapshots_pb2 as pb  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402

chan = grpc.insecure_channel("unix:" + sock)
grpc.channel_ready_future(chan).result(timeout=60)
NS = [("containerd-namespace", os.environ.get("TS_NAMESPACE", "default"))]


def call(method, req, resp):
    return chan.unary_unary("/containerd.services.snapshots.v1.Snapshots/" + method,
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=resp.FromString)(req, metadata=NS, timeout=120)


try:
    if op == "prepare":
        r = call("Prepare", pb.PrepareSnapshotRequest(key=args[0], parent=args[1] if len(args) > 1 else ""),
                 pb.PrepareSnapshotResponse)
        print(r.mounts[0].source)
    elif op == "view":
        print(call("View", pb.ViewSnapshotRequest(key=args[0], parent=args[1]), pb.ViewSnapshotResponse).mounts[0].source)
    elif op == "commit":
        call("Commit", pb.CommitSnapshotRequest(name=args[0], key=args[1]), empty_pb2.Empty)
    elif op == "remove":
        call("Remove", pb.RemoveSnapshotRequest(key=args[0]), empty_pb2.Empty)
    elif op == "stat":
        print(pb.Kind.Name(call("Stat", pb.StatSnapshotRequest(key=args[0]), pb.StatSnapshotResponse).info.kind))
    elif op == "mounts":
        print(call("Mounts", pb.MountsRequest(key=args[0]), pb.MountsResponse).mounts[0].source)
    elif op == "list":
        fn = chan.unary_stream("/containerd.services.snapshots.v1.Snapshots/List",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=pb.ListSnapshotsResponse.FromString)
        for resp in fn(pb.ListSnapshotsRequest(), metadata=NS, timeout=120):
            for i in resp.info:
                print(i.name, pb.Kind.Name(i.kind))
    else:
        sys.exit(f"unknown op {op}")
except grpc.RpcError as e:
    print(e.code().name, e.details(), file=sys.stderr)
    print(e.code().name)
    sys.exit(3)
