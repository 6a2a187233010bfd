#!/usr/bin/python3
"""The provisioner on this host, against real parts: Debian's docker-registry on 127.0.0.1
with images built by tests/lib/build-image and pushed with skopeo, a containerd of
the test's own with its native snapshotter (the host has no device-mapper: the VM lane's
vm-provision-e2e runs the same flows on thinsnapd), the provisioner's service
(prov-server) and the `thinsnap image|vm` CLI.

    host_test.py BINDIR SRCDIR PROV_SERVER

Exits 77 (skipped) when not root or when containerd, docker-registry or skopeo are missing."""
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "registry"))
from lane import Lane, image_facts  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402


def build_image(lane, out, seed, name, *extra):
    subprocess.run([sys.executable, f"{lane.src}/tests/lib/build-image", "build", out,
                    "--seed", str(seed), "--name", name, *extra], check=True,
                   stdout=subprocess.DEVNULL)
    return image_facts(out)


def pull(lane, ref, *extra):
    p = lane.thinsnap("image", "pull", ref, "--plain-http", "--json", *extra, check=False,
                      parse=False)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p, lines


def scan(lane, path):
    return json.loads(lane.run([sys.executable, f"{lane.src}/tests/lib/build-image",
                                "scan", path], check=True).stdout)


def warm_and_look(lane, ref, exp):
    p, lines = pull(lane, ref)
    lane.check("pull exits 0", p.returncode, 0)
    last = lines[-1] if lines else {}
    lane.check("pull ends READY", last.get("state"), "READY")
    lane.check("pull gives the digest", last.get("digest"), exp["target_digest"])
    lane.ok("ctr images check: complete", "complete" in lane.ctr("images", "check").stdout)
    content = lane.ctr("content", "ls").stdout
    lane.ok("config labelled gc.ref.snapshot.native",
            f"containerd.io/gc.ref.snapshot.native={exp['chain_ids'][-1]}" in content, content)
    lane.ok("layers labelled uncompressed",
            all(f"containerd.io/uncompressed={layer['diff_id']}" in content
                for layer in exp["layers"]))
    lane.ok("manifest labelled with config and layers",
            f"containerd.io/gc.ref.content.config={exp['config_digest']}" in content and
            all(f"containerd.io/gc.ref.content.l.{i}={layer['digest']}" in content
                for i, layer in enumerate(exp["layers"])))
    line = next((ln for ln in content.splitlines() if ln.startswith(exp["target_digest"])), "")
    ms = [kv.split("=", 1)[1] for kv in line.split(",") if "gc.ref.content.m." in kv]
    lane.ok("the index labelled with all its manifests (every platform's, attestations too)",
            exp["manifest_digest"] in ms and len(set(ms)) == 4, line)
    lane.ok("no warm lease left", "thinsnap.warm" not in lane.ctr("leases", "ls").stdout)
    _, again = pull(lane, ref)
    blobs = again[-1].get("blobs", []) if again else None
    lane.ok("a second pull downloads nothing", blobs is not None and
            all(b.get("cached") for b in blobs), json.dumps(blobs))


def images(lane, ref, exp):
    ls = lane.thinsnap("image", "ls", "--json")
    img = next((i for i in ls.get("images", []) if i["name"] == ref), {})
    lane.check("ls: ready", img.get("ready"), True)
    lane.check("ls: chain id", img.get("chain_id"), exp["chain_ids"][-1])
    lane.check("ls: layers", img.get("layers"), len(exp["layers"]))
    want_bytes = sum(layer["size"] for layer in exp["layers"])
    lane.ok("ls: content bytes count the layers", img.get("content_bytes", 0) > want_bytes,
            json.dumps(img))
    hexd = exp["target_digest"].split(":")[1]
    for name in (exp["target_digest"], hexd[:4], hexd[:20]):
        lane.check(f"inspect by {name[:12]}", lane.thinsnap("image", "inspect", name, "--json")
                   .get("name"), ref)
    p = lane.thinsnap("image", "inspect", "sha256:1234", check=False)
    lane.ok("a malformed digest is refused", p.returncode == 1 and "INVALID_ARGUMENT" in p.stderr,
            p.stderr)
    p = lane.thinsnap("image", "inspect", "ffff", check=False)
    lane.ok("a prefix nothing has: NOT_FOUND", p.returncode == 1 and "NOT_FOUND" in p.stderr,
            p.stderr)
    cfg = lane.thinsnap("image", "config", ref, "--json")
    lane.check("config: cmd", cfg.get("cmd"), ["/bin/tool"])
    lane.ok("config: env", any(e.startswith("PATH=") for e in cfg.get("env", [])))
    text = lane.thinsnap("image", "config", ref).stdout
    lane.ok("config without --json reads as fields", "working_dir: /" in text, text)


