#!/usr/bin/python3
"""thinsnap's rpc layer against an independent gRPC implementation
(Debian's python3-grpcio).

  peer_test.py client SERVER_BINARY   grpcio calls our server
  peer_test.py server CLIENT_BINARY   our client calls a grpcio server

Messages of testsvc.proto are encoded by hand, so no code generation."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

SVC = "/thinsnap.test.v1.Test/"
MAX_MESSAGE = 1 << 20  # the server binary is started with this limit


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, v):
    return varint(num << 3) + varint(v) if v else b""


def echo_request(text="", sleep_ms=0, metadata_key="", repeat=0, size=0, fail_at=0,
                 peer=False):
    out = b""
    if text:
        out += field_bytes(1, text.encode())
    out += field_varint(2, sleep_ms)
    if metadata_key:
        out += field_bytes(3, metadata_key.encode())
    out += field_varint(4, repeat) + field_varint(5, size) + field_varint(6, fail_at)
    out += field_varint(7, 1 if peer else 0)
    return out


def parse(data):
    """Returns {field number: value} of a flat message (last value wins)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(data, i)
        elif wt == 2:
            n, i = read_varint(data, i)
            v = data[i:i + n]
            if len(v) != n:
                raise ValueError("truncated")
            i += n
        else:
            raise ValueError("wire type %d" % wt)
        fields[num] = v
    return fields


def read_varint(data, i):
    v, shift = 0, 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def echo_response(text="", index=0, blob=b""):
    out = field_bytes(1, text.encode()) if text else b""
    out += field_varint(2, index)
    if blob:
        out += field_bytes(3, blob)
    return out


failures = []


def check(name, cond, detail=""):
    print("%s %s %s" % ("ok  " if cond else "FAIL", name, detail), flush=True)
    if not cond:
        failures.append(name)


def expect_code(name, fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        check(name, e.code() == code, "got %s: %s" % (e.code(), e.details()))
        return e
    check(name, False, "call succeeded, expected %s" % code)
    return None


def start_server(server_bin, args):
    tmp = tempfile.mkdtemp(prefix="ts-rpc-py-")
    sock = os.path.join(tmp, "s.sock")
    srv = subprocess.Popen([server_bin, sock] + args, stdout=subprocess.PIPE)
    line = srv.stdout.readline()
    check("server ready", line.strip() == b"ready", repr(line))
    return srv, tmp, sock


def stop_server(srv, tmp, sock):
    if srv.poll() is None:
        srv.kill()
        srv.wait()
    try:
        os.unlink(sock)
    except FileNotFoundError:
        pass
    os.rmdir(tmp)


def run_client_tests(server_bin, args):
    print("# server options: %s" % " ".join(args), flush=True)
    srv, tmp, sock = start_server(server_bin, [str(MAX_MESSAGE)] + args)
    try:
        ch = grpc.insecure_channel("unix:" + sock)
        echo = ch.unary_unary(SVC + "Echo")
        stream = ch.unary_stream(SVC + "Stream")
        fail = ch.unary_unary(SVC + "Fail")

        r = parse(echo(echo_request("hello"), timeout=30))
        check("unary ok", r.get(1) == b"hello", repr(r))

        r = parse(echo(echo_request(metadata_key="containerd-namespace"),
                       metadata=[("containerd-namespace", "k8s.io")], timeout=30))
        check("metadata reaches the handler", r.get(1) == b"k8s.io", repr(r))

        r = parse(echo(echo_request(peer=True), timeout=30))
        want = "uid=%d gid=%d pid=%d" % (os.getuid(), os.getgid(), os.getpid())
        check("caller's credentials", r.get(1) == want.encode(), repr(r))

        r = parse(echo(echo_request(size=512 * 1024), timeout=30))
        check("512 KiB response", len(r.get(3, b"")) == 512 * 1024)

        msgs = [parse(m) for m in stream(echo_request("s", repeat=100, size=1000), timeout=30)]
        check("server streaming", len(msgs) == 100 and
              [m.get(2, 0) for m in msgs] == list(range(100)), "%d messages" % len(msgs))

        got = []

        def partial_stream():
            for m in stream(echo_request("p", repeat=10, fail_at=3), timeout=30):
                got.append(m)
        e = expect_code("stream failing midway", partial_stream, grpc.StatusCode.ABORTED)
        check("messages before the failure arrive", len(got) == 3, "%d" % len(got))

        text = "snapshot \"k/1\" 100% missing, caf\u00e9\n"
        e = expect_code("handler status", lambda: fail(echo_request(text), timeout=30),
                        grpc.StatusCode.NOT_FOUND)
        check("grpc-message round trip", e is not None and e.details() == text,
              repr(e.details() if e else None))

        expect_code("deadline exceeded",
                    lambda: echo(echo_request("slow", sleep_ms=20000), timeout=0.3),
                    grpc.StatusCode.DEADLINE_EXCEEDED)

        expect_code("unknown method", lambda: ch.unary_unary(SVC + "Nope")(b"", timeout=30),
                    grpc.StatusCode.UNIMPLEMENTED)
        expect_code("unknown service",
                    lambda: ch.unary_unary("/other.Svc/Echo")(b"", timeout=30),
                    grpc.StatusCode.UNIMPLEMENTED)

        expect_code("oversized request",
                    lambda: echo(field_bytes(1, b"x" * (MAX_MESSAGE + 10)), timeout=30),
                    grpc.StatusCode.RESOURCE_EXHAUSTED)

        expect_code("undecodable request",
                    lambda: echo(b"\x0a\x64ab", timeout=30), grpc.StatusCode.INVALID_ARGUMENT)

        expect_code("gzip-compressed request",
                    lambda: echo(echo_request("z" * 1000), timeout=30,
                                 compression=grpc.Compression.Gzip),
                    grpc.StatusCode.UNIMPLEMENTED)

        # Many concurrent calls on one channel (one HTTP/2 connection).
        futs = [echo.future(echo_request("c%d" % i, sleep_ms=i % 7), timeout=60)
                for i in range(64)]
        ok = all(parse(f.result()).get(1) == ("c%d" % i).encode() for i, f in enumerate(futs))
        check("64 concurrent calls", ok)

        # Garbage, then a connection that stops mid-preface: both dropped.
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096),
                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(sock)
            try:
                s.sendall(junk)
                while s.recv(65536):
                    pass
                closed = True
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except socket.timeout:
                closed = False
            s.close()
            check("garbage connection closed", closed)
        ch2 = grpc.insecure_channel("unix:" + sock)
        r = parse(ch2.unary_unary(SVC + "Echo")(echo_request("after garbage"), timeout=30))
        check("server still serves after garbage", r.get(1) == b"after garbage")
        ch2.close()

        # Graceful shutdown: a call in flight finishes, the server exits 0.
        slow = echo.future(echo_request("in flight", sleep_ms=700), timeout=60)
        time.sleep(0.3)
        srv.send_signal(signal.SIGTERM)
        try:
            r = parse(slow.result())
            check("call in flight survives shutdown", r.get(1) == b"in flight")
        except grpc.RpcError as e:
            check("call in flight survives shutdown", False, str(e.code()))
        rc = srv.wait(timeout=60)
        check("server exits 0 after shutdown", rc == 0, "rc=%s" % rc)
        ch.close()
    finally:
        stop_server(srv, tmp, sock)


