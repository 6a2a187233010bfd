#!/usr/bin/python3
"""Hostile clients against the rpc server (the test service's server binary,
tests/rpc/server-main.c): each case attacks it one way, then checks that
another client, on a connection of its own through grpcio, is still served
and that the server's resident memory stayed under the case's bound.

  hostile_test.py SERVER_BINARY [CASE...]

A failing allocation at accept is tried in tests/unit/test-rpc-limits.c
(accept_out_of_memory), where allocations can be made to fail."""
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import grpc

MiB = 1 << 20
ECHO = "/thinsnap.test.v1.Test/Echo"
STREAM = "/thinsnap.test.v1.Test/Stream"
PATIENCE = 60  # seconds to wait for what must happen; never what is tested

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW_SIZE = 4
CANCEL, FLOW_CONTROL_ERROR = 8, 3

failures = []


def check(name, cond, detail=""):
    print("%s %s %s" % ("ok  " if cond else "FAIL", name, detail), flush=True)
    if not cond:
        failures.append(name)
    return cond


# ---- messages of testsvc.proto, by hand ----

def varint(v):
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def echo_request(text=b"", repeat=0, size=0):
    out = b"\x0a" + varint(len(text)) + text if text else b""
    if repeat:
        out += b"\x20" + varint(repeat)
    if size:
        out += b"\x28" + varint(size)
    return out


def grpc_message(body):
    return b"\x00" + struct.pack(">I", len(body)) + body


# ---- HTTP/2 by hand ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def hpack_int(pattern, bits, v):
    top = (1 << bits) - 1
    if v < top:
        return bytes([pattern | v])
    out, v = bytearray([pattern | top]), v - top
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


def hpack_field(name, value, indexed=False):
    n, v = name.encode(), value.encode()
    return (hpack_int(0x40, 6, 0) if indexed else hpack_int(0, 4, 0)) + \
        hpack_int(0, 7, len(n)) + n + hpack_int(0, 7, len(v)) + v


