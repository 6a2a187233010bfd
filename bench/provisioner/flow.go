package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"

	"thinsnap.local/bench/concurrent"
)

// flow is a VM manager's storage path written with containerd's Go client:
// warm an image into a snapshotter, then per VM a lease and a Prepare of the
// image's top chain id under it, and a teardown that removes the snapshot and
// deletes the lease with synchronous GC.
type flow struct {
	client      *containerd.Client
	snapshotter string
	ref         string
	resolver    remotes.Resolver
	res         *result
	devs        []string // the devices of the sequential VMs, by VM
	rounds      int      // concurrent rounds of this flow: -rounds, or less with -flow-rounds
}

// Lease, key and label names of a VM, as thinsnap's provisioner names them.
func leaseID(vm string) string { return "thinsnap.vm." + vm }
func snapKey(vm string) string { return "thinsnap-vm-" + vm }

// warm pulls the image with unpack into the snapshotter (containerd's client
// makes and deletes its own lease around the pull).
func (f *flow) warm(ctx context.Context) error { return f.pull(ctx, f.ref) }

func (f *flow) pull(ctx context.Context, ref string) error {
	_, err := f.client.Pull(ctx, ref,
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(f.snapshotter),
		containerd.WithResolver(f.resolver))
	if err != nil {
		return fmt.Errorf("pull %s into %s: %w", ref, f.snapshotter, err)
	}
	return nil
}

// prewarm pulls another image and deletes it again, untimed, so that the
// first timed warm finds the client's code paged in, as every later one does.
func (f *flow) prewarm(ctx context.Context, ref string) error {
	if err := f.pull(ctx, ref); err != nil {
		return err
	}
	return f.deleteImage(ctx, ref)
}

// unwarm deletes the image with synchronous GC so the next warm starts from
// nothing.
func (f *flow) unwarm(ctx context.Context) error { return f.deleteImage(ctx, f.ref) }

// deleteImage deletes ref with synchronous GC and says what containerd still
// holds if anything is left.
func (f *flow) deleteImage(ctx context.Context, ref string) error {
	if err := f.client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return fmt.Errorf("delete image %s: %w", ref, err)
	}
	blobs := 0
	if err := f.client.ContentStore().Walk(ctx, func(content.Info) error {
		blobs++
		return nil
	}); err != nil {
		return fmt.Errorf("list content: %w", err)
	}
	snaps := 0
	if err := f.client.SnapshotService(f.snapshotter).Walk(ctx, func(context.Context, snapshots.Info) error {
		snaps++
		return nil
	}); err != nil {
		return fmt.Errorf("list snapshots of %s: %w", f.snapshotter, err)
	}
	if blobs != 0 || snaps != 0 {
		f.res.problem("after deleting the image, containerd still holds %d blobs and %d snapshots: the next warm is not cold",
			blobs, snaps)
	}
	return nil
}

// image is what a per-VM snapshot needs to know about the warmed image.
type image struct {
	name, digest, chainID string
}

