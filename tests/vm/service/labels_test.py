#!/usr/bin/python3
"""Hostile labels and filters against thinsnapd, in the VM lane (root,
dm-thin): each case asserts the answer, that a client on another connection
is still served, and that the daemon's peak memory stayed under a bound.

1. a million label keys in descending order (14 MiB): refused by the count
   bound (INVALID_ARGUMENT naming max_labels and the figure), counted on the
   wire before protobuf-c would allocate a million entries, while a Stat and
   a Remove on another connection are served. (Sorting such input, which
   replaced a quadratic insertion, is tested in tests/unit/test-label.c.)
2. two snapshots with 9 MiB of labels each: refused (max_label_bytes), on
   Prepare and on Update by labels.<k> paths; nothing is stored; List works.
3. records whose List reply exceeds 16 MiB in all, each within the bounds:
   listed completely, in several messages of at most 4 MiB, with their labels
   intact; Stat answers the largest; a filtered List works, and so does one
   with regexps that backtrack exponentially in a backtracking matcher, over
   every record's 4 KiB labels.
4. the List filter limits through a gRPC peer: a filter over 4 KiB, more than
   64 filter strings, more than 64 selectors: INVALID_ARGUMENT naming each.

Usage: labels_test.py BUILD_DIR SOURCE_DIR"""
import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SVC, Harness  # noqa: E402

bindir, src = sys.argv[1], sys.argv[2]
MiB = 1 << 20
MD = [("containerd-namespace", "default")]
# Peak VmRSS (VmHWM) above the daemon's after start, ASan build with a small
# quarantine: a request is held as received (its buffer grows by doubling),
# decoded once, and List's records once more as copied out of the store.
RSS_BOUND = {"count": 64 * MiB, "bytes": 96 * MiB, "list": 96 * MiB}


def check_rss(h, case, base):
    peak = h.rss("VmHWM") - base
    print(f"figure: {case}: peak RSS {peak / MiB:.1f} MiB above the start", flush=True)
    h.ok(f"{case}: thinsnapd's memory bounded", peak <= RSS_BOUND[case],
         f"(peak {peak / MiB:.1f} MiB above the start, bound {RSS_BOUND[case] / MiB:.0f} MiB)")


def prepare_bytes(key, n):
    """A PrepareSnapshotRequest {key = 2, labels = 4} with n labels of keys
    k<n-1> down to k0 and value "v", encoded by hand (a million map entries
    through the protobuf runtime take minutes under emulation): each entry
    is field 4, 13 bytes: {key = 1: "k%07d", value = 2: "v"}."""
    assert len(key) < 128
    entries = b"".join(b'"\r\n\x08k%07d\x12\x01v' % i for i in range(n - 1, -1, -1))
    return b"\x12" + bytes([len(key)]) + key.encode() + entries


def another_channel(h):
    """A connection of its own (gRPC shares subchannels between channels)."""
    return grpc.insecure_channel("unix:" + h.sock, options=[("grpc.use_local_subchannel_pool", 1)])


def unary(chan, method, req, resp):
    fn = chan.unary_unary(SVC + method, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp.FromString)
    return fn(req, metadata=MD, timeout=300)


def send_raw(h, method, data):
    """Calls method with already encoded bytes: (status name, details)."""
    fn = h.chan.unary_unary(SVC + method, request_serializer=lambda b: b,
                            response_deserializer=lambda b: b)
    try:
        fn(data, metadata=MD, timeout=600)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details()


def expect_refusal(h, name, got, code, needle):
    h.check(f"{name}: status", got[0], code)
    h.ok(f"{name}: message", needle in got[1], repr(got[1][:300]))


# ---- 1. a million keys, descending ----
def million(h, data, case, needle, others):
    """Sends data (a Prepare) on one connection while another one calls
    others() until it is answered; returns what the others saw."""
    base = h.rss()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", send_raw(h, "Prepare", data)))
    t0 = time.monotonic()
    t.start()
    served = others(lambda: t.is_alive())
    t.join()
    print(f"figure: {case}: answered after {time.monotonic() - t0:.1f} s; "
          f"{served} calls served on another connection meanwhile", flush=True)
    expect_refusal(h, f"{case}: a million keys", result["r"], "INVALID_ARGUMENT", needle)
    h.check(f"{case}: nothing stored", h.stat("million"), "NOT_FOUND")
    check_rss(h, case, base)