def request_block(path):
    return b"".join(hpack_field(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers")))


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Raw:
    """One connection speaking HTTP/2 by hand; keeps count of the send
    windows the server grants."""

    def __init__(self, path, *pairs, window=True):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        self.conn_window = 65535
        self.stream_window = {}
        self.initial = 65535
        out = PREFACE + settings(*pairs)
        if window:  # our own receive window: never the limit here
            out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))
        self.s.sendall(out)

    def close(self):
        self.s.close()

    def read_frame(self, timeout=PATIENCE):
        """(type, flags, sid, payload), or None when the server closed."""
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    t, fl = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    p, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    self.account(t, fl, sid, p)
                    return t, fl, sid, p
            try:
                d = self.s.recv(1 << 20)
            except ConnectionResetError:
                d = b""
            if not d:
                return None
            self.buf += d

    def account(self, t, fl, sid, p):
        if t == WINDOW_UPDATE:
            inc = int.from_bytes(p[:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self.conn_window += inc
            else:
                self.stream_window[sid] = self.stream_window.get(sid, self.initial) + inc
        if t == SETTINGS and not fl & ACK:
            for i in range(0, len(p), 6):
                k, v = struct.unpack(">HI", p[i:i + 6])
                if k == INITIAL_WINDOW_SIZE:
                    self.initial = v
            self.s.sendall(frame(SETTINGS, ACK, 0))

    def window(self, sid):
        return min(self.conn_window, self.stream_window.get(sid, self.initial))

    def send_data(self, sid, data, flags=0):
        self.s.sendall(frame(DATA, flags, sid, data))
        self.conn_window -= len(data)
        self.stream_window[sid] = self.stream_window.get(sid, self.initial) - len(data)

    def ping(self):
        """Sends a PING and reads up to its ACK; returns the frames before."""
        self.s.sendall(frame(PING, 0, 0, b"hostile!"))
        seen = []
        while True:
            f = self.read_frame()
            if f is None:
                return seen
            if f[0] == PING and f[1] & ACK:
                return seen
            seen.append(f)


# ---- the server ----

class Server:
    def __init__(self, binary, args=(), env=None, nofile=None):
        self.tmp = tempfile.mkdtemp(prefix="ts-hostile-")
        self.sock = os.path.join(self.tmp, "s.sock")
        e = dict(os.environ)
        # ASan keeps freed memory in quarantine (256 MiB by default), which
        # would be counted as the server's; a small one keeps the checks.
        e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
        e.update(env or {})

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.p = subprocess.Popen([binary, self.sock] + list(args), stdout=subprocess.PIPE,
                                  env=e, preexec_fn=limit)
        line = self.p.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("server did not start: %r" % line)
        echo(self.sock, b"warm")
        self.base = self.rss()

    def rss(self, field="VmRSS"):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def descriptors(self):
        return len(os.listdir("/proc/%d/fd" % self.p.pid))

    def check_memory(self, name, bound):
        peak = self.rss("VmHWM") - self.base
        check(name + ": memory", peak <= bound,
              "peak %.1f MiB above the start, bound %.0f MiB" % (peak / MiB, bound / MiB))

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)
        return rc


def echo(sock, text, timeout=PATIENCE):
    """One Echo through grpcio on a new connection; the text it answered."""
    with grpc.insecure_channel("unix:" + sock) as ch:
        r = ch.unary_unary(ECHO)(echo_request(text), timeout=timeout)
    return r[2:2 + r[1]] if r[:1] == b"\x0a" else b""


def served(srv, name):
    try:
        ok = echo(srv.sock, b"still served") == b"still served"
        check(name + ": another client is served", ok)
    except grpc.RpcError as e:
        check(name + ": another client is served", False, "%s %s" % (e.code(), e.details()))


def watch_memory(srv, bound):
    """False once the server holds more than twice its bound: the attack
    is stopped there rather than let it take the machine."""
    return srv.rss() - srv.base <= 2 * bound


# ---- the cases ----

def case_hpack_expansion(binary):
    """256 streams whose headers reference a 4000-byte HPACK entry 200 times
    each: 200 bytes on the wire, 800 KB decoded, per stream."""
    name, bound = "hpack expansion on 256 streams", 64 * MiB
    srv = Server(binary)
    try:
        r = Raw(srv.sock)
        r.ping()
        block = request_block(ECHO)
        first = block + hpack_field("x-big", "h" * 4000, indexed=True)
        refs = bytes([0x80 | 62]) * 200
        out = b""
        for i in range(256):
            out += frame(HEADERS, END_HEADERS, 1 + 2 * i, (first if i == 0 else block) + refs)
        r.s.sendall(out)
        statuses = 0
        while statuses < 256:
            f = r.read_frame()
            if f is None:
                break
            if f[0] == HEADERS and f[1] & END_STREAM:
                statuses += 1
        check(name + ": every call refused", statuses == 256, "%d answered" % statuses)
        srv.check_memory(name, bound)
        served(srv, name)
        r.close()
    finally:
        srv.stop()


def case_preface_only(binary):
    """2000 connections that send the preface and then nothing."""
    name, bound, n = "2000 connections with only a preface", 64 * MiB, 2000
    srv = Server(binary)
    conns = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.sock)
            s.sendall(PREFACE + settings())
            conns.append(s)
        served(srv, name)
        closed, limit = 0, time.monotonic() + PATIENCE
        for s in conns:
            s.settimeout(max(0.01, limit - time.monotonic()))
            try:
                while s.recv(65536):
                    pass
                closed += 1
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed += 1
            if closed >= n - 1024:
                break
        check(name + ": the oldest idle ones are closed", closed >= n - 1024,
              "%d closed" % closed)
        srv.check_memory(name, bound)
    finally:
        for s in conns:
            s.close()
        srv.stop()


