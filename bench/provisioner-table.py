#!/usr/bin/python3
"""Prints the provisioner benchmark's tables from the JSON samples of its flows.

  provisioner-table.py [--ref FLOW]... [--cpu CPU.jsonl] FLOW.json...

Each file is what bench/provisioner (or any flow with the same JSON form) wrote for one flow:
"flow", "ops_ms" (operation -> samples in ms), "concurrent" (n, and one sample per round of
total_ms, spread_ms, teardown_total_ms; a single number counts as one round), "rss" ([{when, kib}]) of "rss_process", "problems", "failed"; or
{"flow", "skipped"}. Columns come in the order of the files. Ratios are FLOW / REF for every
reference flow (--ref, default go-devmapper and go-thinsnapd) against every flow after it;
lower is better. CPU.jsonl (in-guest.sh) has a line per part of a concurrent round that one flow
ran alone: {"flow", "round", "phase", "hz", "ticks": {"busy", "idle", COMMAND: ticks...}}; its
table gives the guest's CPU per VM in each phase (snapshots, teardowns, and "after": from the
last teardown until the flow's thinsnapd is idle, where it cuts spares), by process, the
mean over the rounds, and the guest's busy time per VM over the whole round.
Markdown on stdout.
"""

import argparse
import json
import math
import sys

ROWS = [
    ("warm", "warm (pull + unpack)"),
    ("vm_snapshot", "per-VM snapshot (image lookup, lease, Prepare)"),
    ("vm_snapshot.resolve", "… image lookup (Images.Get, manifest and config)"),
    ("vm_snapshot.lease", "… lease create"),
    ("vm_snapshot.prepare", "… Prepare under the lease"),
    ("teardown", "teardown (Remove + lease delete, sync)"),
    ("teardown.remove", "… Remove"),
    ("teardown.lease_delete", "… lease delete (sync GC)"),
    ("concurrent_vm_snapshot", "concurrent per-VM snapshot, each call"),
    ("concurrent_teardown", "concurrent teardown, each call"),
]
CONC = [  # one sample per round of N calls at once
    ("spread_ms", "concurrent snapshots: first → last completion (spread), per round"),
    ("total_ms", "concurrent snapshots: start → last completion, per round"),
    ("teardown_total_ms", "concurrent teardowns: start → last completion, per round"),
]


