package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/leases"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

// ContainerdOptions says which containerd daemon stands between the suite
// and thinsnapd.
type ContainerdOptions struct {
	Binary        string // path of the containerd binary
	ConfigVersion int    // 2 for containerd 1.x, 3 for 2.x
}

// containerdConfig is a config of the given version for a daemon with its
// root, state and sockets under dir and thinsnapd at tsSocket as proxy
// plugin "thinsnap". CRI (which wants a writable /etc), NRI (a socket of
// its own under /var/run) and aufs (whose modprobe takes seconds under TCG)
// are off.
func containerdConfig(version int, dir, tsSocket string) (string, error) {
	off := []string{"io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"}
	switch version {
	case 2:
		off = append(off, "io.containerd.snapshotter.v1.aufs")
	case 3:
		off = append(off, "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime")
	default:
		return "", fmt.Errorf("containerd config version %d: want 2 (containerd 1.x) or 3 (2.x)", version)
	}
	return fmt.Sprintf("version = %d\ndisabled_plugins = [\"%s\"]\nroot = %q\nstate = %q\n"+
		"[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n"+
		"[proxy_plugins.thinsnap]\n  type = \"snapshot\"\n  address = %q\n",
		version, strings.Join(off, "\", \""), filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		filepath.Join(dir, "c.sock"), filepath.Join(dir, "c.sock.ttrpc"), tsSocket), nil
}

// Containerd is a pool, thinsnapd on it, and a containerd daemon of its own
// with thinsnapd as proxy plugin "thinsnap", reached with containerd's Go
// client.
type Containerd struct {
	Client *containerd.Client
	Daemon *Daemon
	ts     *Thinsnapd
}

// NewContainerd starts thinsnapd as NewThinsnapd does, then containerd with
// its config, root, state and socket under dir/containerd, and connects to
// it. On failure nothing is left behind.
func NewContainerd(ctx context.Context, o Options, co ContainerdOptions, dir string) (*Containerd, error) {
	o.Defaults()
	cdir := filepath.Join(dir, "containerd")
	cfg, err := containerdConfig(co.ConfigVersion, cdir, filepath.Join(dir, "ts.sock"))
	if err != nil {
		return nil, err
	}
	if co.Binary == "" {
		return nil, errors.New("no containerd binary given")
	}
	ts, err := NewThinsnapd(ctx, o, dir)
	if err != nil {
		return nil, err
	}
	c := &Containerd{ts: ts}
	if err := c.start(o, co, cdir, cfg); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = fmt.Errorf("%w (and %v)", err, cerr)
		}
		return nil, err
	}
	return c, nil
}

func (c *Containerd) start(o Options, co ContainerdOptions, cdir, cfg string) error {
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(cdir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	socket := filepath.Join(cdir, "c.sock")
	d, err := startListening(co.Binary, []string{"--config", cfgPath}, socket,
		filepath.Join(cdir, "containerd.log"), o.ReadyTimeout)
	if err != nil {
		return err
	}
	c.Daemon = d
	if c.Client, err = containerd.New(socket, containerd.WithTimeout(o.ReadyTimeout)); err != nil {
		return fmt.Errorf("connect to containerd: %w; log:\n%s", err, d.LogTail())
	}
	return nil
}

// Snapshotter returns the client's snapshot service for "thinsnap" with
// every call in namespace ns and under a lease created there for it, so that
// containerd's GC leaves the caller's snapshots alone. release deletes the
// lease with a synchronous GC, which removes from thinsnapd whatever the
// caller left that nothing else holds.
func (c *Containerd) Snapshotter(ctx context.Context, ns string) (sn snapshots.Snapshotter, release func() error, err error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	l, err := c.Client.LeasesService().Create(ctx, leases.WithRandomID())
	if err != nil {
		return nil, nil, fmt.Errorf("create a lease in containerd: %w; log:\n%s", err, c.Daemon.LogTail())
	}
	release = func() error {
		err := c.Client.LeasesService().Delete(ctx, l, leases.SynchronousDelete)
		if err != nil {
			return fmt.Errorf("delete lease %s in namespace %s: %w", l.ID, ns, err)
		}
		return nil
	}
	return &leased{Snapshotter: c.Client.SnapshotService("thinsnap"), ns: ns, lease: l.ID}, release, nil
}

// Alive fails when containerd or thinsnapd has exited.
func (c *Containerd) Alive() error {
	for _, d := range []*Daemon{c.Daemon, c.ts.Daemon} {
		if d.exited() {
			return fmt.Errorf("%s has exited (%v); log:\n%s", d.Name, d.waitErr, d.LogTail())
		}
	}
	return nil
}

// Close closes the client, stops containerd, then thinsnapd (so neither
// exits with a peer gone), and destroys the pool; it reports every step
// that failed.
func (c *Containerd) Close() error {
	var steps []func() error
	if c.Client != nil {
		steps = append(steps, func() error { return annotate("close containerd client", c.Client.Close()) })
	}
	if c.Daemon != nil {
		steps = append(steps, func() error { return c.Daemon.Stop(c.ts.stopTimeout) })
	}
	return runSteps(append(steps, c.ts.Close)...)
}

// leased is a snapshotter whose every call is in one namespace and carries
// one lease.
type leased struct {
	snapshots.Snapshotter
	ns, lease string
}

func (l *leased) ctx(ctx context.Context) context.Context {
	return leases.WithLease(namespaces.WithNamespace(ctx, l.ns), l.lease)
}

func (l *leased) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return l.Snapshotter.Stat(l.ctx(ctx), key)
}

func (l *leased) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return l.Snapshotter.Update(l.ctx(ctx), info, fieldpaths...)
}

func (l *leased) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return l.Snapshotter.Usage(l.ctx(ctx), key)
}

func (l *leased) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return l.Snapshotter.Mounts(l.ctx(ctx), key)
}

func (l *leased) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return l.Snapshotter.Prepare(l.ctx(ctx), key, parent, opts...)
}

func (l *leased) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return l.Snapshotter.View(l.ctx(ctx), key, parent, opts...)
}

func (l *leased) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return l.Snapshotter.Commit(l.ctx(ctx), name, key, opts...)
}

func (l *leased) Remove(ctx context.Context, key string) error {
	return l.Snapshotter.Remove(l.ctx(ctx), key)
}

func (l *leased) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return l.Snapshotter.Walk(l.ctx(ctx), fn, filters...)
}