// resolve looks the image up by name and computes its top chain id from the
// config's diff_ids, as a VM manager does for each VM.
func (f *flow) resolve(ctx context.Context) (image, error) {
	img, err := f.client.GetImage(ctx, f.ref)
	if err != nil {
		return image{}, fmt.Errorf("get image %s: %w", f.ref, err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return image{}, fmt.Errorf("rootfs of %s: %w", f.ref, err)
	}
	return image{name: img.Name(), digest: img.Target().Digest.String(),
		chainID: identity.ChainID(diffIDs).String()}, nil
}

// step records how long one step of a sequential operation took, when st is
// not nil (the concurrent phase leaves it nil: its calls run at once).
type step struct {
	r    *result
	last time.Time
}

func newStep(r *result) *step { return &step{r: r, last: time.Now()} }

func (st *step) done(op string) {
	if st != nil {
		now := time.Now()
		st.r.add(op, now.Sub(st.last))
		st.last = now
	}
}

// snapshot cuts VM vm's device: a lease labelled with the VM and its image,
// and a Prepare of the image's top chain id under it. It returns the device.
func (f *flow) snapshot(ctx context.Context, vm string, st *step) (string, error) {
	img, err := f.resolve(ctx)
	if err != nil {
		return "", err
	}
	st.done(opSnapshotResolve)
	lm := f.client.LeasesService()
	l, err := lm.Create(ctx, leases.WithID(leaseID(vm)), leases.WithLabels(map[string]string{
		"thinsnap.vm":           vm,
		"thinsnap.image":        img.name,
		"thinsnap.image.digest": img.digest,
	}))
	if err != nil {
		return "", fmt.Errorf("create lease %s: %w", leaseID(vm), err)
	}
	st.done(opSnapshotLease)
	lctx := leases.WithLease(ctx, l.ID)
	mounts, err := f.client.SnapshotService(f.snapshotter).Prepare(lctx, snapKey(vm), img.chainID)
	if err != nil {
		if derr := lm.Delete(ctx, l, leases.SynchronousDelete); derr != nil {
			err = fmt.Errorf("%w (and deleting the lease: %v)", err, derr)
		}
		return "", fmt.Errorf("prepare %s from %s: %w", snapKey(vm), img.chainID, err)
	}
	st.done(opSnapshotPrepare)
	if len(mounts) != 1 {
		return "", fmt.Errorf("prepare %s: %d mounts, want one device", snapKey(vm), len(mounts))
	}
	return mounts[0].Source, nil
}

// teardown removes VM vm's snapshot and deletes its lease with synchronous
// GC. A VM that is already gone is not an error.
func (f *flow) teardown(ctx context.Context, vm string, st *step) error {
	err := f.client.SnapshotService(f.snapshotter).Remove(ctx, snapKey(vm))
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", snapKey(vm), err)
	}
	st.done(opTeardownRemove)
	err = f.client.LeasesService().Delete(ctx, leases.Lease{ID: leaseID(vm)}, leases.SynchronousDelete)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete lease %s: %w", leaseID(vm), err)
	}
	st.done(opTeardownLease)
	return nil
}

// checkDevice records a problem unless dev is a block device (present) or
// is gone (!present).
func (f *flow) checkDevice(vm, dev string, present bool) {
	st, err := os.Stat(dev)
	switch {
	case present && err != nil:
		f.res.problem("VM %s: device %s: %v", vm, dev, err)
	case present && st.Mode()&os.ModeDevice == 0:
		f.res.problem("VM %s: %s is not a device (mode %v)", vm, dev, st.Mode())
	case !present && err == nil:
		f.res.problem("VM %s: device %s is still there after teardown", vm, dev)
	case !present && !errors.Is(err, os.ErrNotExist):
		f.res.problem("VM %s: device %s after teardown: %v", vm, dev, err)
	}
}

func vmName(i int) string { return fmt.Sprintf("vm-%03d", i) }

// timedSnapshot cuts VM i, timing the call and its steps.
func (f *flow) timedSnapshot(ctx context.Context, i int) error {
	start := time.Now()
	dev, err := f.snapshot(ctx, vmName(i), newStep(f.res))
	if err != nil {
		return err
	}
	f.res.add(opSnapshot, time.Since(start))
	f.checkDevice(vmName(i), dev, true)
	f.devs = append(f.devs, dev)
	return nil
}

// timedTeardown tears VM i down, timing the call and its steps.
func (f *flow) timedTeardown(ctx context.Context, i int) error {
	start := time.Now()
	if err := f.teardown(ctx, vmName(i), newStep(f.res)); err != nil {
		return err
	}
	f.res.add(opTeardown, time.Since(start))
	f.checkDevice(vmName(i), f.devs[i], false)
	return nil
}

// timedWarm warms the image from nothing; all but the last warm are undone.
func (f *flow) timedWarm(ctx context.Context, last bool) error {
	start := time.Now()
	if err := f.warm(ctx); err != nil {
		return err
	}
	f.res.add(opWarm, time.Since(start))
	if last {
		img, err := f.resolve(ctx)
		if err != nil {
			return err
		}
		f.res.ImageDigest, f.res.TopChainID = img.digest, img.chainID
		return nil
	}
	return f.unwarm(ctx)
}

// clean deletes an image an earlier run left: it would make the first warm
// a no-op.
func (f *flow) clean(ctx context.Context) error {
	_, err := f.client.GetImage(ctx, f.ref)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get image %s: %w", f.ref, err)
	}
	return f.unwarm(ctx)
}

