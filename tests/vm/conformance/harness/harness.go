// Package harness starts the snapshotters that the conformance suite and the
// snapshotter benchmark drive: thinsnapd (a separate process reached through
// containerd's proxy client over a unix socket) and containerd's Go devmapper
// snapshotter (in-process), each on a thin pool of its own made with
// `thinsnap pool create` on sparse files.
//
// It must run as root on a kernel with dm-thin (the VM lane).
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/devmapper"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
)

// Options says where the binaries are and how big the pools and base
// devices are. The zero value of a size field means its default.
type Options struct {
	Thinsnapd    string        // path of thinsnapd (TS_THINSNAPD)
	Thinsnap     string        // path of the thinsnap CLI (TS_THINSNAP)
	DataSize     string        // pool data file size (sparse), e.g. "2G"
	MetaSize     string        // pool metadata file size; "" lets the CLI choose
	BlockSize    string        // pool block size, e.g. "64K"
	BaseSize     string        // size of a parentless snapshot, e.g. "64M"
	ReadyTimeout time.Duration // how long thinsnapd may take to listen
	StopTimeout  time.Duration // how long thinsnapd may take to exit on SIGTERM
}

// Defaults fills in the sizes and timeouts left empty.
func (o *Options) Defaults() {
	if o.DataSize == "" {
		o.DataSize = "2G"
	}
	if o.BlockSize == "" {
		o.BlockSize = "64K"
	}
	if o.BaseSize == "" {
		o.BaseSize = "64M"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 30 * time.Second
	}
}

// FromEnv returns Options with the binary paths taken from TS_THINSNAPD and
// TS_THINSNAP.
func FromEnv() Options {
	return Options{Thinsnapd: os.Getenv("TS_THINSNAPD"), Thinsnap: os.Getenv("TS_THINSNAP")}
}

func init() {
	// No udev in the guest: dmsetup (used by the Go devmapper snapshotter)
	// and libdevmapper must create /dev/mapper nodes themselves.
	if os.Getenv("DM_DISABLE_UDEV") == "" {
		os.Setenv("DM_DISABLE_UDEV", "1")
	}
}

var (
	poolSeq   int64
	stateOnce sync.Once
	stateErr  error
)

// poolStateDir makes sure THINSNAP_STATE_DIR names an existing directory, so
// the CLI's pool state files (and thinsnapd, which inherits the environment)
// need no writable /var/lib. An inherited value is kept as it is.
func poolStateDir() error {
	stateOnce.Do(func() {
		if dir := os.Getenv("THINSNAP_STATE_DIR"); dir != "" {
			stateErr = os.MkdirAll(dir, 0o755)
			return
		}
		dir, err := os.MkdirTemp("", "ts-pool-state-")
		if err != nil {
			stateErr = err
			return
		}
		stateErr = os.Setenv("THINSNAP_STATE_DIR", dir)
	})
	return stateErr
}

// UniquePoolName returns a pool name no other pool of this process has used.
func UniquePoolName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), atomic.AddInt64(&poolSeq, 1))
}

// Pool is a thin pool made by `thinsnap pool create` on sparse files.
type Pool struct {
	Name     string
	thinsnap string
}

func runTool(bin string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err,
			strings.TrimSpace(out.String()))
	}
	return nil
}

