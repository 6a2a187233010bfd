#!/usr/bin/python3
"""A small user image for the prepared-image boot test, as an OCI image layout tarball that
skopeo pushes (oci-archive:): two gzip layers with an /etc/os-release, a few files, a
symlink, /tmp (mode 1777, kept as the image has it) and /var/run pointing at /run (which the
image lacks, as it lacks /proc /sys /dev). Deterministic (fixed times, gzip without a time).

    image.py OUT.tar NAME [CMD_BYTES]
        prints {"target_digest", "diff_ids", "chain_ids"} as JSON; CMD_BYTES makes the
        config's Cmd that long (an entrypoint too long to keep in a label)
"""
import gzip
import hashlib
import io
import json
import sys
import tarfile

MTIME = 1700000000
OS_RELEASE = (b'PRETTY_NAME="thinsnap prepared-image test"\nNAME="thinsnap-test"\n'
              b'ID=thinsnap-test\nVERSION_ID="10"\n')


def entry(tf, path, kind, mode, data=b"", target=""):
    ti = tarfile.TarInfo(path)
    ti.mtime, ti.mode, ti.uid, ti.gid = MTIME, mode, 0, 0
    if kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, target
    else:
        ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)


def layer(entries):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            entry(tf, *e)
    tar = raw.getvalue()
    gz = gzip.compress(tar, mtime=0)
    return gz, "sha256:" + hashlib.sha256(tar).hexdigest()


def blob(blobs, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return d


def build(out, name, cmd_bytes=0):
    base = [("etc", "dir", 0o755), ("bin", "dir", 0o755), ("usr", "dir", 0o755),
            ("usr/share", "dir", 0o755), ("var", "dir", 0o755), ("tmp", "dir", 0o1777),
            ("var/run", "symlink", 0o777, b"", "/run"),
            ("bin/hello", "file", 0o755, b"#!/bin/sh\necho hello\n"),
            ("etc/hostname", "file", 0o644, b"prepared-test\n")]
    top = [("etc/os-release", "file", 0o644, OS_RELEASE),
           ("usr/share/data.bin", "file", 0o640, bytes(range(256)) * 64)]
    blobs, layers, diff_ids = {}, [], []
    for entries in (base, top):
        gz, diff_id = layer(entries)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": blob(blobs, gz), "size": len(gz)})
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/hello"] + (["x" * cmd_bytes] if cmd_bytes else []),
                                    "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}},
                        sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(blobs, config), "size": len(config)},
                           "layers": layers}, sort_keys=True).encode()
    md = blob(blobs, manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
         "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": name}}]},
        sort_keys=True).encode()
    with tarfile.open(out, "w") as tf:
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [(f"blobs/sha256/{d.split(':')[1]}", data) for d, data in sorted(blobs.items())]
        for path, data in files:
            ti = tarfile.TarInfo(path)
            ti.size, ti.mtime = len(data), MTIME
            tf.addfile(ti, io.BytesIO(data))
    chain = [diff_ids[0]]
    for d in diff_ids[1:]:
        chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {d}".encode()).hexdigest())
    return {"target_digest": md, "diff_ids": diff_ids, "chain_ids": chain}


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)))
