// snapshotter-bench runs one workload on containerd's Go devmapper
// snapshotter (in-process) and on thinsnapd (through containerd's proxy
// client), in the same run on the same kernel, and prints markdown tables of
// p50/p95 per operation with the ratios thinsnapd/devmapper, the spread of
// concurrent Prepares, and thinsnapd's resident memory.
//
// Workload per snapshotter, each on a fresh pool:
//   - LAYERS times: Prepare (from the previous layer) -> mount, write a
//     1 MiB file, unmount -> Commit;
//   - VMS per-VM Prepares from the top layer, one after another, then their Removes;
//   - CONCURRENT Prepares from the top layer started at once;
//   - thinsnapd only: VmRSS after RSS-SNAPSHOTS more Prepares.
//
// Run as root on a kernel with dm-thin (bench/run-snapshotter-bench.sh runs it
// in the VM lane). Not a test: it asserts nothing about times.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"

	"thinsnap.local/tests/vm/conformance/harness"
)

var (
	flagThinsnapd  = flag.String("thinsnapd", os.Getenv("TS_THINSNAPD"), "path of thinsnapd (skipped when empty or missing)")
	flagThinsnap   = flag.String("thinsnap", os.Getenv("TS_THINSNAP"), "path of the thinsnap CLI (creates the pools)")
	flagOnly       = flag.String("only", "both", "devmapper, thinsnapd or both")
	flagWork       = flag.String("work", "", "work directory (default: a new one under $TMPDIR)")
	flagLayers     = flag.Int("layers", 8, "committed layers")
	flagVMs        = flag.Int("vms", 40, "per-VM Prepares from the top layer")
	flagConcurrent = flag.Int("concurrent", 100, "concurrent Prepares from the top layer")
	flagRSSSnaps   = flag.Int("rss-snapshots", 1000, "Prepares made before thinsnapd's VmRSS is read")
	flagRSSWorkers = flag.Int("rss-workers", 4, "parallel clients for the rss-snapshots Prepares")
	flagDataSize   = flag.String("data-size", "4G", "pool data size (sparse file)")
	flagMetaSize   = flag.String("meta-size", "64M", "pool metadata size (room for >1,000 thin devices)")
	flagBlockSize  = flag.String("block-size", "64K", "pool block size")
	flagBaseSize   = flag.String("base-size", "64M", "size of a parentless snapshot, both snapshotters")
)

const writeSize = 1 << 20

// Operation names, in the order the tables print them.
const (
	opLayerPrepare = "layer Prepare"
	opWrite        = "write 1 MiB (mount, write, fsync, umount)"
	opCommit       = "layer Commit"
	opVMPrepare    = "per-VM Prepare"
	opVMRemove     = "per-VM Remove"
	opConcPrepare  = "concurrent Prepare (each call)"
)

var opOrder = []string{opLayerPrepare, opWrite, opCommit, opVMPrepare, opVMRemove, opConcPrepare}

type result struct {
	ops           map[string][]time.Duration
	concTotal     time.Duration // start until the last Prepare completed
	concSpread    time.Duration // first completion until last completion
	rssStart      int64
	rssAfterWork  int64
	rssAfterSnaps int64
	rssSnapsMade  int
	rssSnapsPhase time.Duration
	skipped       string
	failed        error
}

func (r *result) add(op string, d time.Duration) { r.ops[op] = append(r.ops[op], d) }

func timed(r *result, op string, fn func() error) error {
	start := time.Now()
	err := fn()
	if err == nil {
		r.add(op, time.Since(start))
	}
	return err
}