def run_queue_bound_tests(server_bin):
    """One handler thread, one queued call: past that, calls are refused."""
    srv, tmp, sock = start_server(server_bin, ["--handler-threads", "1",
                                               "--max-queued-calls", "1"])
    try:
        ch = grpc.insecure_channel("unix:" + sock)
        echo = ch.unary_unary(SVC + "Echo")
        # An endless stream holds the only thread once its first message is here.
        holder = ch.unary_stream(SVC + "Stream")(
            echo_request("h", repeat=1000000000, sleep_ms=5), timeout=600)
        next(holder)
        futs = [echo.future(echo_request("q%d" % i), timeout=600) for i in range(5)]
        limit = time.monotonic() + 300
        while sum(f.done() for f in futs) < 4 and time.monotonic() < limit:
            time.sleep(0.01)
        done = [f for f in futs if f.done()]
        pending = [f for f in futs if not f.done()]
        codes = [str(f.exception().code()) if f.exception() else "OK" for f in done]
        check("calls past the queue bound are refused at once",
              len(pending) == 1 and codes == ["StatusCode.RESOURCE_EXHAUSTED"] * 4, repr(codes))
        holder.cancel()
        queued = pending[0].result()
        check("the queued call runs once the thread is free",
              parse(queued).get(1, b"").startswith(b"q"))
        r = parse(echo(echo_request("after"), timeout=30))
        check("served again", r.get(1) == b"after")
        ch.close()
    finally:
        stop_server(srv, tmp, sock)


# ---- grpcio as the server ----

def h_echo(req, ctx):
    f = parse(req)
    if f.get(2):
        time.sleep(f[2] / 1000.0)
    text = f.get(1, b"").decode()
    key = f.get(3, b"").decode()
    if key:
        md = dict(ctx.invocation_metadata())
        text = md.get(key, "(none)")
    return echo_response(text, blob=b"x" * f.get(5, 0))


def h_stream(req, ctx):
    f = parse(req)
    for i in range(f.get(4, 0)):
        if f.get(6) and i == f[6]:
            ctx.abort(grpc.StatusCode.ABORTED, "failed at %d" % i)
        yield echo_response(f.get(1, b"").decode(), index=i)


def h_fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, parse(req).get(1, b"").decode())


def h_chat(it, ctx):
    for i, req in enumerate(it):
        yield echo_response("re:" + parse(req).get(1, b"").decode(), index=i)


def run_server_tests(client_bin):
    tmp = tempfile.mkdtemp(prefix="ts-rpc-py-")
    sock = os.path.join(tmp, "p.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler("thinsnap.test.v1.Test", {
        "Echo": grpc.unary_unary_rpc_method_handler(h_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(h_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(h_fail),
        "Chat": grpc.stream_stream_rpc_method_handler(h_chat),
    })
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("unix:" + sock)
    server.start()
    try:
        rc = subprocess.call([client_bin, sock], timeout=240)
        check("our client against grpcio server", rc == 0, "rc=%d" % rc)
    finally:
        server.stop(grace=None)
        try:
            os.unlink(sock)
        except FileNotFoundError:
            pass
        os.rmdir(tmp)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("client", "server"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "client":
        run_client_tests(sys.argv[2], [])
        run_client_tests(sys.argv[2], ["--handler-threads", "4"])
        run_queue_bound_tests(sys.argv[2])
    else:
        run_server_tests(sys.argv[2])
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
