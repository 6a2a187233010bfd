#!/usr/bin/python3
"""A real OCI registry for tests: Debian's docker-registry (distribution 2.8) on a free
127.0.0.1 port, its storage under a directory of the caller's, images pushed with skopeo.

  registry.py start DIR [--mode plain|tls-basic|token] [--port N]
      starts the registry in the background and prints its facts as JSON (also kept in
      DIR/registry.json): {"mode", "host": "127.0.0.1:PORT", "url", "pids", "dir", ...}
        plain      plain HTTP, no authentication
        tls-basic  HTTPS with a certificate from a CA made here ("ca": its PEM file), and
                   htpasswd Basic authentication ("username", "password")
        token      plain HTTP with the distribution token flow: a token service started here
                   ("token_url", "service", "token_log") signs RS256 JWTs; anonymous pulls
                   are granted for repositories under public/, everything else needs
                   "username" and "password". Tokens live "token_expires" seconds.
      tls-basic and token also write "docker_config", a docker config.json with the
      credentials.
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
Python's standard library for plain mode; python3-cryptography and python3-jwt (and
htpasswd from apache2-utils) for the others.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO_BIN = "/usr/bin/skopeo"
HTPASSWD_BIN = "/usr/bin/htpasswd"
MODES = ("plain", "tls-basic", "token")
SERVICE = "thinsnap-test-registry"
ISSUER = "thinsnap-test-token-issuer"
TOKEN_EXPIRES = 300


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
        if self.mode != "plain":
            self.write_docker_config()
        self.facts["pids"] = [p.pid for p in self.procs]
        with open(os.path.join(self.dir, "registry.json"), "w") as fh:
            json.dump(self.facts, fh, indent=1, sort_keys=True)
            fh.write("\n")
        return self.facts

    def prepare_mode(self):
        if self.mode == "plain":
            return
        self.facts.update(username="thinsnap", password=secrets.token_hex(8))
        if self.mode == "tls-basic":
            self.facts["ca"] = make_tls(self.dir)
            path = os.path.join(self.dir, "htpasswd")
            r = subprocess.run([HTPASSWD_BIN, "-Bbc", path, self.facts["username"],
                                self.facts["password"]], capture_output=True, text=True)
            if r.returncode != 0:
                raise Fail("htpasswd: %s" % r.stderr.strip())
        else:
            self.start_token_service()

    def start_token_service(self):
        make_token_key(self.dir)
        self.facts.update(service=SERVICE, token_log=os.path.join(self.dir, "token.log"),
                          token_expires=TOKEN_EXPIRES)
        with open(os.path.join(self.dir, "token.json"), "w") as fh:
            json.dump(self.facts, fh)
        log = open(os.path.join(self.dir, "token-service.log"), "ab")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "token-service",
                                 self.dir], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True)
        log.close()
        line = proc.stdout.readline().decode().strip()
        proc.stdout.close()
        if not line.isdigit():
            stop_pid(proc.pid)
            raise Fail("the token service did not start; see %s/token-service.log" % self.dir)
        self.procs.append(proc)
        self.facts["token_url"] = "http://127.0.0.1:%s/token" % line

    def write_docker_config(self):
        auth = base64.b64encode(("%s:%s" % (self.facts["username"], self.facts["password"]))
                                .encode()).decode()
        path = os.path.join(self.dir, "docker-config.json")
        with open(path, "w") as fh:
            json.dump({"auths": {self.facts["host"]: {"auth": auth}}}, fh)
        self.facts["docker_config"] = path

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
        if self.mode == "tls-basic":
            cfg["http"]["tls"] = {"certificate": os.path.join(self.dir, "server.crt"),
                                  "key": os.path.join(self.dir, "server.key")}
            cfg["auth"] = {"htpasswd": {"realm": "thinsnap-test",
                                        "path": os.path.join(self.dir, "htpasswd")}}
        elif self.mode == "token":
            cfg["auth"] = {"token": {"realm": self.facts["token_url"], "service": SERVICE,
                                     "issuer": ISSUER,
                                     "rootcertbundle": os.path.join(self.dir, "token.crt")}}
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
        if self.mode == "plain":
            return ["--dest-tls-verify=false"]
        creds = ["--dest-creds", "%s:%s" % (self.facts["username"], self.facts["password"])]
        if self.mode == "tls-basic":
            return ["--dest-cert-dir", os.path.join(self.dir, "certs")] + creds
        return ["--dest-tls-verify=false"] + creds

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


# ---- keys and certificates (python3-cryptography) ----

NOT_BEFORE = datetime.datetime(2020, 1, 1)
NOT_AFTER = datetime.datetime(2100, 1, 1)


def write_pem(path, data, mode=0o644):
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def make_tls(dir):
    """A CA (DIR/ca.crt, also DIR/certs/ca.crt for skopeo) and a certificate for 127.0.0.1
    and localhost signed by it (DIR/server.crt, server.key). Returns the CA's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject, issuer, pub):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(pub).serial_number(x509.random_serial_number())
                .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)
    ca = (builder(name("thinsnap test CA"), name("thinsnap test CA"), ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       **usage), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (builder(name("127.0.0.1"), ca.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False,
                                         crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    write_pem(os.path.join(dir, "ca.crt"), ca_pem)
    os.makedirs(os.path.join(dir, "certs"), exist_ok=True)
    write_pem(os.path.join(dir, "certs", "ca.crt"), ca_pem)
    write_pem(os.path.join(dir, "server.crt"), cert.public_bytes(pem))
    write_pem(os.path.join(dir, "server.key"), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    return os.path.join(dir, "ca.crt")


def make_token_key(dir):
    """The token service's RSA key (DIR/token.key) and a self-signed certificate for it
    (DIR/token.crt), the registry's rootcertbundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    cert = (x509.CertificateBuilder().subject_name(n).issuer_name(n)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
            .sign(key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    write_pem(os.path.join(dir, "token.crt"), cert.public_bytes(pem))
    write_pem(os.path.join(dir, "token.key"), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)


def libtrust_key_id(public_key):
    """The key id distribution looks a token's "kid" up by (libtrust's form): base32 of
    the first 240 bits of the sha256 of the DER public key, in groups of four."""
    from cryptography.hazmat.primitives import serialization
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


# ---- the token service ----

class TokenService:
    """Answers GET (Basic credentials or anonymous) and POST (OAuth2 password grant) on
    /token with an RS256 JWT granting what the caller may do; logs each request as a JSON
    line: {"method", "user", "scopes", "status"}."""

    def __init__(self, facts):
        import jwt
        from cryptography.hazmat.primitives import serialization
        self.jwt, self.facts = jwt, facts
        with open(os.path.join(facts["dir"], "token.key"), "rb") as fh:
            self.key = serialization.load_pem_private_key(fh.read(), None)
        self.kid = libtrust_key_id(self.key.public_key())
        self.log_lock = threading.Lock()

    def log(self, entry):
        with self.log_lock, open(self.facts["token_log"], "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def grant(self, user, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            actions = [a for a in parts[2].split(",")
                       if user or (a == "pull" and parts[1].startswith("public/"))]
            access.append({"type": "repository", "name": parts[1], "actions": actions})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": self.facts["service"],
                  "exp": now + self.facts["token_expires"], "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        return self.jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def answer(self, method, params, basic):
        """(status, body) for a request with query or form params and Basic credentials."""
        creds = None
        if method == "POST":
            if params.get("grant_type", [""])[0] != "password":
                return 400, {"error": "unsupported_grant_type"}
            creds = (params.get("username", [""])[0], params.get("password", [""])[0])
        elif basic:
            creds = basic
        scopes = [x for s in params.get("scope", []) for x in s.split(" ") if x]
        user = None
        if creds:
            if creds != (self.facts["username"], self.facts["password"]):
                self.log({"method": method, "user": creds[0], "scopes": scopes, "status": 401})
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            user = creds[0]
        token = self.grant(user, scopes)
        self.log({"method": method, "user": user, "scopes": scopes, "status": 200})
        # GET answers "token", POST "access_token", as Docker Hub's endpoints do.
        key = "access_token" if method == "POST" else "token"
        return 200, {key: token, "expires_in": self.facts["token_expires"]}


def token_handler(service):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def basic(self):
            h = self.headers.get("Authorization", "")
            if not h.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(h[6:]).decode().partition(":")
            return (user, password)

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path != "/token":
                return self.reply(404, {})
            self.reply(*service.answer("GET", urllib.parse.parse_qs(u.query), self.basic()))

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(n).decode())
            if urllib.parse.urlsplit(self.path).path != "/token":
                return self.reply(404, {})
            self.reply(*service.answer("POST", form, None))

    return Handler


def run_token_service(dir):
    with open(os.path.join(dir, "token.json")) as fh:
        facts = json.load(fh)
    server = ThreadingHTTPServer(("127.0.0.1", 0), token_handler(TokenService(facts)))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


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
    k = sub.add_parser("token-service", help="(started by start --mode token)")
    k.add_argument("dir")
    a = ap.parse_args()
    try:
        if a.cmd == "start":
            reg = Registry(a.dir, a.mode, a.port)
            facts = reg.start()
            json.dump(facts, sys.stdout, sort_keys=True)
            print()
        elif a.cmd == "push":
            attach(a.dir).push(a.archive, a.name, a.all)
        elif a.cmd == "token-service":
            run_token_service(a.dir)
        elif a.cmd == "stop":
            for pid in load_facts(a.dir).get("pids", []):
                stop_pid(pid)
    except Fail as e:
        print("registry.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