func writeLayer(ctx context.Context, mounts []mount.Mount, dir string, i int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := mount.All(mounts, dir); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	buf := make([]byte, writeSize)
	if _, err := rand.Read(buf); err != nil {
		mount.UnmountAll(dir, 0)
		return err
	}
	werr := func() error {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("layer-%d.bin", i)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
	if err := mount.UnmountAll(dir, 0); err != nil {
		return fmt.Errorf("unmount: %w", err)
	}
	return werr
}

// workload runs everything but the memory phase; it returns the top layer.
func workload(ctx context.Context, sn snapshots.Snapshotter, work string, r *result) (string, error) {
	parent := ""
	for i := 1; i <= *flagLayers; i++ {
		key := fmt.Sprintf("layer-%d-active", i)
		name := fmt.Sprintf("layer-%d", i)
		var mounts []mount.Mount
		if err := timed(r, opLayerPrepare, func() (err error) {
			mounts, err = sn.Prepare(ctx, key, parent)
			return err
		}); err != nil {
			return "", fmt.Errorf("prepare %s from %q: %w", key, parent, err)
		}
		if err := timed(r, opWrite, func() error {
			return writeLayer(ctx, mounts, filepath.Join(work, "mnt"), i)
		}); err != nil {
			return "", fmt.Errorf("write into %s: %w", key, err)
		}
		if err := timed(r, opCommit, func() error { return sn.Commit(ctx, name, key) }); err != nil {
			return "", fmt.Errorf("commit %s: %w", key, err)
		}
		parent = name
	}
	top := parent

	for i := 0; i < *flagVMs; i++ {
		key := fmt.Sprintf("vm-%d", i)
		if err := timed(r, opVMPrepare, func() error {
			_, err := sn.Prepare(ctx, key, top)
			return err
		}); err != nil {
			return "", fmt.Errorf("prepare %s: %w", key, err)
		}
	}
	for i := 0; i < *flagVMs; i++ {
		key := fmt.Sprintf("vm-%d", i)
		if err := timed(r, opVMRemove, func() error { return sn.Remove(ctx, key) }); err != nil {
			return "", fmt.Errorf("remove %s: %w", key, err)
		}
	}

	n := *flagConcurrent
	var (
		wg        sync.WaitGroup
		gate      = make(chan struct{})
		ends      = make([]time.Time, n)
		durations = make([]time.Duration, n)
		errs      = make([]error, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-gate
			s := time.Now()
			_, errs[i] = sn.Prepare(ctx, fmt.Sprintf("conc-%d", i), top)
			ends[i] = time.Now()
			durations[i] = ends[i].Sub(s)
		}(i)
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return "", fmt.Errorf("concurrent prepare conc-%d: %w", i, err)
		}
	}
	first, last := ends[0], ends[0]
	for _, e := range ends {
		if e.Before(first) {
			first = e
		}
		if e.After(last) {
			last = e
		}
	}
	r.concTotal = last.Sub(start)
	r.concSpread = last.Sub(first)
	r.ops[opConcPrepare] = durations
	return top, nil
}

// manySnapshots makes count more active snapshots from parent with a few
// parallel clients.
func manySnapshots(ctx context.Context, sn snapshots.Snapshotter, parent string, count, workers int) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= count || first != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if _, err := sn.Prepare(ctx, fmt.Sprintf("rss-%d", i), parent); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("prepare rss-%d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func options() harness.Options {
	return harness.Options{
		Thinsnapd: *flagThinsnapd,
		Thinsnap:  *flagThinsnap,
		DataSize:  *flagDataSize,
		MetaSize:  *flagMetaSize,
		BlockSize: *flagBlockSize,
		BaseSize:  *flagBaseSize,
	}
}

func runDevmapper(ctx context.Context, work string) *result {
	r := &result{ops: map[string][]time.Duration{}}
	dir := filepath.Join(work, "devmapper")
	dm, err := harness.NewDevmapper(ctx, options(), dir)
	if err != nil {
		r.failed = err
		return r
	}
	_, err = workload(ctx, dm.Snapshotter, dir, r)
	if cerr := dm.Close(); cerr != nil && err == nil {
		err = cerr
	}
	r.failed = err
	return r
}

func runThinsnapd(ctx context.Context, work string) *result {
	r := &result{ops: map[string][]time.Duration{}}
	if *flagThinsnapd == "" {
		r.skipped = "no thinsnapd given (-thinsnapd or TS_THINSNAPD)"
		return r
	}
	if _, err := os.Stat(*flagThinsnapd); err != nil {
		r.skipped = fmt.Sprintf("thinsnapd binary missing: %v", err)
		return r
	}
	dir := filepath.Join(work, "thinsnapd")
	ts, err := harness.NewThinsnapd(ctx, options(), dir)
	if err != nil {
		r.failed = err
		return r
	}
	err = func() error {
		pid := ts.Daemon.Pid()
		var err error
		if r.rssStart, err = harness.VmRSS(pid); err != nil {
			return err
		}
		top, err := workload(ctx, ts.Snapshotter, dir, r)
		if err != nil {
			return err
		}
		if r.rssAfterWork, err = harness.VmRSS(pid); err != nil {
			return err
		}
		start := time.Now()
		if err := manySnapshots(ctx, ts.Snapshotter, top, *flagRSSSnaps, *flagRSSWorkers); err != nil {
			return err
		}
		r.rssSnapsPhase = time.Since(start)
		r.rssSnapsMade = *flagRSSSnaps
		r.rssAfterSnaps, err = harness.VmRSS(pid)
		return err
	}()
	if cerr := ts.Close(); cerr != nil && err == nil {
		err = cerr
	}
	r.failed = err
	return r
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(math.Ceil(p*float64(len(s)))) - 1
	if idx < 0 {
		idx = 0
	}
	return s[idx]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) string {
	if a == 0 || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f×", float64(a)/float64(b))
}

func cell(r *result, op string, p float64) (string, time.Duration) {
	if r == nil || len(r.ops[op]) == 0 {
		return "—", 0
	}
	d := percentile(r.ops[op], p)
	return ms(d), d
}