def vms(lane, ref, other, exp):
    d1 = lane.thinsnap("vm", "snapshot", "vm1", ref).stdout.strip()
    lane.ok("snapshot prints the snapshot's mount source", os.path.isdir(d1), d1)
    lane.check("same VM, same image: same device", lane.thinsnap("vm", "snapshot", "vm1", ref)
               .stdout.strip(), d1)
    p = lane.thinsnap("vm", "snapshot", "vm1", other, check=False)
    lane.ok("same VM, another image: ALREADY_EXISTS", p.returncode == 1 and
            "ALREADY_EXISTS" in p.stderr and ref in p.stderr, p.stderr)
    tree = scan(lane, d1)
    lane.ok("the VM's tree is the image's", tree.get("tree") == exp["tree"] and
            tree.get("hardlinks") == exp["hardlinks"])
    vm2 = lane.thinsnap("vm", "snapshot", "vm2", other, "--json")
    lane.check("snapshot --json names the image", vm2.get("image"), other)
    lane.ok("the VM's lease carries its labels",
            "thinsnap.vm=vm1" in lane.ctr("leases", "ls").stdout)
    ls = lane.thinsnap("vm", "ls", "--json")
    lane.check("vm ls", sorted(v["vm_id"] for v in ls.get("vms", [])), ["vm1", "vm2"])
    lane.ok("teardown", "torn down" in lane.thinsnap("vm", "teardown", "vm1").stdout)
    lane.ok("the snapshot is gone", not os.path.exists(d1))
    lane.ok("teardown again: no such VM", "no such VM" in lane.thinsnap("vm", "teardown", "vm1")
            .stdout)
    # A VM removed behind the provisioner's back: teardown finds nothing left.
    lane.thinsnap("vm", "snapshot", "gone", other)
    lane.ctr("snapshots", "--snapshotter", "native", "rm", "thinsnap-vm-gone")
    lane.ctr("leases", "rm", "thinsnap.vm.gone")
    lane.ok("teardown of a VM removed meanwhile: no such VM",
            "no such VM" in lane.thinsnap("vm", "teardown", "gone").stdout)
    for i in range(3):
        lane.thinsnap("vm", "snapshot", f"g{i}", other)
    gc = lane.thinsnap("vm", "gc", "--keep", "vm2", "--keep", "g1", "--json")
    lane.check("gc: removed", sorted(gc.get("removed", [])), ["g0", "g2"])
    p = lane.thinsnap("vm", "gc", check=False)
    lane.ok("gc without --keep or --all is refused", p.returncode == 2, p.stderr)
    together(lane, ref, other, exp, vm2.get("image_digest"))
    for vm_id in ("a b", "x" * 65, ""):
        p = lane.thinsnap("vm", "snapshot", vm_id, ref, check=False)
        lane.ok(f"VM id {vm_id[:8]!r} refused", p.returncode in (1, 2) and
                ("INVALID_ARGUMENT" in p.stderr or "expected" in p.stderr), p.stderr)


def together(lane, ref, other, exp, other_digest):
    """Snapshots of one image at the same time each get the whole image; a snapshot sees the
    image record as it is when the call begins (a name moved to another image)."""
    n = 8
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        got = list(ex.map(lambda i: lane.thinsnap("vm", "snapshot", f"c{i}", ref, "--json"),
                          range(n)))
    lane.ok(f"{n} snapshots of one image at once: each with the image and its digest",
            all(v and v.get("image") == ref and v.get("image_digest") == exp["target_digest"]
                for v in got), got)
    lane.check(f"... {n} VMs", len({v.get("vm_id") for v in got if v}), n)
    missing = ref.replace("/hc/a:", "/hc/none:")
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        ps = list(ex.map(lambda i: lane.thinsnap("vm", "snapshot", f"m{i}", missing, check=False),
                         range(4)))
    lane.ok("4 snapshots of an image not warm, at once: each NOT_FOUND naming it",
            all(p.returncode == 1 and "NOT_FOUND" in p.stderr and missing in p.stderr for p in ps),
            [p.stderr for p in ps])
    alias = "docker.io/test/retag:v1"
    lane.ctr("images", "tag", ref, alias)
    lane.check("a snapshot by another name of the image",
               lane.thinsnap("vm", "snapshot", "r1", alias, "--json").get("image_digest"),
               exp["target_digest"])
    lane.ctr("images", "tag", "--force", other, alias)
    lane.check("the name moved to another image: the next snapshot has the new one",
               lane.thinsnap("vm", "snapshot", "r2", alias, "--json").get("image_digest"),
               other_digest)
    for vm_id in [f"c{i}" for i in range(n)] + ["r1", "r2"]:
        lane.thinsnap("vm", "teardown", vm_id)
    lane.ctr("images", "rm", alias)


