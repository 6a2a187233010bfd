"""What the VM-lane tests of the provisioner share, inside the guest (root, dm-thin):
a pool made with `thinsnap pool create`, thinsnapd with its provisioner, a containerd of
their own (Debian's 1.6, or a 1.7 / 2.x binary from tests/lib/fetch-containerd) with
thinsnapd as its proxy plugin `thinsnap`, the `thinsnap` CLI, `ctr`, and checks that count.

    lane = Lane(bindir, srcdir, "e2e")
    lane.pool_create()
    lane.start_thinsnapd()
    lane.start_containerd()
    out = lane.thinsnap("image", "ls", "--json")      # parsed JSON
    ...
    lane.finish()                                      # stops everything, exits 0 or 1

Python's standard library only."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class Failed(Exception):
    pass


def image_facts(imagedir):
    """expected.json of a `build-image build` output, with "target_digest": what a registry
    serves for its tag once skopeo pushed it (the image index of a multi-platform image, else
    the manifest: skopeo pushes an OCI archive's image, not its index.json)."""
    with open(os.path.join(imagedir, "expected.json")) as f:
        exp = json.load(f)
    exp["target_digest"] = exp.get("image_index_digest") or exp["manifest_digest"]
    return exp


class Tally:
    """Checks counted, one line printed for each."""

    def __init__(self):
        self.passed = self.failed = 0

    def ok(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name} {detail}", flush=True)
        return cond


class Lane(Tally):
    def __init__(self, bindir, srcdir, name, containerd="containerd", ctr="ctr", base_size="256M"):
        super().__init__()
        self.bindir, self.src, self.name = bindir, srcdir, name
        self.containerd_bin, self.ctr_bin, self.base_size = containerd, ctr, base_size
        self.work = tempfile.mkdtemp(prefix=f"{name}.", dir="/tmp")
        # per run, so two runs on one host (CI and a developer's) do not meet
        self.run_dir = f"/run/{os.path.basename(self.work)}"
        os.makedirs(self.run_dir, exist_ok=True)
        self.pool = f"{name}-tp"
        self.ts_sock = f"{self.run_dir}/thinsnapd.sock"
        self.prov_sock = f"{self.run_dir}/provisioner.sock"
        self.ctd_sock = f"{self.run_dir}/containerd.sock"
        self.ctd_root = f"{self.work}/containerd"  # a test may point containerd elsewhere
        # Software-emulated guests on a busy host make TLS handshakes of many seconds; the
        # hung-registry case is the host test's, with its own short timeout.
        self.registry_timeout = "2m"
        self.env = dict(os.environ, THINSNAP_STATE_DIR=f"{self.work}/pools",
                        THINSNAP_ADDRESS=self.prov_sock, DM_DISABLE_UDEV="1",
                        TS_REGISTRY_TIMEOUT="3")
        self.procs = {}
        self.logs = {}
        self.mounts = []
        self.pools = []
        self.cleanups = []
        self.t0 = time.monotonic()

    # ---- results ----
    def say(self, what):
        print(f"[{time.monotonic() - self.t0:6.1f}s] {what}", flush=True)


    def check(self, name, got, want):
        return self.ok(name, got == want, f"got {got!r}, want {want!r}")

    # ---- commands ----
    def run(self, argv, check=False, timeout=600, input=None):
        p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and p.returncode != 0:
            raise Failed(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def thinsnap(self, *args, check=True, timeout=900, parse=True):
        """Runs the CLI; with --json among args (and parse) the parsed output, else the
        process."""
        p = self.run([f"{self.bindir}/cli/thinsnap", *args], check=check, timeout=timeout)
        if parse and "--json" in args and p.returncode == 0:
            text = p.stdout.strip()
            try:
                return json.loads(text) if text else None
            except json.JSONDecodeError:  # a stream of statuses: the last one
                return json.loads(text.splitlines()[-1])
        return p

    def ctr(self, *args, ns="thinsnap", check=True):
        return self.run([self.ctr_bin, "--address", self.ctd_sock, "-n", ns, *args], check=check)

    # ---- the pool and the daemons ----
    def pool_create(self, data_size="4G", meta_size="64M", *extra):
        self.run([f"{self.bindir}/cli/thinsnap", "pool", "create", self.pool, "--data",
                  f"{self.work}/{self.pool}.data", "--data-size", data_size, "--meta",
                  f"{self.work}/{self.pool}.meta", "--meta-size", meta_size, *extra], check=True)
        self.pools.append(self.pool)

    def pool_status(self):
        return json.loads(self.run([f"{self.bindir}/cli/thinsnap", "pool", "status", self.pool,
                                    "--json"], check=True).stdout)

    def spawn(self, name, argv):
        log = open(f"{self.work}/{name}.log", "ab")
        self.logs[name] = log.name
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.procs[name]

    def wait_for(self, what, cond, limit=120, proc=None):
        deadline = time.monotonic() + limit
        while not cond():
            if proc and proc.poll() is not None:
                raise Failed(f"{what}: the process exited {proc.returncode}")
            if time.monotonic() > deadline:
                raise Failed(f"{what}: not within {limit} s")
            time.sleep(0.1)

    def start_thinsnapd(self, *args):
        for s in (self.ts_sock, self.prov_sock):
            if os.path.exists(s):
                os.unlink(s)
        p = self.spawn("thinsnapd", [f"{self.bindir}/plugin/thinsnapd", "--root",
                                     f"{self.work}/{self.pool}.root",
                                     "--pool", self.pool, "--address", self.ts_sock, "--base-size",
                                     self.base_size, "--provisioner-address", self.prov_sock,
                                     "--containerd-address", self.ctd_sock,
                                     "--registry-timeout", self.registry_timeout, *args])
        self.wait_for("thinsnapd's sockets",
                      lambda: os.path.exists(self.ts_sock) and os.path.exists(self.prov_sock), proc=p)

    def start_prov_server(self, server, snapshotter):
        """The provisioner's service alone (tests/integration/provision/prov-server), for hosts
        without device-mapper: VMs are snapshots of snapshotter (e.g. native)."""
        if os.path.exists(self.prov_sock):
            os.unlink(self.prov_sock)
        p = self.spawn("prov-server", [server, self.prov_sock, self.ctd_sock, "thinsnap",
                                       snapshotter])
        self.wait_for("the provisioner's socket", lambda: os.path.exists(self.prov_sock), proc=p)

    def containerd_config(self, version, proxy=True):
        common = (f'root = "{self.ctd_root}"\nstate = "{self.run_dir}/containerd-state"\n'
                  f'[grpc]\n  address = "{self.ctd_sock}"\n'
                  f'[ttrpc]\n  address = "{self.ctd_sock}.ttrpc"\n')
        if proxy:
            common += (f'[proxy_plugins.thinsnap]\n  type = "snapshot"\n'
                       f'  address = "{self.ts_sock}"\n')
        if version >= 3:
            return ('version = 3\ndisabled_plugins = ["io.containerd.grpc.v1.cri", '
                    '"io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]\n' + common)
        return 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' + common

    def ext4_dir(self, path, size="2G"):
        """An ext4 filesystem on a loop device at path (in the guest, /tmp and /var/lib are
        tmpfs, which holds no user xattrs: containerd's native snapshotter needs them)."""
        img = f"{self.work}/{os.path.basename(path)}.ext4"
        self.run(["truncate", "-s", size, img], check=True)
        self.run(["mkfs.ext4", "-q", "-E", "nodiscard", img], check=True)
        os.makedirs(path, exist_ok=True)
        self.run(["mount", "-o", "loop", img, path], check=True)
        self.mounts.append(path)

    def start_containerd(self, config_version=2, proxy=True):
        cfg = f"{self.work}/containerd.toml"
        with open(cfg, "w") as f:
            f.write(self.containerd_config(config_version, proxy))
        if os.path.exists(self.ctd_sock):
            os.unlink(self.ctd_sock)
        p = self.spawn("containerd", [self.containerd_bin, "--config", cfg])
        self.wait_for("containerd answers", lambda: self.run(
            [self.ctr_bin, "--address", self.ctd_sock, "version"]).returncode == 0, proc=p)

    def stop(self, name, sig=signal.SIGTERM, limit=120):
        p = self.procs.pop(name, None)
        if not p or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def dump_logs(self, lines=60):
        for name, path in self.logs.items():
            try:
                text = open(path, errors="replace").read().splitlines()
            except OSError:
                continue
            # containerd's start-up lines say nothing about a failure
            text = [t for t in text if "loading plugin" not in t]
            print(f"---- last {lines} lines of {name}'s log ----")
            print("\n".join(text[-lines:]))

    def registry(self, mode="plain"):
        """A started tests/lib/registry.py Registry under the work directory, stopped by
        finish() whatever happens."""
        from registry import Registry
        reg = Registry(f"{self.work}/registry-{len(self.cleanups)}", mode)
        self.cleanups.append(reg.stop)
        reg.start()
        return reg

    def finish(self):
        """Stops everything, prints the tally and exits 0 (all passed) or 1."""
        for name in list(self.procs):
            self.stop(name, limit=60)
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 (a failed stop must not hide the tally)
                print(f"lane: cleanup: {e}", flush=True)
        for m in reversed(self.mounts):
            self.run(["umount", m])
        for pool in self.pools:
            self.run([f"{self.bindir}/cli/thinsnap", "pool", "destroy", pool, "--force",
                      "--delete-files"])
        if self.failed:
            self.dump_logs()
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        sys.exit(1 if self.failed else 0)