func mib(b int64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func printTables(dm, ts *result) {
	fmt.Println("## Snapshotter benchmark: containerd Go devmapper (in-process) vs thinsnapd (proxy client)")
	fmt.Println()
	fmt.Printf("Same run, same kernel. %d layers of Prepare → write 1 MiB → Commit; %d per-VM Prepares from the top layer, then their Removes; %d concurrent Prepares from the top layer. Ratios are thinsnapd/devmapper (lower is better).\n\n",
		*flagLayers, *flagVMs, *flagConcurrent)
	for _, x := range []struct {
		name string
		r    *result
	}{{"devmapper", dm}, {"thinsnapd", ts}} {
		switch {
		case x.r == nil:
			fmt.Printf("- %s: not run (-only %s)\n", x.name, *flagOnly)
		case x.r.skipped != "":
			fmt.Printf("- %s: SKIPPED: %s\n", x.name, x.r.skipped)
		case x.r.failed != nil:
			fmt.Printf("- %s: FAILED: %v (figures below are what was measured before the failure)\n", x.name, x.r.failed)
		default:
			fmt.Printf("- %s: completed\n", x.name)
		}
	}
	fmt.Println()
	fmt.Println("| operation | n | devmapper p50 | devmapper p95 | thinsnapd p50 | thinsnapd p95 | ratio p50 | ratio p95 |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, op := range opOrder {
		n := 0
		if dm != nil && len(dm.ops[op]) > n {
			n = len(dm.ops[op])
		}
		if ts != nil && len(ts.ops[op]) > n {
			n = len(ts.ops[op])
		}
		d50s, d50 := cell(dm, op, 0.50)
		d95s, d95 := cell(dm, op, 0.95)
		t50s, t50 := cell(ts, op, 0.50)
		t95s, t95 := cell(ts, op, 0.95)
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %s |\n", op, n, d50s, d95s, t50s, t95s, ratio(t50, d50), ratio(t95, d95))
	}
	fmt.Println()
	fmt.Printf("### %d concurrent Prepares from one parent\n\n", *flagConcurrent)
	fmt.Println("| measure | devmapper | thinsnapd | ratio |")
	fmt.Println("|---|---:|---:|---:|")
	get := func(r *result, f func(*result) time.Duration) (string, time.Duration) {
		if r == nil || f(r) == 0 {
			return "—", 0
		}
		return ms(f(r)), f(r)
	}
	for _, m := range []struct {
		name string
		f    func(*result) time.Duration
	}{
		{"start → last completion", func(r *result) time.Duration { return r.concTotal }},
		{"first → last completion (spread)", func(r *result) time.Duration { return r.concSpread }},
	} {
		ds, d := get(dm, m.f)
		tss, t := get(ts, m.f)
		fmt.Printf("| %s | %s | %s | %s |\n", m.name, ds, tss, ratio(t, d))
	}
	fmt.Println()
	fmt.Println("### thinsnapd resident memory (VmRSS)")
	fmt.Println()
	if ts == nil || ts.rssStart == 0 {
		fmt.Println("not measured (thinsnapd not run)")
		return
	}
	fmt.Println("| when | VmRSS |")
	fmt.Println("|---|---:|")
	fmt.Printf("| after start | %s |\n", mib(ts.rssStart))
	fmt.Printf("| after the workload above | %s |\n", mib(ts.rssAfterWork))
	if ts.rssSnapsMade > 0 {
		fmt.Printf("| after %d more Prepares (%d workers, %s) | %s |\n", ts.rssSnapsMade, *flagRSSWorkers,
			ms(ts.rssSnapsPhase), mib(ts.rssAfterSnaps))
	}
}

func main() {
	flag.Parse()
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "snapshotter-bench: must run as root on a kernel with dm-thin (use bench/run-snapshotter-bench.sh)")
		os.Exit(2)
	}
	if *flagThinsnap == "" {
		fmt.Fprintln(os.Stderr, "snapshotter-bench: the thinsnap CLI is needed to create pools: -thinsnap or TS_THINSNAP")
		os.Exit(2)
	}
	switch *flagOnly {
	case "both", "devmapper", "thinsnapd":
	default:
		fmt.Fprintf(os.Stderr, "snapshotter-bench: -only %q: want devmapper, thinsnapd or both\n", *flagOnly)
		os.Exit(2)
	}
	work := *flagWork
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "ts-snapbench-"); err != nil {
			fmt.Fprintln(os.Stderr, "snapshotter-bench:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(work)
	}
	ctx := namespaces.WithNamespace(context.Background(), "bench")

	var dm, ts *result
	if *flagOnly != "thinsnapd" {
		fmt.Fprintln(os.Stderr, "snapshotter-bench: devmapper ...")
		dm = runDevmapper(ctx, work)
	}
	if *flagOnly != "devmapper" {
		fmt.Fprintln(os.Stderr, "snapshotter-bench: thinsnapd ...")
		ts = runThinsnapd(ctx, work)
		if ts.skipped != "" {
			fmt.Fprintln(os.Stderr, "snapshotter-bench: thinsnapd side SKIPPED:", ts.skipped)
		}
	}
	printTables(dm, ts)
	var failed []string
	for name, r := range map[string]*result{"devmapper": dm, "thinsnapd": ts} {
		if r != nil && r.failed != nil {
			failed = append(failed, name+": "+r.failed.Error())
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		fmt.Fprintln(os.Stderr, "snapshotter-bench: FAILED:", strings.Join(failed, "; "))
		os.Exit(1)
	}
}