def imports(lane, archive, docker_archive, exp):
    out = lane.thinsnap("image", "import", archive, "--json")
    lane.check("import of an OCI layout: READY", out.get("state") if isinstance(out, dict) else
               None, "READY")
    lane.ok("the imported image is listed by its annotated name",
            exp["name"] in lane.ctr("images", "ls", "-q").stdout)
    p = lane.thinsnap("image", "import", docker_archive, "--name", "docker.io/t/saved:v1")
    lane.check("import of a docker save archive", p.returncode, 0)
    d = lane.thinsnap("vm", "snapshot", "saved", "docker.io/t/saved:v1").stdout.strip()
    tree = scan(lane, d)
    lane.ok("the docker save image's tree is the image's", tree.get("tree") == exp["tree"])
    lane.thinsnap("vm", "teardown", "saved")
    p = lane.thinsnap("image", "import", "/etc/hostname", check=False)
    lane.ok("a file that is no image archive is refused", p.returncode == 1, p.stderr)


def faults_input(lane, host):
    p, _ = pull(lane, f"{host}/nope/missing:v1")
    lane.ok("an unknown image: NOT_FOUND", p.returncode == 1 and "NOT_FOUND" in p.stderr, p.stderr)
    p, _ = pull(lane, f"{host}/hc/a:v1@sha256:{'0' * 64}")
    lane.ok("a pinned digest that is not the tag's is refused", p.returncode == 1, p.stderr)
    p, _ = pull(lane, "127.0.0.1:1/x/y:z")
    lane.ok("a registry nobody serves: UNAVAILABLE naming it", p.returncode == 1 and
            "127.0.0.1:1" in p.stderr, p.stderr)
    p = lane.thinsnap("image", "pull", "example.com/Upper/case", check=False)
    lane.ok("a bad reference: INVALID_ARGUMENT", p.returncode == 1 and "INVALID_ARGUMENT" in p.stderr,
            p.stderr)
    p = lane.thinsnap("image", "pull", "no-such-host.invalid/x/y:z", check=False)
    lane.ok("a registry host that does not resolve: UNAVAILABLE", p.returncode == 1 and
            "UNAVAILABLE" in p.stderr and "no such host" in p.stderr, p.stderr)


def platforms(lane, ref):
    p, _ = pull(lane, ref, "--platform", "linux/s390x")
    lane.ok("no manifest for the platform: NOT_FOUND listing the ones there are",
            p.returncode == 1 and "NOT_FOUND" in p.stderr and "linux/arm64" in p.stderr, p.stderr)


def tls_basic(lane, archive):
    reg = lane.registry("tls-basic")
    reg.push(archive, "private/img:v1")
    ref = f"{reg.host}/private/img:v1"
    f = reg.facts
    p = lane.thinsnap("image", "pull", ref, "--ca-file", f["ca"], check=False)
    lane.ok("TLS registry without credentials: authentication required for the repository",
            p.returncode == 1 and f"authentication required for {reg.host}/private/img" in p.stderr,
            p.stderr)
    p = lane.run([f"{lane.bindir}/cli/thinsnap", "image", "pull", ref, "--ca-file", f["ca"],
                  "--user", f["username"], "--password-stdin"], input=f["password"] + "\n")
    lane.ok("TLS registry with --ca-file and --user/--password-stdin", p.returncode == 0,
            p.stderr)
    p = lane.thinsnap("image", "pull", ref, "--user", f"{f['username']}:{f['password']}",
                      check=False)
    lane.ok("TLS registry with a CA nobody gave: refused as not trusted",
            p.returncode == 1 and "not trusted" in p.stderr, p.stderr)