def percentile(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def fmt_ms(v):
    return "—" if v is None else "%.1f ms" % v


def fmt_ratio(a, b):
    return "—" if a is None or b is None or b == 0 else "%.3f×" % (a / b)


def rss_cell(s):
    """VmRSS, and of it the process's own memory (RssAnon) where the flow sampled it: the rest
    is pages of the executable and its shared libraries."""
    cell = "%.1f MiB" % (s["kib"] / 1024)
    if "anon_kib" in s:
        cell += " (anon %.1f)" % (s["anon_kib"] / 1024)
    return cell


def load(path):
    try:
        with open(path) as fh:
            j = json.load(fh)
    except (OSError, ValueError) as e:
        sys.exit("provisioner-table: %s: %s" % (path, e))
    if not isinstance(j, dict) or not isinstance(j.get("flow"), str):
        sys.exit("provisioner-table: %s: not a flow's samples (no \"flow\")" % path)
    return j


def status(f):
    if f.get("skipped"):
        return "SKIPPED: " + f["skipped"]
    s = "FAILED: %s (figures are what was measured before)" % f["failed"] if f.get("failed") \
        else "completed"
    if f.get("problems"):
        s += "; %d problem(s): %s" % (len(f["problems"]), "; ".join(f["problems"][:3]))
    return s


def op(f, name, p):
    return percentile(f.get("ops_ms", {}).get(name, []), p)


def conc_samples(f, key):
    v = (f.get("concurrent") or {}).get(key)
    return [] if v is None else v if isinstance(v, list) else [v]


def conc(f, key, p):
    return percentile(conc_samples(f, key), p)


def counts(ns):
    """The sample counts of a row: one number, or one per flow (a/b/c) where they differ."""
    ns = [n for n in ns if n]
    return "0" if not ns else str(ns[0]) if len(set(ns)) == 1 else "/".join(map(str, ns))


# Commands in CPU.jsonl under the names the CPU table gives them (the flows' own programs as
# one row; comm is cut at 15 characters).
CPU_ROWS = [
    ("containerd", "containerd"),
    ("thinsnapd", "thinsnapd"),
    ("client", "the flow's program"),
    ("kworker", "kernel workers"),
    ("other", "everything else"),
    ("busy", "the guest, busy"),
    ("idle", "the guest, idle"),
]
CLIENTS = {"prov-flow", "provisioner-ben"}


def cpu_table(path, by):
    """Prints the guest's CPU per VM by process and phase, for the flows that have lines (by:
    flow name -> its JSON; each flow's VMs per round are its own concurrent.n)."""
    acc = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            key = (e["flow"], e["phase"])
            sums, rounds = acc.setdefault(key, ({}, [0]))
            rounds[0] += 1
            ms = 1000.0 / e.get("hz", 100)
            for cmd, t in e["ticks"].items():
                row = cmd if cmd in ("busy", "idle", "containerd", "thinsnapd", "kworker") else \
                    "client" if cmd in CLIENTS else "other"
                sums[row] = sums.get(row, 0) + t * ms
    n_vms = {n: (f.get("concurrent") or {}).get("n") for n, f in by.items()}
    flows = [n for n in by if n_vms[n] and any(k[0] == n for k in acc)]
    if not flows:
        return
    print("### CPU per VM in the concurrent rounds (the guest's clock ticks, mean over the rounds)")
    print()
    print("| phase | process | " + " | ".join(flows) + " |")
    print("|---|---|" + "---:|" * len(flows))
    phases = [("snapshots", "snapshots"), ("teardowns", "teardowns")]
    if any(k[1] == "after" for k in acc):
        phases.append(("after", "after the calls (spares)"))
    for phase, label in phases:
        for row, rlabel in CPU_ROWS:
            cells = []
            for fl in flows:
                sums, rounds = acc.get((fl, phase), ({}, [0]))
                cells.append("%.2f ms" % (sums.get(row, 0) / rounds[0] / n_vms[fl]) if rounds[0] else "—")
            print("| %s | %s | %s |" % (label, rlabel, " | ".join(cells)))
    cells = []
    for fl in flows:
        total = 0.0
        for phase, _ in phases:
            sums, rounds = acc.get((fl, phase), ({}, [0]))
            total += sums.get("busy", 0) / rounds[0] / n_vms[fl] if rounds[0] else 0
        cells.append("%.2f ms" % total)
    print("| the round | the guest, busy | %s |" % " | ".join(cells))
    print()
    print("rounds: " + ", ".join("%s %d" % (fl, acc.get((fl, "snapshots"), ({}, [0]))[1][0])
                                 for fl in flows))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", action="append", help="a reference flow for the ratios")
    ap.add_argument("--cpu", help="the guest's CPU in the concurrent rounds (in-guest.sh's cpu.jsonl)")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    flows = [load(p) for p in a.files]
    names = [f["flow"] for f in flows]
    if len(set(names)) != len(names):
        sys.exit("provisioner-table: a flow appears twice: %s" % ", ".join(names))
    refs = [r for r in (a.ref or ["go-devmapper", "go-thinsnapd"]) if r in names]
    pairs = [(names[j], r) for r in refs for j in range(names.index(r) + 1, len(names))]
    by = dict(zip(names, flows))

    first = next((f for f in flows if not f.get("skipped")), {})
    print("## Provisioner benchmark: warm, per-VM snapshot, teardown")
    print()
    print("One guest run; each flow on a fresh thin pool and a fresh containerd, the same image "
          "(%s, %s) from the same local registry, %s VMs; the rows \"per round\" have one "
          "sample per round of %s calls at once. Ratios: lower is better."
          % (first.get("image", "?"), (first.get("image_digest") or "?")[:19] + "…",
             first.get("vms", "?"), (first.get("concurrent") or {}).get("n", "?")))
    print()
    for f in flows:
        who = "" if f.get("skipped") else " (%s on %s)" % (f.get("client", "?"),
                                                            f.get("snapshotter", "?"))
        print("- %s%s: %s" % (f["flow"], who, status(f)))
    print()

    extra = sorted({k for f in flows for k in f.get("ops_ms", {})} - {k for k, _ in ROWS})
    rows = ROWS + [(k, k) for k in extra]
    print("| measure | n | " + " | ".join("%s p50 | %s p95" % (n, n) for n in names) + " |")
    print("|---|---:|" + "---:|---:|" * len(names))
    for key, label in rows:
        n = counts(len(f.get("ops_ms", {}).get(key, [])) for f in flows)
        cells = ["%s | %s" % (fmt_ms(op(f, key, .5)), fmt_ms(op(f, key, .95))) for f in flows]
        print("| %s | %s | %s |" % (label, n, " | ".join(cells)))
    for key, label in CONC:
        n = counts(len(conc_samples(f, key)) for f in flows)
        cells = ["%s | %s" % (fmt_ms(conc(f, key, .5)), fmt_ms(conc(f, key, .95))) for f in flows]
        print("| %s | %s | %s |" % (label, n, " | ".join(cells)))
    print()

    if pairs:
        print("### Ratios (p50, p95 in brackets)")
        print()
        print("| measure | " + " | ".join("%s / %s" % p for p in pairs) + " |")
        print("|---|" + "---:|" * len(pairs))
        for key, label in rows:
            cells = ["%s (%s)" % (fmt_ratio(op(by[x], key, .5), op(by[r], key, .5)),
                                  fmt_ratio(op(by[x], key, .95), op(by[r], key, .95)))
                     for x, r in pairs]
            print("| %s | %s |" % (label, " | ".join(cells)))
        for key, label in CONC:
            cells = ["%s (%s)" % (fmt_ratio(conc(by[x], key, .5), conc(by[r], key, .5)),
                                  fmt_ratio(conc(by[x], key, .95), conc(by[r], key, .95)))
                     for x, r in pairs]
            print("| %s | %s |" % (label, " | ".join(cells)))
        print()

    if a.cpu:
        cpu_table(a.cpu, by)

    rss = [f for f in flows if f.get("rss")]
    if rss:
        print("### Resident memory (VmRSS; in brackets RssAnon, without the pages of the "
              "executable and its shared libraries)")
        print()
        print("| when | " + " | ".join("%s of %s" % (f.get("rss_process") or "?", f["flow"])
                                     for f in rss) + " |")
        print("|---|" + "---:|" * len(rss))
        whens = []
        for f in rss:
            whens += [s["when"] for s in f["rss"] if s["when"] not in whens]
        for w in whens:
            cells = [next((rss_cell(s) for s in f["rss"] if s["when"] == w), "—") for f in rss]
            print("| %s | %s |" % (w, " | ".join(cells)))
    return 1 if any(f.get("failed") or f.get("problems") for f in flows) else 0


if __name__ == "__main__":
    sys.exit(main())
