// provisioner-bench runs a VM manager's storage flow with containerd's own Go
// client against one or more (containerd, snapshotter) pairs side by side,
// one operation of each in turn, and writes every measured sample as JSON,
// one file per flow (bench/provisioner-table.py turns them into a table of
// ratios):
//
//   - prewarm (with -prewarm REF): REF pulled and deleted again, untimed, so
//     that no flow's first warm pays for client code not run yet;
//   - warm: Pull with unpack into the snapshotter from a registry (plain HTTP
//     with -plain-http), WARMS times; between two warms the image is deleted
//     with synchronous GC so each warm starts from nothing;
//   - per-VM snapshot, VMS times one after another: look the image up, create
//     a lease labelled with the VM and its image, Prepare the image's top chain
//     id under that lease;
//   - teardown of each: snapshotter Remove, lease Delete with synchronous GC;
//   - CONCURRENT per-VM snapshots released at once (each call's latency, and
//     the spread first -> last completion), then their teardowns at once;
//     ROUNDS times, since one burst's spread varies a lot from run to run;
//     with -turn-in and -turn-out each round waits for its turn (turn.go).
//
// With -rss it also records a process's VmRSS between the phases.
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
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/version"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

var (
	flagFlows       listFlag
	flagRSS         listFlag
	flagFlowRounds  listFlag
	flagAddress     = flag.String("address", "/run/containerd/containerd.sock", "containerd's socket (without -flow)")
	flagSnapshotter = flag.String("snapshotter", "", "snapshotter to warm into and cut VMs from (without -flow)")
	flagNamespace   = flag.String("namespace", "bench", "containerd namespace")
	flagImage       = flag.String("image", "", "image reference to pull, e.g. 127.0.0.1:5000/bench/img:v1 (required)")
	flagPlainHTTP   = flag.Bool("plain-http", false, "talk to the registry over plain HTTP")
	flagVMs         = flag.Int("vms", 50, "per-VM snapshots made one after another")
	flagConcurrent  = flag.Int("concurrent", -1, "per-VM snapshots made at once (-1: as many as -vms, 0: none)")
	flagRounds      = flag.Int("rounds", 3, "times the concurrent snapshots and teardowns are run")
	flagWarms       = flag.Int("warms", 3, "times the image is warmed (each from nothing)")
	flagPrewarm     = flag.String("prewarm", "", "an image each flow pulls and deletes, untimed, before its first warm")
	flagOut         = flag.String("out", ".", "directory for the samples, FLOW.json per flow")
	flagTimeout     = flag.Duration("timeout", 90*time.Minute, "give up after this long")
	flagTurnIn      = flag.String("turn-in", "", "a FIFO to read \"go\" from before each concurrent round (with -turn-out)")
	flagTurnOut     = flag.String("turn-out", "", "a FIFO to write \"ready ROUND\" and \"done ROUND\" to around each concurrent round")
)

func init() {
	flag.Var(&flagFlows, "flow", "NAME=SNAPSHOTTER@ADDRESS: a flow to run (repeat for side by side; "+
		"default go-SNAPSHOTTER=SNAPSHOTTER@ADDRESS from -snapshotter and -address)")
	flag.Var(&flagRSS, "rss", "FLOW=PID:NAME: record process PID's VmRSS (NAME, e.g. thinsnapd) in FLOW's samples")
	flag.Var(&flagFlowRounds, "flow-rounds", "FLOW=N: FLOW runs only the first N of the -rounds concurrent rounds")
}

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

// concurrentResult has one sample per round.
type concurrentResult struct {
	N               int       `json:"n"`
	TotalMS         []float64 `json:"total_ms"`  // release until the last snapshot completed
	SpreadMS        []float64 `json:"spread_ms"` // first completion until the last
	TeardownTotalMS []float64 `json:"teardown_total_ms"`
}

type rssSample struct {
	When    string `json:"when"`
	KiB     int64  `json:"kib"`
	AnonKiB int64  `json:"anon_kib"` // the process's own memory (RssAnon)
	FileKiB int64  `json:"file_kib"` // pages of its executable and shared libraries (RssFile)
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
	rssPid      int
}

func ms(ds ...time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

func (r *result) add(op string, ds ...time.Duration) { r.Ops[op] = append(r.Ops[op], ms(ds...)...) }

func (r *result) problem(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "provisioner-bench: %s: PROBLEM: %s\n", r.Flow, msg)
	r.Problems = append(r.Problems, msg)
}

// readRSS reads VmRSS, RssAnon and RssFile (KiB) from /proc/PID/status.
func readRSS(pid int, when string) (rssSample, error) {
	s := rssSample{When: when}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer f.Close()
	fields := map[string]*int64{"VmRSS:": &s.KiB, "RssAnon:": &s.AnonKiB, "RssFile:": &s.FileKiB}
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		if p := fields[name]; ok && p != nil {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/status: %s %q: %v", pid, name, v, err)
			}
			*p = n
			seen++
		}
	}
	if seen != len(fields) {
		return s, fmt.Errorf("/proc/%d/status lacks VmRSS, RssAnon or RssFile", pid)
	}
	return s, nil
}

