#!/usr/bin/python3
"""Writes the seed inputs of fuzz-rpc-server into rpc-server-seeds/: HTTP/2 client
conversations (after the preface, which the harness adds when the first
byte is odd) built by hand: SETTINGS, HEADERS with literal HPACK fields,
DATA with gRPC-framed messages."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_len(n):
    """A string length with HPACK's 7-bit prefix (no Huffman)."""
    if n < 127:
        return bytes([n])
    out, n = bytearray([127]), n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    return bytes(out + bytearray([n]))


def hpack(headers, indexed=False):
    """Literal fields with new names; indexed: added to the dynamic table."""
    out = b""
    for k, v in headers:
        out += (b"\x40" if indexed else b"\x00") + hpack_len(len(k)) + k.encode() + \
            hpack_len(len(v)) + v.encode()
    return out


def headers(sid, path, extra=(), end_stream=False, tail=b""):
    h = [(":method", "POST"), (":scheme", "http"), (":path", path),
         (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")]
    h += list(extra)
    return frame(1, 0x4 | (0x1 if end_stream else 0), sid, hpack(h) + tail)


def grpc_msg(body, flag=0):
    return bytes([flag]) + struct.pack(">I", len(body)) + body


def data(sid, payload, end=True):
    return frame(0, 0x1 if end else 0, sid, payload)


settings = frame(4, 0, 0, b"")
echo_req = b"\x0a\x05hello" + b"\x1a\x14containerd-namespace"
stream_req = b"\x0a\x01s\x20\x03"

seeds = {
    "unary": settings + headers(1, "/thinsnap.test.v1.Test/Echo",
                                [("containerd-namespace", "default")]) +
             data(1, grpc_msg(echo_req)),
    "stream": settings + headers(1, "/thinsnap.test.v1.Test/Stream") +
              data(1, grpc_msg(stream_req)),
    "unknown": settings + headers(1, "/no.Such/Method", end_stream=True),
    "compressed-timeout": settings + headers(1, "/thinsnap.test.v1.Test/Echo",
                                             [("grpc-timeout", "5m")]) +
                          data(1, grpc_msg(b"\x0a\x01z", flag=1)),
    "split-interleaved": settings +
        headers(1, "/thinsnap.test.v1.Test/Echo") + headers(3, "/t.Raw/Raw") +
        data(1, grpc_msg(echo_req)[:3], end=False) + data(3, grpc_msg(b"raw")[:6], end=False) +
        data(1, grpc_msg(echo_req)[3:]) + data(3, grpc_msg(b"raw")[6:]) +
        frame(3, 0, 3, struct.pack(">I", 8)),
    "oversized": settings + headers(1, "/thinsnap.test.v1.Test/Echo") +
                 data(1, b"\x00\x00\x01\x00\x00" + b"a" * 64),
    # A 4000-byte header into HPACK's table, then 20 one-byte references to
    # it: past the 64 KiB header list bound once decoded.
    "header-expansion": settings +
        headers(1, "/thinsnap.test.v1.Test/Echo",
                tail=hpack([("x-big", "h" * 4000)], indexed=True) + b"\xbe" * 20) +
        data(1, grpc_msg(echo_req)) +
        headers(3, "/thinsnap.test.v1.Test/Echo") + data(3, grpc_msg(echo_req)),
    # A message declared at the size limit whose bytes stop early, then the
    # stream is reset: its window comes back.
    "unfinished-reset": settings + headers(1, "/thinsnap.test.v1.Test/Echo") +
        data(1, b"\x00\x00\x00\x10\x00" + b"a" * 100, end=False) +
        frame(3, 0, 1, struct.pack(">I", 8)) +
        headers(3, "/thinsnap.test.v1.Test/Echo") + data(3, grpc_msg(echo_req)),
    "goaway-ping": settings + frame(6, 0, 0, b"12345678") +
                   headers(1, "/thinsnap.test.v1.Test/Echo") + data(1, grpc_msg(b"\xff\xff")) +
                   frame(7, 0, 0, struct.pack(">II", 0, 0)),
}

os.makedirs(os.path.join(here, "rpc-server-seeds"), exist_ok=True)
for name, body in seeds.items():
    with open(os.path.join(here, "rpc-server-seeds", name), "wb") as f:
        f.write(b"\x01" + body)
with open(os.path.join(here, "rpc-server-seeds", "http1"), "wb") as f:
    f.write(b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n")
