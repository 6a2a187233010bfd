"""An HTTP proxy in front of a plain-HTTP registry that misbehaves on demand, for the
registry client's tests. It runs in the test's own process (a thread) and logs every
request it sees.

    proxy = FaultProxy("127.0.0.1:5000", storage_dir)
    proxy.fault("truncate", "/blobs/sha256:...")      # the next matching answer breaks off
    ... client against proxy.host ...
    proxy.requests("/blobs/")                          # [{"method", "path", "range", "auth", "status"}]
    proxy.close()

Faults (each applies to the next `count` requests whose path contains `match`; all but
status and redirect only to answers that upstream gave with a 2xx status):
  status    answer `code` (429, 503...) with Retry-After: `retry_after`, without asking upstream
  redirect  answer 307 to http://localhost:PORT/_redirected/<path>: another host name, served
            from the registry's storage directory, as a registry redirecting to a blob store
  corrupt   upstream's answer with one byte flipped
  truncate  upstream's answer cut after half its body, then the connection closed
  ignore-range  upstream's whole answer (200), as a server that ignores Range does
  no-digest upstream's answer without its Docker-Content-Digest header
  unsized   upstream's answer without Content-Length, cut after half its body (the end of
            the connection ends the body: it looks complete)
  short     upstream's answer cut to half its body, Content-Length saying so
  hang      upstream's headers and 64 KiB of its body, then nothing until close()
"""

import http.client
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASS_HEADERS = ("Accept", "Authorization", "Range", "User-Agent")
DROP_HEADERS = ("transfer-encoding", "connection", "keep-alive", "content-length")


class FaultProxy:
    def __init__(self, upstream, storage):
        self.upstream, self.storage = upstream, storage
        self.lock = threading.Lock()
        self.faults, self.log = [], []
        self.stop = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fault(self, kind, match, count=1, **kw):
        with self.lock:
            self.faults.append(dict(kw, kind=kind, match=match, count=count))

    def clear(self):
        with self.lock:
            self.faults, self.log = [], []

    def take(self, path, kinds, consume=True):
        """The first fault of one of kinds for path; consumed unless told otherwise."""
        with self.lock:
            for f in self.faults:
                if f["match"] in path and f["count"] > 0 and f["kind"] in kinds:
                    f["count"] -= consume
                    return f
        return None

    def consume(self, f):
        with self.lock:
            f["count"] -= 1

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def requests(self, match=""):
        with self.lock:
            return [dict(e) for e in self.log if match in e["path"]]

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def handler_for(proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.handle_one("GET")

        def do_HEAD(self):
            self.handle_one("HEAD")

        def handle_one(self, method):
            entry = {"method": method, "path": self.path, "range": self.headers.get("Range"),
                     "auth": "Authorization" in self.headers, "status": None}
            proxy.record(entry)
            try:
                if self.path.startswith("/_redirected/"):
                    return self.from_storage(entry)
                f = proxy.take(self.path, ("status", "redirect"))
                if f and f["kind"] == "status":
                    return self.empty(entry, f["code"], {"Retry-After": str(f.get("retry_after", 0))})
                if f and f["kind"] == "redirect":
                    loc = "http://localhost:%d/_redirected%s" % (proxy.port, self.path)
                    return self.empty(entry, 307, {"Location": loc})
                # The others spoil a good answer only (not a 401 on the way to one).
                f = proxy.take(self.path, ("corrupt", "truncate", "ignore-range", "hang",
                                           "no-digest", "unsized", "short"), consume=False)
                self.forward(method, entry, f)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def empty(self, entry, code, headers):
            entry["status"] = code
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def from_storage(self, entry):
            digest = self.path.rsplit("/", 1)[-1]
            hexd = digest.split(":", 1)[-1]
            path = os.path.join(proxy.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd,
                                "data")
            with open(path, "rb") as fh:
                body = fh.read()
            entry["status"] = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self, method, entry, f):
            headers = {k: self.headers[k] for k in PASS_HEADERS if k in self.headers}
            if f and f["kind"] == "ignore-range":
                headers.pop("Range", None)
            conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
            conn.request(method, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if f and 200 <= resp.status < 300:
                proxy.consume(f)
            else:
                f = None
            entry["status"] = resp.status
            self.send_response(resp.status)
            drop = DROP_HEADERS + (("docker-content-digest",) if f and f["kind"] == "no-digest" else ())
            for k, v in resp.getheaders():
                if k.lower() not in drop:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if method == "HEAD" else str(len(body))
            kind = f["kind"] if f else None
            if kind in ("unsized", "short") and method == "GET":
                body = body[:len(body) // 2]
                length = None if kind == "unsized" else str(len(body))
                if kind == "unsized":
                    self.send_header("Connection", "close")
                    self.close_connection = True
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if method == "HEAD":
                return
            self.send_body(body, f)

        def send_body(self, body, f):
            kind = f["kind"] if f else None
            if kind == "corrupt" and body:
                i = len(body) // 2
                body = body[:i] + bytes([body[i] ^ 0x55]) + body[i + 1:]
            if kind == "truncate":
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if kind == "hang":
                self.wfile.write(body[:65536])
                self.wfile.flush()
                proxy.stop.wait(120)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler
