#!/usr/bin/python3
"""The prepared-image benchmark's guest half (bench/run-prepared-bench.sh boots the lane and
runs it): a pool, thinsnapd with its provisioner, containerd 1.6, a local docker-registry with
the image built on the host, a 16 MiB agent.

    prepared-bench.py BINDIR SRCDIR WORKDIR [--vms N] [--rounds N]

Row 1: `thinsnap image prepare` (cold: the image and the prepared image removed with
synchronous GC before each round) against bench/hpcc-rootfs.sh (pull + flatten + a fresh ext4
file made with mkfs and filled through a loop mount + the agent), interleaved, p50 of the
rounds. Row 2: bench/prepared-cut, a VM cut from the prepared image against a cut plus
`vm inject` of the agent, p50 over N VMs each."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from lane import Lane, image_facts  # noqa: E402
from registry import Registry  # noqa: E402


def timed(fn):
    t0 = time.monotonic()
    fn()
    return (time.monotonic() - t0) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bindir")
    ap.add_argument("src")
    ap.add_argument("work")
    ap.add_argument("--vms", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    lane = Lane(a.bindir, a.src, "prepbench", base_size="1G")
    exp = image_facts(f"{a.work}/image")
    agent, digest = f"{a.work}/agent-16M", exp["target_digest"]
    lane.pool_create(data_size="16G")
    lane.start_thinsnapd()
    lane.start_containerd()
    reg = Registry(f"{lane.work}/registry", "plain")
    reg.start()
    reg.push(f"{a.work}/image/image.tar", "bench/img:v1")
    ref = f"{reg.host}/bench/img:v1"
    prep = [lane.bindir + "/cli/thinsnap", "image", "prepare", ref, "--digest", digest, "--agent",
            agent, "--plain-http"]
    peer = [f"{a.src}/bench/hpcc-rootfs.sh", ref, agent, f"{lane.work}/rootfs.ext4",
            f"{lane.work}/hpcc"]
    mine, theirs = [], []
    for i in range(a.rounds):
        lane.thinsnap("image", "unprepare", digest, check=False)
        lane.thinsnap("image", "rm", ref, check=False)
        mine.append(timed(lambda: lane.run(prep, check=True)))
        shutil.rmtree(f"{lane.work}/hpcc", ignore_errors=True)
        if os.path.exists(f"{lane.work}/rootfs.ext4"):
            os.unlink(f"{lane.work}/rootfs.ext4")
        theirs.append(timed(lambda: lane.run(peer, check=True)))
        lane.say(f"round {i + 1}: prepare {mine[-1]:.0f} ms, hpcc rootfs {theirs[-1]:.0f} ms")
    m, t = statistics.median(mine), statistics.median(theirs)
    print(f"\nimage: {len(exp['layers'])} layers, "
          f"{sum(x['size'] for x in exp['layers']) / 1048576:.1f} MiB compressed; agent 16 MiB; "
          f"kernel {os.uname().release}, {os.cpu_count()} vCPU (TCG)\n")
    print("| per image | rounds | p50 (ms) |\n|---|---:|---:|")
    print(f"| `thinsnap image prepare` (pull, unpack, agent layer) | {a.rounds} | {m:.0f} |")
    print(f"| hpcc rootfs path (pull, flatten, mkfs + loop mount, agent) | {a.rounds} | {t:.0f} |")
    print(f"\nratio p50: {m / t:.3f}x (target <= 0.5x)\n")
    out = lane.run([f"{a.bindir}/bench/prepared-cut", "-address", lane.prov_sock, "-image", ref,
                    "-digest", digest, "-agent", agent, "-vms", str(a.vms)], check=True,
                   timeout=3600)
    print(out.stdout)
    reg.stop()
    lane.finish()


if __name__ == "__main__":
    main()
