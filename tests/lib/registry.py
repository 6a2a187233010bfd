#!/usr/bin/python3
"""A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on a free
127.0.0.1 port, its storage under a directory of the caller's, images pushed with skopeo.

  registry.py start DIR [--mode plain] [--port N]
      starts the registry in the background and prints its facts as JSON (also kept in
      DIR/registry.json): {"mode", "host": "127.0.0.1:PORT", "url", "pids", "dir", ...}
  registry.py push DIR ARCHIVE NAME[:TAG] [--all]
      skopeo copy oci-archive:ARCHIVE docker://HOST/NAME:TAG (--all: every manifest of an
      index, for multi-platform images)
  registry.py stop DIR
      stops what start started (the pids in DIR/registry.json)

As a module (tests/lib on sys.path):

    from registry import Registry
    with Registry(workdir, "plain") as reg:
        reg.push("image.tar", "name:tag")
        ... reg.host ...

Works on the host and inside the QEMU lane's guest (where only /tmp, /var/tmp, /run and
/var/lib are writable): everything is written under DIR, skopeo's temp files included.
Python's standard library only.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO_BIN = "/usr/bin/skopeo"
MODES = ("plain",)


class Fail(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_pid(pid, grace=5.0):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            # Not our child (started by another `registry.py start`): poll for it.
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class Registry:
    """One registry (and, in some modes, its helpers) under dir."""

    def __init__(self, dir, mode="plain", port=None):
        if mode not in MODES:
            raise Fail("unknown mode %r (known: %s)" % (mode, ", ".join(MODES)))
        self.dir, self.mode, self.port = os.path.abspath(dir), mode, port
        self.procs = []
        self.facts = {}

    # ---- start / stop ----
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def host(self):
        return self.facts["host"]

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        self.facts = {"mode": self.mode, "dir": self.dir}
        self.prepare_mode()
        tries = 1 if self.port else 5
        for _ in range(tries):
            port = self.port or free_port()
            if self.start_registry(port):
                break
        else:
            raise Fail("docker-registry did not start; see %s"
                       % os.path.join(self.dir, "registry.log"))
        self.facts["pids"] = [p.pid for p in self.procs]
        with open(os.path.join(self.dir, "registry.json"), "w") as fh:
            json.dump(self.facts, fh, indent=1, sort_keys=True)
            fh.write("\n")
        return self.facts

    def prepare_mode(self):
        pass

    def config(self, port):
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "data")},
                        "delete": {"enabled": True},
                        "cache": {"blobdescriptor": "inmemory"}},
            "http": {"addr": "127.0.0.1:%d" % port, "secret": secrets.token_hex(16)},
            "health": {"storagedriver": {"enabled": False}},
        }
        return cfg

    def start_registry(self, port):
        path = os.path.join(self.dir, "config.yml")
        with open(path, "w") as fh:
            json.dump(self.config(port), fh, indent=1)  # JSON is YAML
        log = open(os.path.join(self.dir, "registry.log"), "ab")
        proc = subprocess.Popen([REGISTRY_BIN, "serve", path], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
        log.close()
        scheme = "https" if self.facts.get("ca") else "http"
        url = "%s://127.0.0.1:%d" % (scheme, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False  # most likely the port was taken meanwhile
            if self.answers(url + "/v2/"):
                self.procs.append(proc)
                self.facts.update(host="127.0.0.1:%d" % port, url=url, port=port)
                return True
            time.sleep(0.05)
        stop_pid(proc.pid)
        return False

    def answers(self, url):
        ctx = None
        if url.startswith("https:"):
            import ssl
            ctx = ssl.create_default_context(cafile=self.facts["ca"])
        try:
            urllib.request.urlopen(url, timeout=2, context=ctx).close()
            return True
        except urllib.error.HTTPError as e:
            return e.code == 401
        except (OSError, urllib.error.URLError):
            return False

    def stop(self):
        for p in reversed(self.procs):
            stop_pid(p.pid)
        self.procs = []

    # ---- images ----
    def skopeo_dest_args(self):
        return ["--dest-tls-verify=false"]

    def push(self, archive, name, all_manifests=False):
        """Pushes an OCI archive as 127.0.0.1:PORT/name (name with :tag or @digest)."""
        tmp = os.path.join(self.dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        # --preserve-digests: skopeo would otherwise gzip uncompressed layers on the way, and
        # the digests a test knows from the archive would no longer be the registry's.
        cmd = [SKOPEO_BIN, "--tmpdir", tmp, "--insecure-policy", "copy", "-q",
               "--preserve-digests"]
        if all_manifests:
            cmd.append("--all")
        cmd += self.skopeo_dest_args()
        cmd += ["oci-archive:" + os.path.abspath(archive), "docker://%s/%s" % (self.host, name)]
        env = dict(os.environ, TMPDIR=tmp, HOME=os.environ.get("HOME") or tmp)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=env)
        if r.returncode != 0:
            raise Fail("skopeo copy %s -> %s/%s failed: %s"
                       % (archive, self.host, name, (r.stderr or r.stdout).strip()))


def load_facts(dir):
    try:
        with open(os.path.join(dir, "registry.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise Fail("no registry started in %s: %s" % (dir, e))


def attach(dir):
    """A Registry object for one that `registry.py start DIR` left running."""
    facts = load_facts(dir)
    reg = Registry(dir, facts["mode"])
    reg.facts = facts
    return reg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--mode", default="plain", choices=MODES)
    s.add_argument("--port", type=int)
    p = sub.add_parser("push")
    p.add_argument("dir")
    p.add_argument("archive")
    p.add_argument("name")
    p.add_argument("--all", action="store_true")
    t = sub.add_parser("stop")
    t.add_argument("dir")
    a = ap.parse_args()
    try:
        if a.cmd == "start":
            reg = Registry(a.dir, a.mode, a.port)
            facts = reg.start()
            json.dump(facts, sys.stdout, sort_keys=True)
            print()
        elif a.cmd == "push":
            attach(a.dir).push(a.archive, a.name, a.all)
        elif a.cmd == "stop":
            for pid in load_facts(a.dir).get("pids", []):
                stop_pid(pid)
    except Fail as e:
        print("registry.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
