// ctrd-peer is the Go side of bench/run-ctrd-bench.sh: the workload of
// bench/ctrd-bench.c on containerd's own Go client (content.WriteBlob and
// content.ReadBlob through the content proxy, as a pull does). It writes a
// blob of fresh random bytes under a lease, reads it back whole, and deletes
// it, RUNS times, printing "write <ms>" and "read <ms>" per run.
//
//	ctrd-peer SOCKET SIZE_MIB RUNS
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	leasesapi "github.com/containerd/containerd/api/services/leases/v1"
	"github.com/containerd/containerd/content"
	contentproxy "github.com/containerd/containerd/content/proxy"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/leases"
	leaseproxy "github.com/containerd/containerd/leases/proxy"
	"github.com/containerd/containerd/namespaces"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"thinsnap.local/tests/vm/conformance/harness"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func runOnce(ctx context.Context, cs content.Store, p []byte) error {
	if _, err := rand.Read(p); err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip,
		Digest: digest.FromBytes(p), Size: int64(len(p))}
	t0 := time.Now()
	// A plain reader, as a registry response body is: bytes.Reader's WriteTo
	// would hand the whole blob to one gRPC message.
	r := struct{ io.Reader }{bytes.NewReader(p)}
	if err := content.WriteBlob(ctx, cs, "layer-"+desc.Digest.String(), r, desc); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	t1 := time.Now()
	back, err := content.ReadBlob(ctx, cs, desc)
	t2 := time.Now()
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(back, p) {
		return fmt.Errorf("read back %d bytes that differ", len(back))
	}
	fmt.Printf("write %.3f\nread %.3f\n", ms(t1.Sub(t0)), ms(t2.Sub(t1)))
	return cs.Delete(ctx, desc.Digest)
}

func run(socket string, mib, runs int) error {
	ctx := namespaces.WithNamespace(context.Background(), "bench")
	conn, err := harness.Dial(ctx, socket, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	lm := leaseproxy.NewLeaseManager(leasesapi.NewLeasesClient(conn))
	if _, err := lm.Create(ctx, leases.WithID("bench-go")); err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	ctx = leases.WithLease(ctx, "bench-go")
	cs := contentproxy.NewContentStore(contentapi.NewContentClient(conn))
	p := make([]byte, mib<<20)
	for i := 0; i < runs; i++ {
		if err := runOnce(ctx, cs, p); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: ctrd-peer SOCKET SIZE_MIB RUNS")
		os.Exit(2)
	}
	mib, err1 := strconv.Atoi(os.Args[2])
	runs, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || mib < 1 || mib > 4096 || runs < 0 {
		fmt.Fprintln(os.Stderr, "usage: ctrd-peer SOCKET SIZE_MIB(1..4096) RUNS")
		os.Exit(2)
	}
	if err := run(os.Args[1], mib, runs); err != nil {
		fmt.Fprintln(os.Stderr, "ctrd-peer:", err)
		os.Exit(1)
	}
}
