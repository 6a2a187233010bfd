// provisioner-bench runs a VM manager's storage flow with containerd's own Go
// client against one containerd and one snapshotter, and writes every
// measured sample as JSON (bench/provisioner-table.py turns the files of
// several flows into a table of ratios):
//
//   - warm: Pull with unpack into the snapshotter from a registry (plain HTTP
//     with -plain-http), WARMS times; between two warms the image is deleted
//     with synchronous GC so each warm starts from nothing;
//   - per-VM snapshot, VMS times one after another: look the image up, create
//     a lease labelled with the VM and its image, Prepare the image's top chain
//     id under that lease;
//   - teardown of each: snapshotter Remove, lease Delete with synchronous GC;
//   - CONCURRENT per-VM snapshots released at once (each call's latency, and
//     the spread first -> last completion), then their teardowns at once.
//
// With -rss-pid it also records that process's VmRSS between the phases.
// Run it where the snapshotter's devices are visible (the VM lane), as root.
// Not a test: it asserts nothing about times; it does fail when a device is
// missing after a snapshot or still there after a teardown.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/version"
)

var (
	flagAddress     = flag.String("address", "/run/containerd/containerd.sock", "containerd's socket")
	flagNamespace   = flag.String("namespace", "bench", "containerd namespace")
	flagSnapshotter = flag.String("snapshotter", "", "snapshotter to warm into and cut VMs from (required)")
	flagImage       = flag.String("image", "", "image reference to pull, e.g. 127.0.0.1:5000/bench/img:v1 (required)")
	flagPlainHTTP   = flag.Bool("plain-http", false, "talk to the registry over plain HTTP")
	flagVMs         = flag.Int("vms", 50, "per-VM snapshots made one after another")
	flagConcurrent  = flag.Int("concurrent", -1, "per-VM snapshots made at once (-1: as many as -vms, 0: none)")
	flagWarms       = flag.Int("warms", 3, "times the image is warmed (each from nothing)")
	flagFlow        = flag.String("flow", "", "name of this flow in the output (default go-SNAPSHOTTER)")
	flagOut         = flag.String("out", "", "write the samples as JSON to this file (default: stdout)")
	flagRSSPid      = flag.Int("rss-pid", 0, "record this process's VmRSS between the phases")
	flagRSSName     = flag.String("rss-name", "", "what -rss-pid is, for the output (e.g. thinsnapd)")
	flagTimeout     = flag.Duration("timeout", 60*time.Minute, "give up after this long")
)

// Operation names in the JSON; bench/provisioner-table.py knows them.
const (
	opWarm         = "warm"
	opSnapshot     = "vm_snapshot"
	opTeardown     = "teardown"
	opConcSnapshot = "concurrent_vm_snapshot"
	opConcTeardown = "concurrent_teardown"

	// The steps of the sequential snapshots and teardowns.
	opSnapshotResolve = "vm_snapshot.resolve"
	opSnapshotLease   = "vm_snapshot.lease"
	opSnapshotPrepare = "vm_snapshot.prepare"
	opTeardownRemove  = "teardown.remove"
	opTeardownLease   = "teardown.lease_delete"
)

type concurrentResult struct {
	N               int     `json:"n"`
	TotalMS         float64 `json:"total_ms"`  // release until the last snapshot completed
	SpreadMS        float64 `json:"spread_ms"` // first completion until the last
	TeardownTotalMS float64 `json:"teardown_total_ms"`
}

type rssSample struct {
	When string `json:"when"`
	KiB  int64  `json:"kib"`
}

// result is the JSON a flow writes; samples are in milliseconds.
type result struct {
	Flow        string               `json:"flow"`
	Client      string               `json:"client"`
	Snapshotter string               `json:"snapshotter"`
	Image       string               `json:"image"`
	ImageDigest string               `json:"image_digest,omitempty"`
	TopChainID  string               `json:"top_chain_id,omitempty"`
	VMs         int                  `json:"vms"`
	Ops         map[string][]float64 `json:"ops_ms"`
	Concurrent  *concurrentResult    `json:"concurrent,omitempty"`
	RSSProcess  string               `json:"rss_process,omitempty"`
	RSS         []rssSample          `json:"rss,omitempty"`
	Problems    []string             `json:"problems,omitempty"`
	Failed      string               `json:"failed,omitempty"`
}

func ms(ds ...time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

func (r *result) add(op string, d time.Duration) { r.Ops[op] = append(r.Ops[op], ms(d)...) }

func (r *result) problem(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "provisioner-bench: PROBLEM:", msg)
	r.Problems = append(r.Problems, msg)
}

// vmRSS reads VmRSS (KiB) from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "VmRSS:") {
			v := strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
			return strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS line", pid)
}

func (r *result) sampleRSS(when string) {
	if *flagRSSPid == 0 {
		return
	}
	kib, err := vmRSS(*flagRSSPid)
	if err != nil {
		r.problem("VmRSS of %s (pid %d) %s: %v", r.RSSProcess, *flagRSSPid, when, err)
		return
	}
	r.RSS = append(r.RSS, rssSample{When: when, KiB: kib})
}

func usage(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "provisioner-bench: "+format+"\n", args...)
	flag.Usage()
	os.Exit(2)
}

func write(r *result) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *flagOut == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	tmp := *flagOut + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, *flagOut)
}

func main() {
	flag.Parse()
	if flag.NArg() != 0 {
		usage("unexpected argument %q", flag.Arg(0))
	}
	if *flagSnapshotter == "" || *flagImage == "" {
		usage("-snapshotter and -image are required")
	}
	if *flagVMs < 1 || *flagWarms < 1 {
		usage("-vms and -warms must be at least 1")
	}
	if *flagConcurrent < 0 {
		*flagConcurrent = *flagVMs
	}
	if *flagFlow == "" {
		*flagFlow = "go-" + *flagSnapshotter
	}
	r := &result{Flow: *flagFlow, Client: "containerd Go client " + version.Version,
		Snapshotter: *flagSnapshotter, Image: *flagImage, VMs: *flagVMs,
		Ops: map[string][]float64{}, RSSProcess: *flagRSSName}

	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *flagNamespace), *flagTimeout)
	defer cancel()
	err := func() error {
		client, err := containerd.New(*flagAddress, containerd.WithDefaultNamespace(*flagNamespace),
			containerd.WithTimeout(30*time.Second))
		if err != nil {
			return fmt.Errorf("connect to containerd at %s: %w", *flagAddress, err)
		}
		defer client.Close()
		var hostOpts []docker.RegistryOpt
		if *flagPlainHTTP {
			hostOpts = append(hostOpts, docker.WithPlainHTTP(docker.MatchAllHosts))
		}
		f := &flow{client: client, snapshotter: *flagSnapshotter, ref: *flagImage, res: r,
			resolver: docker.NewResolver(docker.ResolverOptions{
				Hosts: docker.ConfigureDefaultRegistries(hostOpts...)})}
		return f.run(ctx, *flagWarms, *flagVMs, *flagConcurrent)
	}()
	if err != nil {
		r.Failed = err.Error()
		fmt.Fprintf(os.Stderr, "provisioner-bench: %s: FAILED: %v\n", r.Flow, err)
	}
	if werr := write(r); werr != nil {
		fmt.Fprintln(os.Stderr, "provisioner-bench: writing the samples:", werr)
		os.Exit(1)
	}
	if err != nil || len(r.Problems) > 0 {
		os.Exit(1)
	}
}