def faults(lane, reg, exp):
    proxy = FaultProxy(reg.host, os.path.join(reg.facts["dir"], "data"))
    try:
        ref = f"{proxy.host}/hc/c:v1"
        big = next(x for x in exp["layers"] if x["size"] > 20 << 20)["digest"]
        proxy.fault("corrupt", "/blobs/" + big)
        p, _ = pull(lane, ref)
        lane.ok("a blob that does not match its digest: refused", p.returncode == 1 and
                big in p.stderr, p.stderr)
        lane.ok("nothing of it published", ref not in lane.ctr("images", "ls", "-q").stdout and
                "thinsnap.warm" not in lane.ctr("leases", "ls").stdout)
        proxy.clear()
        proxy.fault("truncate", "/blobs/" + big)
        p, lines = pull(lane, ref)
        lane.ok("a truncated download is resumed", p.returncode == 0 and lines and
                lines[-1].get("state") == "READY", p.stderr)
        ranges = [r["range"] for r in proxy.requests("/blobs/" + big)]
        lane.ok("... with Range", any(r and r.startswith("bytes=") for r in ranges), str(ranges))
        lane.thinsnap("image", "rm", ref)
        proxy.clear()
        proxy.fault("hang", "/blobs/" + big)
        p, _ = pull(lane, ref)
        lane.ok("a registry that hangs: DEADLINE_EXCEEDED", p.returncode == 1 and
                "DEADLINE_EXCEEDED" in p.stderr and "no progress" in p.stderr, p.stderr)
    finally:
        proxy.close()


def main():
    bindir, src, server = sys.argv[1:4]
    if os.geteuid() != 0:
        print("skipped: needs root (containerd)")
        sys.exit(77)
    for tool in ("containerd", "ctr", "docker-registry", "skopeo"):
        if not shutil.which(tool):
            print(f"skipped: {tool} is not installed")
            sys.exit(77)
    lane = Lane(bindir, src, "hostprov")
    try:
        a = build_image(lane, f"{lane.work}/a", 1, "docker.io/test/imported:v1", "--platforms",
                        "linux/amd64,linux/arm64/v8,linux/386", "--attestation")
        build_image(lane, f"{lane.work}/b", 2, "docker.io/test/b:v1")
        c = build_image(lane, f"{lane.work}/c", 3, "docker.io/test/c:v1")
        reg = lane.registry()
        reg.push(f"{lane.work}/a/image.tar", "hc/a:v1", all_manifests=True)
        reg.push(f"{lane.work}/b/image.tar", "hc/b:v1", all_manifests=True)
        reg.push(f"{lane.work}/c/image.tar", "hc/c:v1")
        lane.run(["skopeo", "--tmpdir", lane.work, "copy", "--insecure-policy",
                  f"oci-archive:{lane.work}/a/image.tar", f"docker-archive:{lane.work}/saved.tar"],
                 check=True)
        ref, other = f"{reg.host}/hc/a:v1", f"{reg.host}/hc/b:v1"
        lane.start_containerd(proxy=False)
        lane.start_prov_server(server, "native")
        warm_and_look(lane, ref, a)
        images(lane, ref, a)
        pull(lane, other)
        vms(lane, ref, other, a)
        imports(lane, f"{lane.work}/a/image.tar", f"{lane.work}/saved.tar", a)
        faults_input(lane, reg.host)
        platforms(lane, ref)
        tls_basic(lane, f"{lane.work}/b/image.tar")
        faults(lane, reg, c)
        out = lane.thinsnap("image", "rm", ref, "--json")
        lane.check("rm", out[0].get("name") if out else None, ref)
        p = lane.thinsnap("image", "inspect", ref, check=False)
        lane.ok("gone after rm", p.returncode == 1 and "NOT_FOUND" in p.stderr, p.stderr)
        lane.stop("containerd")
        p = lane.thinsnap("vm", "snapshot", "vmx", other, check=False)
        lane.ok("containerd stopped: UNAVAILABLE naming its socket", p.returncode == 1 and
                "UNAVAILABLE" in p.stderr and lane.ctd_sock in p.stderr, p.stderr)
    except Exception as e:  # noqa: BLE001 (whatever broke, the tally and clean-up follow)
        traceback.print_exc()
        lane.ok("the run went through", False, str(e))
    lane.finish()


if __name__ == "__main__":
    main()
