#!/usr/bin/python3
"""Prepared images on this host, against real parts: Debian's docker-registry on 127.0.0.1
with images built by tests/lib/build-image and pushed with skopeo, a containerd of
the test's own with its native snapshotter (snapshots are directories here: the agent layer
is written into the directory; the VM lane's vm-prepared-boot writes it into thinsnapd's ext4
devices with inject/), the provisioner's service (prov-server) and the `thinsnap image` CLI.

    prepared_test.py BINDIR SRCDIR PROV_SERVER

Checks: prepare (record, labels containerd's client would set, the tree against a model of
the image plus the agent layer and against containerd's own Diff.Apply of the same blob),
idempotence, concurrent prepares of one digest, --entrypoint agent, a different agent
replacing the record, the catalogue (incomplete and foreign records left out), a VM cut
from a prepared image, unprepare, limits (per call and the daemon's), bad input; after
every refusal nothing is published and no lease is left.

Exits 77 (skipped) when not root or when containerd, docker-registry or skopeo are missing."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from lane import Failed, Lane, image_facts  # noqa: E402
from registry import Registry  # noqa: E402

PREFIX = "prepared.hpcc.local/img:"
AGENT_PATH = "/.hpcc/agent"


def builder(lane):
    return [sys.executable, f"{lane.src}/tests/lib/build-image"]


def hexof(digest):
    return digest.split(":", 1)[1]


def sha256_file(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def prepare(lane, ref, digest, agent, *extra):
    """`thinsnap image prepare --json`: the process and the prepared image (or None)."""
    p = lane.thinsnap("image", "prepare", ref, "--digest", digest, "--agent", agent,
                      "--plain-http", "--json", *extra, check=False, parse=False)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    return p, (lines[-1].get("prepared") if lines and p.returncode == 0 else None)


def prepared_list(lane):
    return lane.thinsnap("image", "prepared", "--json") or {}


def content_digests(lane):
    return set(lane.ctr("content", "ls", "-q").stdout.split())


def scan_image(lane, name, ns="thinsnap"):
    """The tree of an image as containerd mounts it (`ctr images mount`, native)."""
    mnt = f"{lane.work}/mnt-{ns}"
    os.makedirs(mnt, exist_ok=True)
    lane.ctr("images", "mount", "--snapshotter", "native", name, mnt, ns=ns)
    try:
        return json.loads(lane.run(builder(lane) + ["scan", mnt], check=True).stdout)
    finally:
        lane.ctr("images", "unmount", "--rm", mnt, ns=ns, check=False)


def model(user_tree, agent):
    """The user's tree plus what the agent layer adds."""
    with open(agent, "rb") as f:
        data = f.read()
    add = [
        {"path": ".hpcc", "type": "dir", "uid": 0, "gid": 0, "mode": 0o755, "xattrs": {}},
        {"path": ".hpcc/agent", "type": "file", "uid": 0, "gid": 0, "mode": 0o755, "xattrs": {},
         "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "nlink": 1, "mtime": 0},
    ] + [{"path": p, "type": "dir", "uid": 0, "gid": 0, "mode": m, "xattrs": {}}
         for p, m in (("dev", 0o755), ("proc", 0o555), ("run", 0o755), ("sys", 0o555))]
    return sorted(user_tree + add, key=lambda j: j["path"])


def tree_diff(got, want):
    """The entries that differ, for a failure's message."""
    g = {j["path"]: j for j in got}
    w = {j["path"]: j for j in want}
    return [(k, g.get(k), w.get(k)) for k in sorted(set(g) | set(w)) if g.get(k) != w.get(k)][:8]


def nothing_left(lane, what):
    leases = lane.ctr("leases", "ls").stdout
    lane.ok(f"{what}: no prepare lease left", "thinsnap.prepare." not in leases, leases)


def first_prepare(lane, ref, exp, agent):
    digest = exp["target_digest"]
    p, x = prepare(lane, ref, digest, agent)
    if not lane.ok("prepare exits 0 with the prepared image", p.returncode == 0 and x, p.stderr):
        raise Failed("prepare failed")
    lane.check("prepare: user digest", x.get("user_digest"), digest)
    lane.check("prepare: record name", x.get("name"), PREFIX + hexof(digest))
    lane.check("prepare: agent digest", x.get("agent_digest"), sha256_file(agent))
    lane.check("prepare: one more layer", x.get("layers"), len(exp["layers"]) + 1)
    lane.check("prepare: changed", x.get("changed"), True)
    lane.check("prepare: guest path", x.get("guest_path"), AGENT_PATH)
    out = lane.ctr("images", "check").stdout
    lane.ok("ctr images check: the prepared image is complete",
            any(ln.startswith(x["name"]) and "complete" in ln for ln in out.splitlines()), out)
    labels = lane.ctr("images", "ls").stdout
    for kv in (f"prepared.hpcc.local/user-digest={digest}", f"prepared.hpcc.local/source={ref}",
               f"prepared.hpcc.local/agent-digest={x['agent_digest']}"):
        lane.ok(f"record labelled {kv.split('=')[0]}", kv in labels, labels)
    content = lane.ctr("content", "ls").stdout
    line = next((ln for ln in content.splitlines() if ln.startswith(x["digest"])), "")
    lane.ok("manifest labelled with its config and every layer (gc.ref.content.*)",
            "gc.ref.content.config=" in line and
            all(f"gc.ref.content.l.{i}=" in line for i in range(len(exp["layers"]) + 1)), line)
    lane.ok("config labelled gc.ref.snapshot.native = the new top",
            f"containerd.io/gc.ref.snapshot.native={x['chain_id']}" in content, content)
    lane.ok("the agent layer labelled uncompressed",
            content.count("containerd.io/uncompressed=") == len(exp["layers"]) + 1, content)
    snaps = lane.ctr("snapshots", "--snapshotter", "native", "ls").stdout
    lane.ok("the new top is a committed snapshot on the user's top",
            any(ln.split()[:3] == [x["chain_id"], exp["chain_ids"][-1], "Committed"]
                for ln in snaps.splitlines()), snaps)
    nothing_left(lane, "prepare")
    return x


def tree_checks(lane, ref, x, exp, agent):
    user = scan_image(lane, ref)
    lane.ok("the user's tree is the image's (build-image's model)",
            [dict(j, nlink=0) if "nlink" in j else j for j in user.get("tree", [])] ==
            [dict(j, nlink=0) if "nlink" in j else j for j in exp["tree"]])
    want = model(user.get("tree", []), agent)
    tree = scan_image(lane, x["name"])
    lane.ok("the prepared tree is the user's plus the agent layer",
            tree.get("tree") == want, tree_diff(tree.get("tree", []), want))
    # containerd's own Diff.Apply of the same blobs, in another namespace.
    archive = f"{lane.work}/prepared.tar"
    lane.ctr("images", "export", archive, x["name"])
    lane.ctr("images", "import", "--snapshotter", "native", archive, ns="applied")
    applied = scan_image(lane, x["name"], ns="applied")
    lane.ok("the prepared tree equals containerd's Diff.Apply of the same layer", tree == applied,
            json.dumps(applied)[:2000])


def idempotent(lane, ref, exp, agent, x):
    before = content_digests(lane)
    t0 = time.monotonic()
    p, y = prepare(lane, ref, exp["target_digest"], agent)
    lane.say(f"prepare again: {time.monotonic() - t0:.2f} s")
    lane.ok("prepare again: exits 0, unchanged", p.returncode == 0 and y and not y["changed"],
            p.stderr)
    lane.check("prepare again: the same manifest", (y or {}).get("digest"), x["digest"])
    lane.check("prepare again: no blob written", content_digests(lane), before)
    lane.ok("prepare again: no warm (nothing fetched)", "warm" not in p.stdout, p.stdout[:500])


def concurrent(lane, ref, exp, agent):
    outs = [None, None]

    def one(i):
        outs[i] = prepare(lane, ref, exp["target_digest"], agent)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = all(p.returncode == 0 and x for p, x in outs)
    lane.ok("two concurrent prepares of one digest both succeed", ok,
            " | ".join(p.stderr for p, _ in outs))
    if ok:
        lane.check("... and only one of them made it", sorted(x["changed"] for _, x in outs),
                   [False, True])
        lane.check("... the same prepared image", outs[0][1]["digest"], outs[1][1]["digest"])
    return outs[0][1]


def entrypoint_agent(lane, ref, exp, agent):
    p, x = prepare(lane, ref, exp["target_digest"], agent, "--entrypoint", "agent")
    lane.ok("--entrypoint agent replaces the keep one", p.returncode == 0 and x and x["changed"]
            and x["entrypoint"] == "agent", p.stderr)
    name = "prepared:" + exp["target_digest"]
    cfg = lane.thinsnap("image", "config", name, "--json")
    lane.check("--entrypoint agent: the config's entrypoint is the agent", cfg.get("entrypoint"),
               [AGENT_PATH])
    lane.ok("--entrypoint agent: no cmd left", not cfg.get("cmd"), json.dumps(cfg))
    labels = lane.ctr("images", "ls").stdout
    lane.ok("the user's entrypoint and cmd kept as labels of the record",
            'prepared.hpcc.local/user-cmd=["/bin/tool"]' in labels and
            "prepared.hpcc.local/user-entrypoint=[]" in labels, labels)
    return x


def replace(lane, ref, exp, agent2, old):
    old_layer = json.loads(lane.ctr("content", "get", old["digest"]).stdout)["layers"][-1]["digest"]
    p, x = prepare(lane, ref, exp["target_digest"], agent2)
    lane.ok("another agent replaces the record", p.returncode == 0 and x and x["changed"] and
            x["digest"] != old["digest"], p.stderr)
    lane.check("... with the new agent's digest", (x or {}).get("agent_digest"), sha256_file(agent2))
    content = content_digests(lane)
    lane.ok("the old prepared manifest and agent layer are collected",
            old["digest"] not in content and old_layer not in content)
    snaps = lane.ctr("snapshots", "--snapshotter", "native", "ls").stdout
    lane.ok("the old agent layer's snapshot is collected", old["chain_id"] not in snaps, snaps)
    lane.ok("the user's chain stays", exp["chain_ids"][-1] in snaps, snaps)
    want = model(scan_image(lane, ref).get("tree", []), agent2)
    tree = scan_image(lane, x["name"])
    lane.ok("the replaced tree has the new agent", tree.get("tree") == want,
            tree_diff(tree.get("tree", []), want))
    return x


def catalogue(lane, a, b):
    ls = prepared_list(lane)
    got = [x["user_digest"] for x in ls.get("images", [])]
    lane.check("prepared lists both, by user digest", got, sorted([a["user_digest"], b["user_digest"]]))
    one = next((x for x in ls.get("images", []) if x["user_digest"] == a["user_digest"]), {})
    lane.ok("prepared gives source, agent, sizes and created time",
            one.get("source") and one.get("agent_digest") == a["agent_digest"] and
            one.get("content_bytes", 0) > 20 << 20 and one.get("pool_bytes", 0) > 0 and
            one.get("created_at"), json.dumps(one))
    images = lane.thinsnap("image", "ls", "--json")
    per = sum(i.get("content_bytes", 0) for i in images.get("images", []))
    total = images.get("total_content_bytes", 0)
    lane.ok("image ls: totals count what images share once",
            0 < total < per and total >= max(i.get("content_bytes", 0) for i in images["images"]),
            f"total {total}, sum of images {per}")
    # Records that are not complete prepared images are left out.
    bogus = PREFIX + "f" * 64
    nolabel = PREFIX + "e" * 64
    lane.ctr("images", "tag", a["name"], bogus)
    lane.ctr("images", "tag", "--force", a["name"], nolabel)
    lane.ctr("images", "label", nolabel, "prepared.hpcc.local/user-digest=")
    ls = prepared_list(lane)
    lane.check("a record whose name is not its label's, or without the label, is left out",
               sorted(x["user_digest"] for x in ls.get("images", [])), got)
    lane.ctr("images", "rm", bogus, nolabel)
    log = open(lane.logs["prov-server"]).read()
    lane.ok("... and logged", "left out" in log and bogus in log, log[-2000:])


def incomplete(lane, ref, exp, agent, b):
    layer = json.loads(lane.ctr("content", "get", b["digest"]).stdout)["layers"][-1]["digest"]
    lane.ctr("content", "rm", layer)
    got = [x["user_digest"] for x in prepared_list(lane).get("images", [])]
    lane.ok("a prepared image whose agent layer blob is gone is not listed",
            b["user_digest"] not in got, json.dumps(got))
    p, x = prepare(lane, ref, exp["target_digest"], agent, "--entrypoint", "agent")
    lane.ok("preparing it again mends it", p.returncode == 0 and x and x["changed"], p.stderr)
    got = [x["user_digest"] for x in prepared_list(lane).get("images", [])]
    lane.ok("... and it is listed again", b["user_digest"] in got)


def cut_and_unprepare(lane, exp, a, agent2):
    name = "prepared:" + exp["target_digest"]
    d = lane.thinsnap("vm", "snapshot", "vm1", name).stdout.strip()
    lane.ok("a VM cut from the prepared image has the agent",
            os.path.exists(f"{d}/.hpcc/agent") and sha256_file(f"{d}/.hpcc/agent") ==
            sha256_file(agent2), d)
    out = lane.thinsnap("image", "unprepare", exp["target_digest"], "--json")
    lane.check("unprepare: existed", out[0].get("existed") if out else None, True)
    got = [x["user_digest"] for x in prepared_list(lane).get("images", [])]
    lane.ok("unprepare: no longer listed", exp["target_digest"] not in got)
    lane.ok("unprepare: the VM's device stays", os.path.isdir(d))
    out = lane.thinsnap("image", "unprepare", exp["target_digest"]).stdout
    lane.ok("unprepare of a missing one is fine", "no such prepared image" in out, out)
    check = lane.ctr("images", "check").stdout
    lane.ok("what the user's image shares stays complete",
            any("hc/a:v1" in ln and "complete" in ln for ln in check.splitlines()), check)
    lane.thinsnap("vm", "teardown", "vm1")
    snaps = lane.ctr("snapshots", "--snapshotter", "native", "ls").stdout
    lane.ok("with the VM gone the prepared layer's snapshot is collected",
            a["chain_id"] not in snaps, snaps)
    p = lane.thinsnap("vm", "snapshot", "vm2", name, check=False)
    lane.ok("a cut from a prepared image that is gone: NOT_FOUND", p.returncode == 1 and
            "NOT_FOUND" in p.stderr and "no prepared image" in p.stderr, p.stderr)


def refused(lane, what, p, code, *words):
    lane.ok(f"{what}: refused", p.returncode != 0 and (code is None or code in p.stderr) and
            all(w in p.stderr for w in words), p.stderr)


def limits(lane, ref, exp, agent3, big_agent):
    d = exp["target_digest"]
    before = prepared_list(lane).get("images", [])
    for opt, val, words in (
            ("--max-layers", "2", ["4 layers", "limit of 2 (max_layers)"]),
            ("--max-compressed-bytes", "1M", ["over the limit of 1048576 (max_compressed_bytes)"]),
            ("--max-unpacked-bytes", "4M", ["over the limit of 4194304 (max_unpacked_bytes)"]),
            ("--max-inodes", "20", ["inodes, over the limit of 20 (max_inodes)"]),
            ("--max-agent-bytes", "1K", ["over the limit of 1024 (max_agent_bytes)"])):
        p, _ = prepare(lane, ref, d, agent3, opt, val)
        refused(lane, f"{opt} {val}", p, "RESOURCE_EXHAUSTED", *words)
    p, _ = prepare(lane, ref, d, big_agent)
    refused(lane, "an agent over the daemon's configured limit", p, "RESOURCE_EXHAUSTED",
            "over the limit of 8388608 (max_agent_bytes)")
    lane.check("limits: the prepared image is as it was", prepared_list(lane).get("images", []),
               before)
    nothing_left(lane, "limits")


def bad_input(lane, host, exp_a, exp_b, agent):
    ref_b = f"{host}/hc/b:v1"
    da, db = exp_a["target_digest"], exp_b["target_digest"]
    before = prepared_list(lane).get("images", [])
    cases = [
        ("a digest that is not sha256:<64 hex>", [ref_b, "sha256:1234", agent], "INVALID_ARGUMENT",
         ["sha256:1234", "64 lowercase hex"]),
        ("an upper-case digest", [ref_b, db.upper().replace("SHA256", "sha256"), agent],
         "INVALID_ARGUMENT", ["is not sha256"]),
        ("an agent that is not a regular file", [ref_b, db, "/dev/null"], "INVALID_ARGUMENT",
         ["not a regular file"]),
        ("an agent that is a directory", [ref_b, db, lane.work], "INVALID_ARGUMENT",
         ["not a regular file"]),
        ("a relative guest path", [ref_b, db, agent, "--guest-path", "agent"], "INVALID_ARGUMENT",
         ["is not absolute"]),
        ("a guest path with ..", [ref_b, db, agent, "--guest-path", "/a/../agent"],
         "INVALID_ARGUMENT", ["contains '..'"]),
        ("a guest path under a file", [ref_b, db, agent, "--guest-path", "/etc/hostname/agent"],
         "FAILED_PRECONDITION", ["/etc/hostname is not a directory in the image"]),
        ("a guest path that is a directory", [ref_b, db, agent, "--guest-path", "/etc"],
         "FAILED_PRECONDITION", ["/etc is a directory in the image"]),
        ("a reference that does not exist", [f"{host}/hc/nope:v1", db, agent], "NOT_FOUND",
         ["hc/nope:v1"]),
        ("a reference that resolves to another digest", [ref_b, da, agent], "INVALID_ARGUMENT",
         [da, db]),
    ]
    for what, (ref, digest, ag, *extra), code, words in cases:
        p, _ = prepare(lane, ref, digest, ag, *extra)
        refused(lane, what, p, code, *words)
    lane.check("bad input: nothing published", prepared_list(lane).get("images", []), before)
    names = lane.ctr("images", "ls", "-q").stdout
    lane.ok("bad input: no record of the other digest", PREFIX + hexof(da) not in names, names)
    nothing_left(lane, "bad input")


def interrupted(lane, reg, agent):
    """A prepare that fails after its layer, snapshot, config and manifest exist (the user's cmd
    is too long for the record's label) publishes no record, and what it made goes at the
    next collection."""
    sys.path.insert(0, os.path.join(lane.src, "tests", "vm", "prepared"))
    import image
    facts = image.build(f"{lane.work}/long.tar", "docker.io/test/long:v1", cmd_bytes=5000)
    reg.push(f"{lane.work}/long.tar", "hc/long:v1")
    before = content_digests(lane)
    p, _ = prepare(lane, f"{reg.host}/hc/long:v1", facts["target_digest"], agent,
                   "--entrypoint", "agent")
    refused(lane, "a cmd too long for a label", p, "INVALID_ARGUMENT", "too long for a label")
    names = lane.ctr("images", "ls", "-q").stdout
    lane.ok("... no prepared record", PREFIX + hexof(facts["target_digest"]) not in names, names)
    nothing_left(lane, "a failed prepare")
    lane.ctr("leases", "create", "--id", "gc-trigger")
    lane.ctr("leases", "delete", "--sync", "gc-trigger")
    snaps = lane.ctr("snapshots", "--snapshotter", "native", "ls").stdout
    top = facts["chain_ids"][-1]
    lane.ok("... its agent layer's snapshot is collected",
            not any(ln.split()[1:2] == [top] for ln in snaps.splitlines()), snaps)
    new = content_digests(lane) - before
    lane.ok("... and so are its layer, config and manifest: only the user's image is new",
            len(new) == 4, sorted(new))


def main():
    bindir, src, server = sys.argv[1:4]
    if os.geteuid() != 0:
        print("skipped: needs root (containerd)")
        sys.exit(77)
    for tool in ("containerd", "ctr", "docker-registry", "skopeo"):
        if not shutil.which(tool):
            print(f"skipped: {tool} is not installed")
            sys.exit(77)
    lane = Lane(bindir, src, "hostprep")
    try:
        run = lane.work
        for d, seed in (("a", 3), ("b", 4)):
            subprocess.run(builder(lane) + ["build", f"{run}/{d}", "--seed", str(seed), "--name",
                                            f"docker.io/test/{d}:v1"], check=True,
                           stdout=subprocess.DEVNULL)
        exp_a, exp_b = image_facts(f"{run}/a"), image_facts(f"{run}/b")
        agents = []
        for i, size in enumerate((150000, 170000, 90000, 4000)):
            agents.append(f"{run}/agent{i}")
            with open(agents[-1], "wb") as f:
                f.write(os.urandom(size))
        big = f"{run}/big-agent"
        with open(big, "wb") as f:
            f.truncate(9 << 20)
        reg = Registry(f"{run}/registry", "plain")
        reg.start()
        reg.push(f"{run}/a/image.tar", "hc/a:v1")
        reg.push(f"{run}/b/image.tar", "hc/b:v1")
        ref_a, ref_b = f"{reg.host}/hc/a:v1", f"{reg.host}/hc/b:v1"
        lane.env["TS_PROV_MAX_AGENT_BYTES"] = str(8 << 20)
        lane.start_containerd(proxy=False)
        lane.start_prov_server(server, "native")
        a = first_prepare(lane, ref_a, exp_a, agents[0])
        tree_checks(lane, ref_a, a, exp_a, agents[0])
        idempotent(lane, ref_a, exp_a, agents[0], a)
        b = concurrent(lane, ref_b, exp_b, agents[2])
        b = entrypoint_agent(lane, ref_b, exp_b, agents[2]) or b
        a = replace(lane, ref_a, exp_a, agents[1], a) or a
        catalogue(lane, a, b)
        incomplete(lane, ref_b, exp_b, agents[2], b)
        limits(lane, ref_b, exp_b, agents[3], big)
        cut_and_unprepare(lane, exp_a, a, agents[1])
        bad_input(lane, reg.host, exp_a, exp_b, agents[0])
        interrupted(lane, reg, agents[0])
        reg.stop()
    except Failed as e:
        lane.ok("the run went through", False, str(e))
    lane.finish()


if __name__ == "__main__":
    main()
