#!/usr/bin/python3
"""Checks tests/lib/registry.py itself: start a registry in MODE, push an image built by
tests/lib/build-image, read it back over the distribution API with an independent
client (urllib), check its digests, and that stop leaves no process behind.

  registry_lib_test.py MODE WORKDIR
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
import registry  # noqa: E402

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def opener(reg):
    handlers = []
    if reg.facts.get("ca"):
        import ssl
        handlers.append(urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=reg.facts["ca"])))
    return urllib.request.build_opener(*handlers)


def get(reg, path, auth=None, accept=ACCEPT):
    req = urllib.request.Request(reg.facts["url"] + path, headers={"Accept": accept})
    if auth:
        req.add_header("Authorization", auth)
    with opener(reg).open(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def status_of(reg, path, auth=None):
    try:
        return get(reg, path, auth)[0]
    except urllib.error.HTTPError as e:
        return e.code


def token_for(reg, scope, user=None, password=None):
    url = "%s?service=%s&scope=%s" % (reg.facts["token_url"], reg.facts["service"], scope)
    req = urllib.request.Request(url)
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(
            ("%s:%s" % (user, password)).encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["token"]


def main():
    mode, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    img = os.path.join(work, "img")
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "tests/lib/build-image"),
                    "build", img, "--name", "lib/test:v1"], check=True, stdout=subprocess.DEVNULL)
    expected = json.load(open(os.path.join(img, "expected.json")))
    failed = []

    def check(name, got, want):
        if got != want:
            failed.append("%s: got %r, want %r" % (name, got, want))

    reg = registry.Registry(os.path.join(work, "reg"), mode)
    with reg:
        repo = "public/lib" if mode == "token" else "lib/test"
        reg.push(os.path.join(img, "image.tar"), repo + ":v1")
        auth = None
        if mode == "tls-basic":
            check("anonymous GET of a manifest", status_of(reg, "/v2/%s/manifests/v1" % repo), 401)
            auth = "Basic " + base64.b64encode(
                ("%s:%s" % (reg.facts["username"], reg.facts["password"])).encode()).decode()
        elif mode == "token":
            check("GET without a token", status_of(reg, "/v2/%s/manifests/v1" % repo), 401)
            auth = "Bearer " + token_for(reg, "repository:%s:pull" % repo)
        st, hdr, body = get(reg, "/v2/%s/manifests/v1" % repo, auth)
        check("manifest status", st, 200)
        check("Docker-Content-Digest", hdr.get("Docker-Content-Digest"), expected["manifest_digest"])
        for layer in expected["layers"]:
            st, hdr, body = get(reg, "/v2/%s/blobs/%s" % (repo, layer["digest"]), auth, "*/*")
            check("layer %s size" % layer["digest"], len(body), layer["size"])
        pids = list(reg.facts["pids"])
    for pid in pids:
        try:
            os.kill(pid, 0)
            failed.append("process %d still runs after stop" % pid)
        except ProcessLookupError:
            pass
    for f in failed:
        print("FAIL: " + f)
    if not failed:
        print("registry.py %s: started, pushed, read back %d layers, stopped" % (
            mode, len(expected["layers"])))
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
