// containerd's snapshotter conformance suite (snapshots/testsuite), run as
// root in the VM lane against either
//
//   - thinsnapd, reached through containerd's own proxy client
//     (snapshots/proxy) over gRPC on a unix socket, with a fresh pool and a
//     fresh daemon for every case;
//   - thinsnapd behind a containerd daemon (-ts.containerd): one pool,
//     thinsnapd, and containerd of the given binary with thinsnapd as proxy
//     plugin "thinsnap" for the run, the suite driving the containerd
//     client's snapshot service for "thinsnap", each case in a namespace and
//     under a lease of its own; or
//   - containerd's Go devmapper snapshotter, in-process, with a fresh pool
//     for every case (the peer: it proves the harness and the lane).
//
// Build with `go test -c` (see run.sh) and run the binary with -test.root.
package conformance

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/pkg/testutil"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/testsuite"

	"thinsnap.local/tests/vm/conformance/harness"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var (
	flagSnapshotter = flag.String("ts.snapshotter", envOr("TS_SNAPSHOTTER", "thinsnapd"),
		"snapshotter under test: thinsnapd or devmapper")
	flagThinsnapd = flag.String("ts.thinsnapd", os.Getenv("TS_THINSNAPD"), "path of thinsnapd")
	flagThinsnap  = flag.String("ts.thinsnap", os.Getenv("TS_THINSNAP"), "path of the thinsnap CLI")
	flagDataSize  = flag.String("ts.data-size", "2G", "each case's pool data size (sparse file)")
	flagBlockSize = flag.String("ts.block-size", "64K", "pool block size")
	flagBaseSize  = flag.String("ts.base-size", "64M", "size of a parentless snapshot (--base-size)")
	flagStop      = flag.Duration("ts.stop-timeout", 30*time.Second, "how long thinsnapd may take to exit on SIGTERM")
	flagReady     = flag.Duration("ts.ready-timeout", 60*time.Second, "how long a daemon may take to listen")
	flagCtrd      = flag.String("ts.containerd", "", "path of a containerd binary to put between the suite and thinsnapd")
	flagCtrdCfg   = flag.Int("ts.containerd-config-version", 2, "containerd config version: 2 (containerd 1.x) or 3 (2.x)")
)

func options() harness.Options {
	return harness.Options{
		Thinsnapd:    *flagThinsnapd,
		Thinsnap:     *flagThinsnap,
		DataSize:     *flagDataSize,
		BlockSize:    *flagBlockSize,
		BaseSize:     *flagBaseSize,
		ReadyTimeout: *flagReady,
		StopTimeout:  *flagStop,
	}
}

func TestSnapshotterConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	o := options()
	if o.Thinsnap == "" {
		t.Fatal("the thinsnap CLI is needed to create pools: pass -ts.thinsnap or set TS_THINSNAP")
	}
	switch *flagSnapshotter {
	case "thinsnapd":
		if o.Thinsnapd == "" {
			t.Fatal("no thinsnapd: pass -ts.thinsnapd or set TS_THINSNAPD")
		}
		if _, err := os.Stat(o.Thinsnapd); err != nil {
			t.Fatalf("thinsnapd: %v", err)
		}
		if *flagCtrd != "" {
			throughContainerd(t, o, harness.ContainerdOptions{Binary: *flagCtrd, ConfigVersion: *flagCtrdCfg})
			return
		}
		testsuite.SnapshotterSuite(t, "thinsnapd", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
			ts, err := harness.NewThinsnapd(ctx, o, root)
			if err != nil {
				return nil, nil, err
			}
			return ts.Snapshotter, ts.Close, nil
		})
	case "devmapper":
		testsuite.SnapshotterSuite(t, "devmapper", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
			dm, err := harness.NewDevmapper(ctx, o, root)
			if err != nil {
				return nil, nil, err
			}
			return dm.Snapshotter, dm.Close, nil
		})
	default:
		t.Fatalf("-ts.snapshotter %q: want thinsnapd or devmapper", *flagSnapshotter)
	}
}

// throughContainerd runs the suite through one containerd (with one pool and
// one thinsnapd) for the whole run: starting a containerd takes seconds
// under TCG, and containerd keeps the cases apart by namespace as it keeps
// its own tenants apart. Each case gets a namespace and a lease of its own;
// its cleanup deletes the lease (containerd's GC then removes the case's
// snapshots from thinsnapd) and fails if either daemon has died.
func throughContainerd(t *testing.T, o harness.Options, co harness.ContainerdOptions) {
	c, err := harness.NewContainerd(context.Background(), o, co, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	var seq int64
	testsuite.SnapshotterSuite(t, "containerd", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		ns := fmt.Sprintf("case-%d", atomic.AddInt64(&seq, 1))
		sn, release, err := c.Snapshotter(ctx, ns)
		if err != nil {
			return nil, nil, err
		}
		return sn, func() error {
			if err := release(); err != nil {
				return err
			}
			return c.Alive()
		}, nil
	})
}
