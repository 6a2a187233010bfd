#!/usr/bin/python3
"""Checks that proto/ is wire-compatible with containerd 1.6's API: every
message, enum, service and method of containerd's own .proto files (from
Debian's golang-github-containerd-containerd-dev) must exist in ours under
the same full name with the same field numbers, types, labels and message
types, the same enum values, and the same method signatures (streaming
included).

  proto_compat.py PROTOC OUR_PROTO_DIR CONTAINERD_GOCODE_SRC"""
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

FILES = [
    ("containerd/services/snapshots/v1/snapshots.proto",
     "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto"),
    ("containerd/services/leases/v1/leases.proto",
     "github.com/containerd/containerd/api/services/leases/v1/leases.proto"),
    ("containerd/services/content/v1/content.proto",
     "github.com/containerd/containerd/api/services/content/v1/content.proto"),
    ("containerd/services/images/v1/images.proto",
     "github.com/containerd/containerd/api/services/images/v1/images.proto"),
    ("containerd/services/diff/v1/diff.proto",
     "github.com/containerd/containerd/api/services/diff/v1/diff.proto"),
    ("containerd/types/mount.proto", "github.com/containerd/containerd/api/types/mount.proto"),
    ("containerd/types/descriptor.proto",
     "github.com/containerd/containerd/api/types/descriptor.proto"),
]
WELL_KNOWN = ["google/protobuf/empty.proto", "google/protobuf/timestamp.proto",
              "google/protobuf/field_mask.proto", "google/protobuf/any.proto"]


def descriptor_set(protoc, includes, files):
    with tempfile.NamedTemporaryFile(suffix=".pb") as out:
        cmd = [protoc, "--include_imports", "--descriptor_set_out=" + out.name]
        cmd += ["-I" + i for i in includes] + files
        subprocess.run(cmd, check=True)
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(open(out.name, "rb").read())
        return fds


def index(fds):
    """Full name -> (kind, comparable shape)."""
    out = {}

    def walk_msg(prefix, m):
        name = prefix + "." + m.name
        fields = sorted((f.number, f.name, f.type, f.label, f.type_name) for f in m.field)
        out[name] = ("message", fields)
        for n in m.nested_type:
            walk_msg(name, n)
        for e in m.enum_type:
            out[name + "." + e.name] = ("enum", sorted((v.number, v.name) for v in e.value))

    for f in fds.file:
        if f.package == "gogoproto" or f.name.endswith("descriptor.proto") and \
                f.package == "google.protobuf":
            continue
        pkg = "." + f.package
        for m in f.message_type:
            walk_msg(pkg, m)
        for e in f.enum_type:
            out[pkg + "." + e.name] = ("enum", sorted((v.number, v.name) for v in e.value))
        for s in f.service:
            for meth in s.method:
                out["%s.%s/%s" % (pkg, s.name, meth.name)] = (
                    "method", (meth.input_type, meth.output_type,
                               meth.client_streaming, meth.server_streaming))
    return out


def main():
    protoc, ours_dir, gocode = sys.argv[1:4]
    gogo = os.path.join(gocode, "github.com/gogo/protobuf")
    theirs = index(descriptor_set(protoc, [gocode, os.path.join(gogo, "protobuf"), gogo],
                                  [os.path.join(gocode, t) for _, t in FILES]))
    ours = index(descriptor_set(protoc, [ours_dir],
                                [os.path.join(ours_dir, o) for o, _ in FILES] +
                                [os.path.join(ours_dir, w) for w in WELL_KNOWN]))
    bad = 0
    for name, shape in sorted(theirs.items()):
        if name.startswith(".google.protobuf.") and name not in ours:
            continue  # a well-known type our services do not use
        if ours.get(name) != shape:
            print("MISMATCH %s\n  containerd: %s\n  ours:       %s" % (name, shape,
                                                                    ours.get(name)))
            bad += 1
    print("%d names compared, %d mismatches" % (len(theirs), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