// CreatePool makes pool NAME on sparse files dir/pool-data and dir/pool-meta.
func CreatePool(o *Options, name, dir string) (*Pool, error) {
	if o.Thinsnap == "" {
		return nil, errors.New("no thinsnap CLI given (flag or TS_THINSNAP)")
	}
	if err := poolStateDir(); err != nil {
		return nil, fmt.Errorf("pool state directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"pool", "create", name,
		"--data", filepath.Join(dir, "pool-data"), "--data-size", o.DataSize,
		"--meta", filepath.Join(dir, "pool-meta"), "--block-size", o.BlockSize}
	if o.MetaSize != "" {
		args = append(args, "--meta-size", o.MetaSize)
	}
	if err := runTool(o.Thinsnap, args...); err != nil {
		return nil, err
	}
	return &Pool{Name: name, thinsnap: o.Thinsnap}, nil
}

// Destroy takes the pool down with its active devices and deletes its files.
func (p *Pool) Destroy() error {
	return runTool(p.thinsnap, "pool", "destroy", p.Name, "--force", "--delete-files")
}

// Daemon is a running daemon (thinsnapd, or containerd in front of it).
type Daemon struct {
	Name    string // the program's base name, for messages
	Socket  string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// LogTail returns the last lines of the daemon's stderr.
func (d *Daemon) LogTail() string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func (d *Daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// StartDaemon runs `thinsnapd --root ROOT --pool POOL --address SOCKET
// --base-size SIZE --no-provisioner` with stderr in logPath, and waits until
// SOCKET is a listening unix socket (a connect succeeds). It fails early, with
// the log's tail, if the daemon exits first. The Snapshots API alone is under
// test (and measured), and the suite runs cases side by side: their daemons
// must not contend for the provisioner's one socket.
func StartDaemon(o *Options, root, pool, socket, logPath string) (*Daemon, error) {
	if o.Thinsnapd == "" {
		return nil, errors.New("no thinsnapd given (flag or TS_THINSNAPD)")
	}
	return startListening(o.Thinsnapd, []string{"--root", root, "--pool", pool, "--address", socket,
		"--base-size", o.BaseSize, "--no-provisioner"}, socket, logPath, o.ReadyTimeout)
}

// startListening runs bin with args, stdout and stderr in logPath, and waits
// up to timeout until socket accepts a connection.
func startListening(bin string, args []string, socket, logPath string, timeout time.Duration) (*Daemon, error) {
	name := filepath.Base(bin)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &Daemon{Name: name, Socket: socket, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	deadline := time.Now().Add(timeout)
	for {
		if d.exited() {
			return nil, fmt.Errorf("%s exited before listening on %s (%v); log:\n%s",
				name, socket, d.waitErr, d.LogTail())
		}
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			c, err := net.DialTimeout("unix", socket, time.Second)
			if err == nil {
				c.Close()
				return d, nil
			}
		}
		if time.Now().After(deadline) {
			d.kill()
			return nil, fmt.Errorf("%s did not listen on %s within %v; log:\n%s",
				name, socket, timeout, d.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *Daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// Stop sends SIGTERM and waits up to timeout for the daemon to exit; past it
// the daemon is killed and Stop fails. A non-zero exit status also fails.
func (d *Daemon) Stop(timeout time.Duration) error {
	if d.exited() {
		return fmt.Errorf("%s had already exited (%v); log:\n%s", d.Name, d.waitErr, d.LogTail())
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %s: %w", d.Name, err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed; log:\n%s",
			d.Name, timeout, d.LogTail())
	}
	if d.waitErr != nil {
		return fmt.Errorf("%s exited after SIGTERM with %v; log:\n%s", d.Name, d.waitErr, d.LogTail())
	}
	return nil
}

// Dial connects to a unix socket with gRPC, the way containerd reaches a
// proxy plugin.
func Dial(ctx context.Context, socket string, timeout time.Duration) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	conn, err := grpc.DialContext(ctx, socket, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", socket, err)
	}
	return conn, nil
}

// Thinsnapd is one pool plus one thinsnapd on it, reached through
// containerd's proxy snapshotter.
type Thinsnapd struct {
	Snapshotter snapshots.Snapshotter
	Daemon      *Daemon
	Pool        *Pool
	conn        *grpc.ClientConn
	stopTimeout time.Duration
}

// NewThinsnapd creates a fresh pool with files under dir, starts thinsnapd
// with its state in dir/state and its socket at dir/ts.sock, and dials it.
// On failure nothing is left behind.
func NewThinsnapd(ctx context.Context, o Options, dir string) (*Thinsnapd, error) {
	o.Defaults()
	if o.Thinsnapd == "" {
		return nil, errors.New("no thinsnapd given (flag or TS_THINSNAPD)")
	}
	pool, err := CreatePool(&o, UniquePoolName("tsconf"), dir)
	if err != nil {
		return nil, err
	}
	d, err := StartDaemon(&o, filepath.Join(dir, "state"), pool.Name, filepath.Join(dir, "ts.sock"),
		filepath.Join(dir, "thinsnapd.log"))
	if err != nil {
		if derr := pool.Destroy(); derr != nil {
			err = fmt.Errorf("%w (and %v)", err, derr)
		}
		return nil, err
	}
	conn, err := Dial(ctx, d.Socket, o.ReadyTimeout)
	if err != nil {
		err = fmt.Errorf("%w; log:\n%s", err, d.LogTail())
		d.kill()
		if derr := pool.Destroy(); derr != nil {
			err = fmt.Errorf("%w (and %v)", err, derr)
		}
		return nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "thinsnap")
	return &Thinsnapd{Snapshotter: sn, Daemon: d, Pool: pool, conn: conn, stopTimeout: o.StopTimeout}, nil
}

// Close closes the connection, stops the daemon (SIGTERM, SIGKILL past the
// stop timeout) and destroys the pool; it reports every step that failed.
func (t *Thinsnapd) Close() error {
	return runSteps(
		func() error { return annotate("close connection", t.conn.Close()) },
		func() error { return t.Daemon.Stop(t.stopTimeout) },
		t.Pool.Destroy)
}

// runSteps runs every step whatever the ones before did, and reports every
// failure in one error.
func runSteps(steps ...func() error) error {
	var errs []string
	for _, step := range steps {
		if err := step(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// annotate prefixes a non-nil err with what failed.
func annotate(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Devmapper is containerd's Go devmapper snapshotter on a fresh pool of its own.
type Devmapper struct {
	Snapshotter snapshots.Snapshotter
	Pool        *Pool
}

// NewDevmapper creates a pool with files under dir and opens containerd's
// devmapper snapshotter on it with its metadata in dir/state.
func NewDevmapper(ctx context.Context, o Options, dir string) (*Devmapper, error) {
	o.Defaults()
	pool, err := CreatePool(&o, UniquePoolName("tsdm"), dir)
	if err != nil {
		return nil, err
	}
	cfg := &devmapper.Config{
		RootPath:      filepath.Join(dir, "state"),
		PoolName:      pool.Name,
		BaseImageSize: o.BaseSize,
	}
	sn, err := devmapper.NewSnapshotter(ctx, cfg)
	if err != nil {
		if derr := pool.Destroy(); derr != nil {
			err = fmt.Errorf("%w (and %v)", err, derr)
		}
		return nil, fmt.Errorf("devmapper snapshotter: %w", err)
	}
	return &Devmapper{Snapshotter: sn, Pool: pool}, nil
}

// Close closes the snapshotter and destroys its pool with its devices.
func (d *Devmapper) Close() error {
	return runSteps(
		func() error { return annotate("close devmapper snapshotter", d.Snapshotter.Close()) },
		d.Pool.Destroy)
}

// VmRSS returns a process's resident set size in bytes from /proc/PID/status.
func VmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
