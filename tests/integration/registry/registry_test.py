#!/usr/bin/python3
"""The registry client (registry/) against Debian's docker-registry on 127.0.0.1, driven
through registry-fetch, with images built by tests/lib/build-image:

  registry_test.py MODE WORKDIR REGISTRY_FETCH

  plain      pulls (digests, sizes, diff_ids, chain ids against the archive's facts), by tag,
             digest and both, from several threads; platform choice on a multi-platform index
             with an attestation; offsets; not found; connection refused
  tls-basic  HTTPS with the test's CA, htpasswd Basic auth: credentials from options and from
             a docker config.json; 401 without or with wrong credentials; an untrusted CA
  token      the token flow: anonymous pulls of public/ repositories, POST password grant for
             private ones, refused credentials; one token per scope per pull (cache)
  faults     a fault proxy in front of the token registry: corrupt, truncated (resumed with
             Range; also when the server then ignores Range), hung (timeout), redirected to
             another host (no Authorization there), 429/503 (retried, and given up on)
"""
import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
sys.path.insert(0, HERE)
import registry  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

BUILD_IMAGE = os.path.join(SRC, "tests", "lib", "build-image")
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Test:
    def __init__(self, work, fetch_bin):
        self.work, self.fetch_bin = work, fetch_bin
        self.failed = []
        self.passed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed.append("%s %s" % (name, detail))
            print("FAIL: %s %s" % (name, detail), flush=True)

    def fetch(self, ref, *args):
        r = subprocess.run([self.fetch_bin] + list(args) + [ref], capture_output=True, text=True,
                           timeout=120)
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        return r.returncode, lines, r.stderr.strip()

    def pulls(self, name, ref, expected, *args, manifest=None, arch="amd64"):
        """A pull of ref succeeds and brings exactly the image in expected."""
        rc, lines, err = self.fetch(ref, *args)
        if not self.check(name + ": exit 0", rc == 0, "(%d: %s)" % (rc, err)) and rc != 0:
            return lines
        got = {k: v for line in lines for k, v in line.items() if k in ("manifest", "config")}
        self.check(name + ": manifest", got.get("manifest") == (manifest or expected["manifest_digest"]),
                   str(got.get("manifest")))
        cfg = next(x for x in lines if "config" in x)
        self.check(name + ": config architecture", cfg["architecture"] == arch, cfg["architecture"])
        self.check(name + ": diff_ids", cfg["diff_ids"] == [x["diff_id"] for x in expected["layers"]])
        self.check(name + ": chain ids", cfg["chain_ids"] == expected["chain_ids"])
        blobs = {x["blob"]: x for x in lines if "blob" in x}
        want = {x["digest"]: x["size"] for x in expected["layers"]}
        self.check(name + ": every layer once", sorted(blobs) == sorted(want), str(sorted(blobs)))
        for d, b in blobs.items():
            self.check(name + ": layer %s" % d[:19], b["sha256"] == d and b["size"] == want.get(d),
                       str(b))
        return lines

    def fails(self, name, ref, code, needle, *args):
        rc, lines, err = self.fetch(ref, *args)
        self.check(name + ": exit %s" % errno.errorcode.get(code, code), rc == code,
                   "(got %d: %s)" % (rc, err))
        self.check(name + ": message", needle in err, "(%r lacks %r)" % (err, needle))
        return lines, err


def build(work, name, *extra):
    out = os.path.join(work, name)
    subprocess.run(["/usr/bin/python3", BUILD_IMAGE, "build", out, "--name", "test/" + name]
                   + list(extra), check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "expected.json")) as fh:
        return os.path.join(out, "image.tar"), json.load(fh)