// parallel cuts n VMs at once, then tears them down at once; the samples of
// a round are added to those of the rounds before.
func (f *flow) parallel(ctx context.Context, n, round int, t *turns) error {
	devs := make([]string, n)
	vm := func(i int) string { return fmt.Sprintf("cvm-%03d", i) }
	snaps, err := concurrent.Run(n, func(i int) (err error) {
		devs[i], err = f.snapshot(ctx, vm(i), nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("%d concurrent snapshots: %w", n, err)
	}
	f.res.add(opConcSnapshot, snaps.Latency...)
	if f.res.Concurrent == nil {
		f.res.Concurrent = &concurrentResult{N: n}
	}
	c := f.res.Concurrent
	c.TotalMS = append(c.TotalMS, ms(snaps.Total)...)
	c.SpreadMS = append(c.SpreadMS, ms(snaps.Spread)...)
	for i, dev := range devs {
		f.checkDevice(vm(i), dev, true)
	}
	if round == 0 {
		f.res.sampleRSS(fmt.Sprintf("with %d concurrent VMs", n))
	}
	if err := t.mid(round); err != nil {
		return err
	}
	downs, err := concurrent.Run(n, func(i int) error { return f.teardown(ctx, vm(i), nil) })
	if err != nil {
		return fmt.Errorf("%d concurrent teardowns: %w", n, err)
	}
	f.res.add(opConcTeardown, downs.Latency...)
	c.TeardownTotalMS = append(c.TeardownTotalMS, ms(downs.Total)...)
	for i, dev := range devs {
		f.checkDevice(vm(i), dev, false)
	}
	return nil
}

// lockstep runs op once for every flow that has not failed, starting with a
// different flow each round, so that a host getting busier or quieter during
// the run weighs on every flow alike. A flow whose op fails stops there.
func lockstep(flows []*flow, round int, op func(f *flow) error) {
	for j := range flows {
		f := flows[(round+j)%len(flows)]
		if f.res.Failed != "" {
			continue
		}
		if err := op(f); err != nil {
			f.res.Failed = err.Error()
			fmt.Fprintf(os.Stderr, "provisioner-bench: %s: FAILED: %v\n", f.res.Flow, err)
		}
	}
}

// run runs the flows side by side, one operation of each in turn: warms
// (each from nothing), VMS snapshots one after another, their teardowns;
// then, rounds times, CONC snapshots at once and their teardowns, one flow
// after the other, each round in its turn when t is given.
func run(ctx context.Context, flows []*flow, t *turns, warms, vms, conc, rounds int) {
	lockstep(flows, 0, func(f *flow) error {
		f.res.sampleRSS("at start")
		if err := f.clean(ctx); err != nil || *flagPrewarm == "" {
			return err
		}
		return f.prewarm(ctx, *flagPrewarm)
	})
	for i := 0; i < warms; i++ {
		lockstep(flows, i, func(f *flow) error { return f.timedWarm(ctx, i == warms-1) })
	}
	lockstep(flows, 0, func(f *flow) error { f.res.sampleRSS("after warm"); return nil })
	for i := 0; i < vms; i++ {
		lockstep(flows, i, func(f *flow) error { return f.timedSnapshot(ctx, i) })
	}
	lockstep(flows, 0, func(f *flow) error { f.res.sampleRSS(fmt.Sprintf("with %d VMs", vms)); return nil })
	for i := 0; i < vms; i++ {
		lockstep(flows, i, func(f *flow) error { return f.timedTeardown(ctx, i) })
	}
	lockstep(flows, 0, func(f *flow) error { f.res.sampleRSS("after teardown"); return nil })
	for i := 0; conc > 0 && i < rounds; i++ {
		if err := t.begin(i); err != nil {
			lockstep(flows, i, func(f *flow) error { return err })
			break
		}
		lockstep(flows, i, func(f *flow) error {
			if i >= f.rounds {
				return nil
			}
			return f.parallel(ctx, conc, i, t)
		})
		if err := t.end(i); err != nil {
			lockstep(flows, i, func(f *flow) error { return err })
			break
		}
	}
	lockstep(flows, 0, func(f *flow) error { f.res.sampleRSS("at the end"); return nil })
}