func (r *result) sampleRSS(when string) {
	if r.rssPid == 0 {
		return
	}
	s, err := readRSS(r.rssPid, when)
	if err != nil {
		r.problem("VmRSS of %s (pid %d) %s: %v", r.RSSProcess, r.rssPid, when, err)
		return
	}
	r.RSS = append(r.RSS, s)
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
	path := filepath.Join(*flagOut, r.Flow+".json")
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// newFlow parses NAME=SNAPSHOTTER@ADDRESS and connects to that containerd.
func newFlow(spec string) (*flow, error) {
	name, rest, ok1 := strings.Cut(spec, "=")
	sn, address, ok2 := strings.Cut(rest, "@")
	if !ok1 || !ok2 || name == "" || sn == "" || address == "" || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("-flow %q: want NAME=SNAPSHOTTER@ADDRESS", spec)
	}
	r := &result{Flow: name, Client: "containerd Go client " + version.Version, Snapshotter: sn,
		Image: *flagImage, VMs: *flagVMs, Ops: map[string][]float64{}}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(*flagNamespace),
		containerd.WithTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("flow %s: connect to containerd at %s: %w", name, address, err)
	}
	var hostOpts []docker.RegistryOpt
	if *flagPlainHTTP {
		hostOpts = append(hostOpts, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	return &flow{client: client, snapshotter: sn, ref: *flagImage, res: r,
		resolver: docker.NewResolver(docker.ResolverOptions{
			Hosts: docker.ConfigureDefaultRegistries(hostOpts...)})}, nil
}

// setRounds parses FLOW=N onto its flow: at most -rounds.
func setRounds(flows []*flow, spec string) error {
	name, count, ok := strings.Cut(spec, "=")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 || n > *flagRounds {
		return fmt.Errorf("-flow-rounds %q: want FLOW=N, N from 1 to -rounds (%d)", spec, *flagRounds)
	}
	for _, f := range flows {
		if f.res.Flow == name {
			f.rounds = n
			return nil
		}
	}
	return fmt.Errorf("-flow-rounds %q: no flow %q", spec, name)
}

// setRSS parses FLOW=PID:NAME onto its flow.
func setRSS(flows []*flow, spec string) error {
	name, rest, ok1 := strings.Cut(spec, "=")
	pid, proc, ok2 := strings.Cut(rest, ":")
	n, err := strconv.Atoi(pid)
	if !ok1 || !ok2 || err != nil || n <= 0 {
		return fmt.Errorf("-rss %q: want FLOW=PID:NAME", spec)
	}
	for _, f := range flows {
		if f.res.Flow == name {
			f.res.rssPid, f.res.RSSProcess = n, proc
			return nil
		}
	}
	return fmt.Errorf("-rss %q: no flow %s", spec, name)
}

func main() {
	flag.Parse()
	if flag.NArg() != 0 {
		usage("unexpected argument %q", flag.Arg(0))
	}
	if len(flagFlows) == 0 && *flagSnapshotter != "" {
		flagFlows = append(flagFlows, fmt.Sprintf("go-%s=%s@%s", *flagSnapshotter, *flagSnapshotter, *flagAddress))
	}
	if len(flagFlows) == 0 || *flagImage == "" {
		usage("-image and -flow (or -snapshotter) are required")
	}
	if *flagVMs < 1 || *flagWarms < 1 || *flagRounds < 1 {
		usage("-vms, -warms and -rounds must be at least 1")
	}
	if *flagConcurrent < 0 {
		*flagConcurrent = *flagVMs
	}
	// The turns first: if anything below fails, the other end of the FIFOs sees this program
	// end rather than waiting for it to open them.
	t, err := openTurns(*flagTurnIn, *flagTurnOut)
	if err != nil {
		usage("%v", err)
	}
	var flows []*flow
	for _, spec := range flagFlows {
		f, err := newFlow(spec)
		if err != nil {
			fmt.Fprintln(os.Stderr, "provisioner-bench:", err)
			os.Exit(1)
		}
		defer f.client.Close()
		f.rounds = *flagRounds
		flows = append(flows, f)
	}
	for _, spec := range flagFlowRounds {
		if err := setRounds(flows, spec); err != nil {
			usage("%v", err)
		}
	}
	for _, spec := range flagRSS {
		if err := setRSS(flows, spec); err != nil {
			usage("%v", err)
		}
	}

	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *flagNamespace), *flagTimeout)
	defer cancel()
	run(ctx, flows, t, *flagWarms, *flagVMs, *flagConcurrent, *flagRounds)
	status := 0
	for _, f := range flows {
		if err := write(f.res); err != nil {
			fmt.Fprintln(os.Stderr, "provisioner-bench: writing the samples:", err)
			status = 1
		}
		if f.res.Failed != "" || len(f.res.Problems) > 0 {
			status = 1
		}
	}
	os.Exit(status)
}