def blob_bytes(archive, digest):
    with tarfile.open(archive) as tf:
        return tf.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain(t, reg, work):
    img, exp = build(work, "img")
    multi, mexp = build(work, "multi", "--platforms",
                        "linux/arm64/v8,linux/amd64,linux/arm/v7,linux/386", "--attestation")
    reg.push(img, "lib/img:v1")
    reg.push(multi, "lib/multi:v1", all_manifests=True)
    h = reg.host
    lines = t.pulls("by tag", "%s/lib/img:v1" % h, exp, "--jobs", "4")
    res = lines[0].get("resolved", {}) if lines else {}
    t.check("resolve: descriptor", res.get("mediaType") == MT_MANIFEST and
            res.get("digest") == exp["manifest_digest"], str(res))
    t.pulls("by digest", "%s/lib/img@%s" % (h, exp["manifest_digest"]), exp)
    t.pulls("by tag and digest", "%s/lib/img:v1@%s" % (h, exp["manifest_digest"]), exp)
    t.pulls("plain HTTP asked for", "%s/lib/img:v1" % h, exp, "--plain-http")
    t.fails("a digest the repository does not have", "%s/lib/img:v1@sha256:%s" % (h, "1" * 64),
            errno.ENOENT, "not found")

    by_plat = {p["platform"]: p for p in mexp["platforms"]}
    for want, got, arch in (("", "linux/amd64", "amd64"), ("linux/arm64", "linux/arm64/v8", "arm64"),
                            ("linux/aarch64", "linux/arm64/v8", "arm64"),
                            ("linux/arm/v7", "linux/arm/v7", "arm"), ("linux/386", "linux/386", "386")):
        args = ["--platform", want] if want else []
        lines = t.pulls("index, platform %s" % (want or "default"), "%s/lib/multi:v1" % h, mexp,
                        *args, manifest=by_plat[got]["manifest_digest"], arch=arch)
        sel = next((x for x in lines if "selected" in x), {})
        t.check("index %s: selected" % want, sel.get("platform") == got, str(sel))
    lines, err = t.fails("index without the platform", "%s/lib/multi:v1" % h, errno.ENOENT,
                         "no manifest for platform linux/s390x in the index (it has: linux/arm64/v8, "
                         "linux/amd64, linux/arm/v7, linux/386, unknown/unknown)",
                         "--platform", "linux/s390x")
    t.check("index: resolved", lines and lines[0]["resolved"]["digest"] == mexp["image_index_digest"]
            and lines[0]["resolved"]["mediaType"] == MT_INDEX, str(lines[:1]))

    big = next(x for x in exp["layers"] if x["size"] > 20 << 20)
    lines = t.fetch("%s/lib/img:v1" % h, "--offset", "1000")[1]
    tail = next((x for x in lines if x.get("blob") == big["digest"]), {})
    want = "sha256:" + hashlib.sha256(blob_bytes(img, big["digest"])[1000:]).hexdigest()
    t.check("offset 1000: the blob's tail", tail.get("offset") == 1000 and
            tail.get("size") == big["size"] - 1000 and tail.get("sha256") == want, str(tail))

    t.fails("unknown tag", "%s/lib/img:nope" % h, errno.ENOENT, "%s/lib/img:nope: not found" % h)
    t.fails("unknown repository", "%s/lib/none:v1" % h, errno.ENOENT, "%s/lib/none:v1: not found" % h)
    port = closed_port()
    t.fails("nothing listening", "127.0.0.1:%d/lib/img:v1" % port, errno.ECONNREFUSED,
            "connection to 127.0.0.1:%d refused" % port)


def tls_basic(t, reg, work):
    img, exp = build(work, "img")
    reg.push(img, "lib/img:v1")
    f = reg.facts
    ref = "%s/lib/img:v1" % reg.host
    ca = ["--ca", f["ca"]]
    t.pulls("credentials", ref, exp, *ca, "--user", f["username"], "--password", f["password"],
            "--jobs", "3")
    t.pulls("docker config.json", ref, exp, *ca, "--docker-config", f["docker_config"])
    t.pulls("CA as PEM text", ref, exp, "--ca-pem", f["ca"], "--docker-config", f["docker_config"])
    t.fails("no credentials", ref, errno.EACCES,
            "authentication required for %s/lib/img (no credentials for %s)" % (reg.host, reg.host),
            *ca)
    t.fails("wrong password", ref, errno.EACCES, "authentication required for %s/lib/img" % reg.host,
            *ca, "--user", f["username"], "--password", "wrong")
    t.fails("CA not given", ref, errno.EPROTO, "is not trusted", "--user", f["username"],
            "--password", f["password"])
    other = os.path.join(work, "other-ca")
    os.makedirs(other, exist_ok=True)
    t.fails("another CA", ref, errno.EPROTO, "is not trusted", "--ca", registry.make_tls(other),
            "--user", f["username"], "--password", f["password"])
    t.fails("a CA file without a certificate", ref, errno.EINVAL, "holds no PEM certificate",
            "--ca", f["docker_config"])


def token_log(reg):
    with open(reg.facts["token_log"]) as fh:
        return [json.loads(x) for x in fh]


def token(t, reg, work):
    img, exp = build(work, "img")
    reg.push(img, "public/img:v1")
    reg.push(img, "private/img:v1")
    f, h = reg.facts, reg.host
    creds = ["--user", f["username"], "--password", f["password"]]
    n = len(token_log(reg))
    t.pulls("anonymous, public", "%s/public/img:v1" % h, exp, "--jobs", "4")
    log = token_log(reg)[n:]
    t.check("anonymous: one token for the pull", len(log) == 1 and log[0]["method"] == "GET" and
            log[0]["user"] is None and log[0]["scopes"] == ["repository:public/img:pull"], str(log))
    t.fails("anonymous, private", "%s/private/img:v1" % h, errno.EACCES,
            "authentication required for %s/private/img" % h)
    n = len(token_log(reg))
    t.pulls("credentials, private", "%s/private/img:v1" % h, exp, *creds, "--jobs", "4")
    log = token_log(reg)[n:]
    t.check("credentials: one POST token for the pull", len(log) == 1 and log[0]["method"] == "POST"
            and log[0]["user"] == f["username"], str(log))
    t.pulls("docker config.json, private", "%s/private/img:v1" % h, exp, "--docker-config",
            f["docker_config"])
    t.fails("wrong password", "%s/private/img:v1" % h, errno.EACCES,
            "refused the credentials of %s" % f["username"], "--user", f["username"],
            "--password", "wrong")