def stat_and_remove(h):
    """Stat on a connection of its own while the Prepare runs, then a Remove."""
    def run(alive):
        chan = another_channel(h)
        n = 0
        try:
            while True:
                unary(chan, "Stat", h.pb.StatSnapshotRequest(key="small"), h.pb.StatSnapshotResponse)
                n += 1
                if not alive():
                    break
            unary(chan, "Remove", h.pb.RemoveSnapshotRequest(key="victim"), h.empty)
            n += 1
        finally:
            chan.close()
        return n
    return run


def descending(h):
    h.start()
    h.check("prepare small", h.prepare("small").startswith("/dev/mapper/"), True)
    h.check("prepare victim", h.prepare("victim").startswith("/dev/mapper/"), True)
    data = prepare_bytes("million", 1000000)
    print(f"figure: the request: {len(data) / MiB:.1f} MiB", flush=True)
    million(h, data, "count", "1000000 labels in the request, over the limit of 4096 (max_labels)",
            stat_and_remove(h))
    h.check("the Remove on the other connection took effect", h.stat("victim"), "NOT_FOUND")
    h.check("still serving: stat", h.stat("small"), "ACTIVE")
    h.check("still serving: list", h.list_names(), ["small"])
    h.check("remove small", h.remove("small"), "OK")
    h.stop()


# ---- 2. 9 MiB of labels ----
def labels_of(total, prefix="l"):
    """Labels of 4096 bytes each (containerd's largest), total bytes in all."""
    out = {}
    for i in range(total // 4096):
        k = "%s%05d" % (prefix, i)
        out[k] = "v" * (4096 - len(k))
    return out


def nine_mib(h):
    h.start()
    base = h.rss()
    big = labels_of(9 * MiB)
    for key in ("nine-a", "nine-b"):
        try:
            h.raw("Prepare", h.pb.PrepareSnapshotRequest(key=key, labels=big), h.pb.PrepareSnapshotResponse)
            got = ("OK", "")
        except grpc.RpcError as e:
            got = (e.code().name, e.details())
        expect_refusal(h, f"prepare {key} with 9 MiB of labels", got, "INVALID_ARGUMENT",
                       f"snapshot {key}: labels of {9 * MiB} bytes, over the limit of {MiB} bytes (max_label_bytes)")
        h.check(f"{key}: nothing stored", h.stat(key), "NOT_FOUND")
    # The bound is on the result: labels.<k> paths that add 9 MiB in all.
    h.check("prepare upd", h.prepare("upd").startswith("/dev/mapper/"), True)
    req = h.pb.UpdateSnapshotRequest()
    req.info.name = "upd"
    req.info.labels.update(big)
    req.update_mask.paths.extend("labels." + k for k in big)
    try:
        h.raw("Update", req, h.pb.UpdateSnapshotResponse)
        got = ("OK", "")
    except grpc.RpcError as e:
        got = (e.code().name, e.details())
    expect_refusal(h, "update adding 9 MiB of labels", got, "INVALID_ARGUMENT", "(max_label_bytes)")
    st = h.raw("Stat", h.pb.StatSnapshotRequest(key="upd"), h.pb.StatSnapshotResponse)
    h.check("upd: labels unchanged", len(st.info.labels), 0)
    h.check("list works", h.list_names(), ["upd"])
    h.check("remove upd", h.remove("upd"), "OK")
    check_rss(h, "bytes", base)
    h.stop()


# ---- 3. a List of more than 16 MiB ----
def big_list(h):
    h.start()
    base = h.rss()
    n = 18
    per = labels_of(MiB - 4 * 4096)  # 252 labels of 4 KiB: under the 1 MiB bound
    keys = ["rec%02d" % i for i in range(n)]
    for k in keys:
        r = h.call("Prepare", h.pb.PrepareSnapshotRequest(key=k, labels=dict(per, who=k)),
                   h.pb.PrepareSnapshotResponse)
        h.ok(f"prepare {k} with ~1 MiB of labels", not isinstance(r, str), repr(r))
    fn = h.chan.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=h.pb.ListSnapshotsResponse.FromString)
    sizes, names, intact = [], [], True
    for resp in fn(h.pb.ListSnapshotsRequest(), metadata=MD, timeout=300):
        sizes.append(resp.ByteSize())
        for i in resp.info:
            names.append(i.name)
            intact = intact and i.labels.get("who") == i.name and len(i.labels) == len(per) + 1 and \
                all(i.labels.get(k) == v for k, v in per.items())
    print(f"figure: List: {len(sizes)} messages, {sum(sizes) / MiB:.1f} MiB in all, "
          f"largest {max(sizes) / MiB:.2f} MiB", flush=True)
    h.ok("list: more than 16 MiB in all", sum(sizes) > 16 * MiB, str(sum(sizes)))
    h.ok("list: several messages, each at most 4 MiB", len(sizes) > 4 and max(sizes) <= 4 * MiB, str(sizes))
    h.check("list: every record, once, in key order", names, keys)
    h.ok("list: labels intact", intact)
    flt = h.pb.ListSnapshotsRequest(filters=['labels.who=="rec07"'])
    got = [i.name for resp in fn(flt, metadata=MD, timeout=300) for i in resp.info]
    h.check("filtered list", got, ["rec07"])
    # A regexp that backtracks exponentially on "vvv…" without a match, against each record's
    # largest labels (4 KiB of "v"): linear with RE2, so answered and bounded.
    flt = h.pb.ListSnapshotsRequest(filters=['labels.l00000~="^(v|vv)*(v+)+w$",labels.l00001~="(v*)*w"'])
    got = [i.name for resp in fn(flt, metadata=MD, timeout=300) for i in resp.info]
    h.check("a pathological regexp over 18 x 4 KiB labels: answered, no match", got, [])
    flt = h.pb.ListSnapshotsRequest(filters=['labels.l00000~="^(v|vv)*(v+)+$"'])
    got = [i.name for resp in fn(flt, metadata=MD, timeout=300) for i in resp.info]
    h.check("the same regexp, matching: every record", got, keys)
    st = h.raw("Stat", h.pb.StatSnapshotRequest(key="rec17"), h.pb.StatSnapshotResponse)
    h.check("stat of a 1 MiB record", st.info.labels.get("who"), "rec17")
    for k in keys:
        h.check(f"remove {k}", h.remove(k), "OK")
    check_rss(h, "list", base)
    h.stop()