def case_unfinished_messages(binary):
    """256 streams, each sending 16 MiB - 1 bytes of a 16 MiB message,
    honouring flow control: no more than the connection window arrives."""
    name, bound = "256 unfinished 16 MiB messages", 128 * MiB
    srv = Server(binary)
    try:
        r = Raw(srv.sock)
        r.ping()
        sids = [1 + 2 * i for i in range(256)]
        left = {}
        out = b""
        for sid in sids:
            out += frame(HEADERS, END_HEADERS, sid, request_block(ECHO))
        r.s.sendall(out)
        for sid in sids:
            r.send_data(sid, b"\x00" + struct.pack(">I", 16 * MiB))
            left[sid] = 16 * MiB - 1 - 5
        chunk, sent, blown = b"u" * 16384, 0, False
        while left and not blown:
            progress = False
            for sid in list(left):
                k = min(len(chunk), left[sid], r.window(sid))
                if k <= 0:
                    continue
                r.send_data(sid, chunk[:k])
                sent += k
                left[sid] -= k
                progress = True
                if not left[sid]:
                    del left[sid]
            if sent % (8 * MiB) < 16384 * len(sids):
                blown = not watch_memory(srv, bound)
            if not progress:
                # Blocked: see whether the server gives window back.
                before = r.conn_window
                r.ping()
                if r.conn_window == before:
                    break
        check(name + ": flow control holds the client", not blown and bool(left),
              "%.1f MiB sent" % (sent / MiB))
        check(name + ": within the connection window", sent <= 32 * MiB + 10,
              "%.1f MiB sent" % (sent / MiB))
        srv.check_memory(name, bound)
        served(srv, name)
        r.close()

        # A client that ignores flow control loses its connection: four
        # unfinished messages of 12 MiB each, past the 32 MiB window.
        r = Raw(srv.sock)
        r.ping()
        r.s.sendall(b"".join(frame(HEADERS, END_HEADERS, sid, request_block(ECHO)) +
                             frame(DATA, 0, sid, b"\x00" + struct.pack(">I", 16 * MiB))
                             for sid in (1, 3, 5, 7)))
        goaway = None
        try:
            for _ in range(12 * MiB // 16384):
                r.s.sendall(b"".join(frame(DATA, 0, sid, chunk) for sid in (1, 3, 5, 7)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            f = r.read_frame()
            if f is None:
                break
            if f[0] == GOAWAY:
                goaway = int.from_bytes(f[3][4:8], "big")
        check(name + ": flow control violated -> GOAWAY", goaway == FLOW_CONTROL_ERROR,
              "GOAWAY %s" % goaway)
        r.close()
        srv.check_memory(name, bound)
    finally:
        srv.stop()


def case_zero_window(binary):
    """16 streaming calls on a connection whose stream window is 0, with
    as many handler threads as thinsnapd has."""
    name, bound = "16 streams with a zero window", 128 * MiB
    srv = Server(binary, ["--send-timeout-ms", "2000"], env={"UV_THREADPOOL_SIZE": "16"})
    try:
        r = Raw(srv.sock, (INITIAL_WINDOW_SIZE, 0))
        r.ping()
        out = b""
        for i in range(16):
            sid = 1 + 2 * i
            out += frame(HEADERS, END_HEADERS, sid, request_block(STREAM))
            out += frame(DATA, END_STREAM, sid,
                         grpc_message(echo_request(b"z", repeat=1000000, size=65536)))
        r.s.sendall(out)
        served(srv, name)
        reset = set()
        while len(reset) < 16:
            f = r.read_frame()
            if f is None:
                break
            if f[0] == RST_STREAM and int.from_bytes(f[3][:4], "big") == CANCEL:
                reset.add(f[2])
        check(name + ": unread replies are reset", len(reset) == 16, "%d reset" % len(reset))
        srv.check_memory(name, bound)
        served(srv, name)
        r.close()
    finally:
        srv.stop()


def alive(path):
    """Connects, sends a PING: True when it is answered, False when the
    server closes the connection instead."""
    try:
        r = Raw(path)
        r.s.sendall(frame(PING, 0, 0, b"alive?  "))
        while True:
            f = r.read_frame()
            if f is None or (f[0] == PING and f[1] & ACK):
                return r if f else None
    except (BrokenPipeError, ConnectionResetError):
        return None


def case_out_of_descriptors(binary):
    """A server with 64 descriptors and 100 clients."""
    name, bound = "accept out of descriptors", 32 * MiB
    srv = Server(binary, nofile=64)
    conns = []
    try:
        conns = [alive(srv.sock) for _ in range(100)]
        closed = sum(1 for r in conns if r is None)
        check(name + ": the ones past the limit are closed", closed >= 30, "%d closed" % closed)
        for r in conns:
            if r:
                r.close()
        conns = []
        limit = time.monotonic() + PATIENCE
        while srv.descriptors() > 16 and time.monotonic() < limit:
            time.sleep(0.01)  # the server has yet to see them go
        served(srv, name)
        srv.check_memory(name, bound)
    finally:
        for r in conns:
            if r:
                r.close()
        srv.stop()


CASES = {
    "hpack": case_hpack_expansion,
    "preface": case_preface_only,
    "unfinished": case_unfinished_messages,
    "zero-window": case_zero_window,
    "descriptors": case_out_of_descriptors,
}


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for c in sys.argv[2:] or list(CASES):
        print("# " + c, flush=True)
        try:
            CASES[c](sys.argv[1])
        except (OSError, grpc.RpcError) as e:
            check(c, False, "%s: %s" % (type(e).__name__, e))
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