def faults(t, reg, work):
    img, exp = build(work, "img")
    reg.push(img, "private/img:v1")
    f = reg.facts
    proxy = FaultProxy(reg.host, os.path.join(f["dir"], "data"))
    try:
        run_faults(t, proxy, exp, ["--plain-http", "--user", f["username"], "--password",
                                   f["password"], "--jobs", "2"])
    finally:
        proxy.close()


def run_faults(t, proxy, exp, args):
    ref = "%s/private/img:v1" % proxy.host
    big = next(x for x in exp["layers"] if x["size"] > 20 << 20)["digest"]
    path = "/blobs/" + big

    proxy.clear()
    proxy.fault("corrupt", path)
    t.fails("corrupt blob", ref, errno.EBADMSG, "digest mismatch: expected %s, got sha256:" % big,
            *args)

    proxy.clear()
    proxy.fault("truncate", path)
    t.pulls("truncated blob", ref, exp, *args)
    ranges = [r["range"] for r in proxy.requests(path)]
    t.check("truncated: resumed with Range from where it broke off",
            len(ranges) == 2 and ranges[0] is None and ranges[1] is not None and
            ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0, str(ranges))

    proxy.clear()
    proxy.fault("truncate", path)
    proxy.fault("ignore-range", path)
    t.pulls("truncated, then Range ignored", ref, exp, *args)

    proxy.clear()
    proxy.fault("unsized", path)
    t.pulls("cut short, no Content-Length", ref, exp, *args)
    ranges = [r["range"] for r in proxy.requests(path)]
    t.check("cut short: resumed with Range", len(ranges) == 2 and ranges[1] is not None, str(ranges))

    proxy.clear()
    proxy.fault("short", path)
    t.fails("shorter than its descriptor", ref, errno.EBADMSG,
            "blob %s/private/img@%s: ended after" % (proxy.host, big), *args)

    proxy.clear()
    proxy.fault("redirect", path)
    t.pulls("redirect to another host", ref, exp, *args)
    hops = proxy.requests(big)
    t.check("redirect: Authorization to the registry, not to the other host",
            len(hops) == 2 and hops[0]["auth"] and hops[0]["status"] == 307 and
            hops[1]["path"].startswith("/_redirected/") and not hops[1]["auth"] and
            hops[1]["status"] == 200, str(hops))

    proxy.clear()
    proxy.fault("redirect", "/manifests/" + exp["manifest_digest"])
    t.pulls("manifest redirected to another host", ref, exp, *args)
    hops = proxy.requests("/manifests/" + exp["manifest_digest"])
    t.check("manifest redirect: no Authorization to the other host",
            [(h["status"], h["auth"]) for h in hops] == [(307, True), (200, False)], str(hops))

    for code in (429, 503):
        proxy.clear()
        proxy.fault("status", path, count=2, code=code)
        t.pulls("%d twice" % code, ref, exp, *args)
        st = [r["status"] for r in proxy.requests(path)]
        t.check("%d: retried" % code, st == [code, code, 200], str(st))

    proxy.clear()
    proxy.fault("status", "/manifests/", count=1, code=500)
    t.pulls("manifest 500 once", ref, exp, *args)

    tag = "/private/img/manifests/v1"
    proxy.clear()
    proxy.fault("status", tag, code=405)
    t.pulls("HEAD refused (405)", ref, exp, *args)
    seen = [(r["method"], r["status"]) for r in proxy.requests(tag)]
    t.check("405: GET after HEAD", seen[0] == ("HEAD", 405) and seen[-1] == ("GET", 200) and
            all(m == "GET" for m, _ in seen[1:]), str(seen))

    proxy.clear()
    proxy.fault("no-digest", tag)
    t.pulls("HEAD without Docker-Content-Digest", ref, exp, *args)
    seen = [(r["method"], r["status"]) for r in proxy.requests(tag)]
    t.check("no digest: GET and hash", seen[-2:] == [("HEAD", 200), ("GET", 200)], str(seen))

    proxy.clear()
    proxy.fault("corrupt", "/manifests/" + exp["manifest_digest"])
    t.fails("corrupt manifest", ref, errno.EBADMSG, "digest mismatch: expected %s, got sha256:"
            % exp["manifest_digest"], *args)

    proxy.clear()
    proxy.fault("status", path, count=10, code=503)
    t.fails("503 for good", ref, errno.EAGAIN, "HTTP 503, 3 attempt(s)", *args, "--attempts", "3")
    t.check("503 for good: 3 attempts", len(proxy.requests(path)) == 3, str(proxy.requests(path)))

    proxy.clear()
    proxy.fault("hang", path)
    t.fails("hung transfer", ref, errno.ETIMEDOUT, "no progress", *args, "--timeout", "2")


MODES = {"plain": plain, "tls-basic": tls_basic, "token": token, "faults": faults}


def main():
    mode, work, fetch_bin = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t = Test(work, fetch_bin)
    with registry.Registry(os.path.join(work, "registry"), "token" if mode == "faults" else mode) as reg:
        MODES[mode](t, reg, work)
    print("registry %s: %d checks passed, %d failed" % (mode, t.passed, len(t.failed)))
    if not t.failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