# ---- 4. the filter limits ----
def filters(h):
    h.start()
    h.check("prepare f", h.prepare("f").startswith("/dev/mapper/"), True)
    fn = h.chan.unary_stream(SVC + "List", request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=h.pb.ListSnapshotsResponse.FromString)

    def listed(flts):
        try:
            return ("OK", [i.name for r in fn(h.pb.ListSnapshotsRequest(filters=flts), metadata=MD, timeout=120)
                           for i in r.info])
        except grpc.RpcError as e:
            return e.code().name, e.details()

    h.check("a filter of 4096 bytes", listed(['name=="' + "x" * 4088 + '"']), ("OK", []))
    long_filter = 'name=="' + "x" * 4089 + '"'
    expect_refusal(h, "a filter over 4 KiB", listed([long_filter]), "INVALID_ARGUMENT",
                   "filters: a filter of 4097 bytes, over the limit of 4096 bytes")
    expect_refusal(h, "65 filter strings", listed(["name==f"] * 65), "INVALID_ARGUMENT",
                   "filters: 65 filters, over the limit of 64")
    expect_refusal(h, "65 selectors", listed([",".join(["name==f"] * 65)]), "INVALID_ARGUMENT",
                   "filters: more than 64 selectors, over the limit")
    h.check("64 selectors", listed([",".join(["name==f"] * 64)]), ("OK", ["f"]))
    h.check("still serving", h.list_names(), ["f"])
    h.check("remove f", h.remove("f"), "OK")
    h.stop()


CASES = {"descending": descending, "nine": nine_mib, "list": big_list, "filters": filters}
passed = failed = 0
h = Harness(bindir, src, "tslabels", "tslabels-")
h.env["ASAN_OPTIONS"] = (h.env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
try:
    h.pool_create("--data-size", "1G")
    for name in (sys.argv[3].split(",") if len(sys.argv) > 3 else CASES):
        try:
            CASES[name](h)
        except Exception as e:  # a broken case fails, the others still run
            h.failed += 1
            print(f"FAIL: {name}: {type(e).__name__}: {e}", flush=True)
            h.kill()
finally:
    h.kill()
    h.pool_destroy()
    if h.failed:
        h.dump_log()
print(f"labels-test: {h.passed} passed, {h.failed} failed")
sys.exit(1 if h.failed else 0)
