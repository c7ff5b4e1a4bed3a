//go:build ceph

package ceph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
	"github.com/twinblock/twinblock/nbd"
)

// Time bounds: generous against what each step needs on an idle machine,
// tight enough that a hang fails long before go test's timeout.
const (
	clientTimeout = 60 * time.Second
	startTimeout  = 30 * time.Second
	stopTimeout   = 45 * time.Second
	waitTimeout   = 30 * time.Second
	pollEvery     = 50 * time.Millisecond
	volume        = "vol0"

	kib = 1 << 10
	mib = 1 << 20
)

// ---- commands ----

type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\n--- stdout:\n%s\n--- stderr:\n%s", r.err, r.stdout, r.stderr)
}

// command runs in its own process group, killed as a whole when ctx ends.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/sbin:"+os.Getenv("PATH"), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func runIn(t *testing.T, dir string, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := command(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// tb runs a twinblock CLI command (not serve).
func tb(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runIn(t, dir, clientTimeout, tbBin, args...)
}

func mustTB(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := tb(t, dir, args...)
	if r.err != nil {
		t.Fatalf("twinblock %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is not installed (make test-deps)", n)
		}
	}
}

// shortTempDir keeps unix socket paths (the admin socket lives beside the
// config) under 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tbceph-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ---- the daemon ----

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is one `twinblock serve --config` process.
type server struct {
	t      *testing.T
	addr   string
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{}
	state  *os.ProcessState
	cancel context.CancelFunc
}

// startServe starts serve on a free port and waits until it speaks NBD.
func startServe(t *testing.T, cfg string) *server {
	t.Helper()
	for attempt := 0; ; attempt++ {
		if s := tryServe(t, cfg, attempt < 3); s != nil {
			return s
		}
	}
}

// tryServe returns nil when the port was taken under it and retry is set.
func tryServe(t *testing.T, cfg string, retry bool) *server {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{t: t, addr: addr, log: &syncBuffer{}, done: make(chan struct{}), cancel: cancel}
	s.cmd = command(ctx, tbBin, "serve", "--config", cfg, "--listen", addr)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		s.state = s.cmd.ProcessState
		close(s.done)
	}()
	t.Cleanup(s.kill)
	deadline := time.Now().Add(startTimeout)
	for !nbdGreets(addr) {
		select {
		case <-s.done:
			if retry && strings.Contains(s.log.String(), "address already in use") {
				return nil
			}
			t.Fatalf("twinblock serve exited before serving (%v):\n%s", s.state, s.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("twinblock serve not serving within %v:\n%s", startTimeout, s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func nbdGreets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var g [18]byte
	if _, err := io.ReadFull(c, g[:]); err != nil {
		return false
	}
	return string(g[:16]) == "NBDMAGICIHAVEOPT"
}

func (s *server) uri() string { return "nbd://" + s.addr + "/" + volume }

// stop sends SIGTERM and requires a clean exit.
func (s *server) stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
		s.t.Fatalf("twinblock serve did not exit within %v of SIGTERM:\n%s", stopTimeout, s.log)
	}
	if c := s.state.ExitCode(); c != 0 {
		s.t.Fatalf("twinblock serve exited %d after SIGTERM:\n%s", c, s.log)
	}
}

// kill9 kills the process at once, as a power cut would.
func (s *server) kill9() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (s *server) kill() {
	select {
	case <-s.done:
	default:
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	s.cancel()
}

// ---- one node of a volume ----

// node is a directory with a config (twinblock.yaml) for one volume.
type node struct {
	t    *testing.T
	name string
	dir  string
	cfg  string
	repl string // replication listen address
	srv  *server
	// rbd: the cluster and image holding the volume; nil for a file node.
	cluster *rbdtest.Cluster
	image   string
	img     string // file node: the image path
}

func newNode(t *testing.T, root, name string) *node {
	t.Helper()
	d := filepath.Join(root, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return &node{t: t, name: name, dir: d, cfg: filepath.Join(d, "twinblock.yaml"), repl: freeAddr(t)}
}

// rbdArgs are create's arguments for an rbd volume on c; the image is
// removed when the test ends.
func (n *node) rbdArgs(c *rbdtest.Cluster) []string {
	n.t.Helper()
	n.cluster = c
	n.image = rbdtest.ImageName("e2e-" + n.name)
	n.t.Cleanup(func() {
		// An image whose daemon was killed keeps the dead client's watch
		// for 30 s and cannot be removed before; the throw-away cluster
		// goes away with it anyway.
		if err := c.RemoveImage(n.image); err != nil && !strings.Contains(err.Error(), "has watchers") {
			n.t.Logf("removing %s: %v", n.image, err)
		}
	})
	return []string{"--backend", "rbd", "--ceph-conf", c.Conf, "--keyring", c.Keyring,
		"--pool", c.Pool, "--image", n.image, "--journal-dir", filepath.Join(n.dir, "journal")}
}

func (n *node) fileArgs() []string {
	n.img = filepath.Join(n.dir, volume+".img")
	return []string{"--path", n.img}
}

var uuidLine = regexp.MustCompile(`(?m)^uuid ([0-9a-f]{32}), role (primary|secondary)$`)

// create runs `twinblock create vol0` with the backend args and extra.
func (n *node) create(size string, backendArgs []string, extra ...string) string {
	n.t.Helper()
	args := append([]string{"create", volume, "--config", n.cfg, "--size", size}, backendArgs...)
	r := mustTB(n.t, n.dir, append(args, extra...)...)
	if m := uuidLine.FindStringSubmatch(r.stdout); m != nil {
		return m[1]
	}
	return ""
}

// replArgs are create's replication flags for a node whose peer is p.
func (n *node) replArgs(p *node, certs string) []string {
	return []string{"--node", n.name, "--replication-listen", n.repl, "--peer", p.name,
		"--peer-address", p.repl, "--tls-dir", certs}
}

func (n *node) start() {
	n.t.Helper()
	n.srv = startServe(n.t, n.cfg)
}

func (n *node) stop() {
	n.t.Helper()
	n.srv.stop()
	n.srv = nil
}

func (n *node) kill9() {
	n.t.Helper()
	n.srv.kill9()
	n.srv = nil
}

func (n *node) log() string {
	if n.srv == nil {
		return ""
	}
	return n.srv.log.String()
}

func (n *node) cli(args ...string) result {
	n.t.Helper()
	return tb(n.t, n.dir, append(args, "--config", n.cfg)...)
}

func (n *node) mustCLI(args ...string) {
	n.t.Helper()
	if r := n.cli(args...); r.err != nil {
		n.t.Fatalf("%s on %s: %s\nserver log:\n%s", strings.Join(args, " "), n.name, r, n.log())
	}
}

func (n *node) status() engine.Status {
	n.t.Helper()
	r := n.cli("status", volume, "--json")
	if r.err != nil {
		n.t.Fatalf("status on %s: %s\nserver log:\n%s", n.name, r, n.log())
	}
	var sts []engine.Status
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 1 {
		n.t.Fatalf("status --json on %s: %v in %q", n.name, err, r.stdout)
	}
	return sts[0]
}

// waitFor polls the status until ok holds.
func (n *node) waitFor(what string, ok func(engine.Status) bool) engine.Status {
	n.t.Helper()
	return n.waitForWithin(waitTimeout, what, ok)
}

func (n *node) waitForWithin(d time.Duration, what string, ok func(engine.Status) bool) engine.Status {
	n.t.Helper()
	deadline := time.Now().Add(d)
	for {
		st := n.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(st, "", "  ")
			n.t.Fatalf("node %s: not %s within %v; last status:\n%s\nserver log:\n%s", n.name, what, d, js, n.log())
		}
		time.Sleep(pollEvery)
	}
}

// dial opens an NBD connection, closed at cleanup.
func (n *node) dial() *nbd.Client {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", n.srv.addr, nbd.ClientOptions{ExportName: volume})
	if err != nil {
		n.t.Fatalf("node %s: nbd dial: %v\nserver log:\n%s", n.name, err, n.log())
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// makeCerts runs `twinblock certs pair` for nodes a and b.
func makeCerts(t *testing.T) string {
	t.Helper()
	d := filepath.Join(shortTempDir(t), "certs")
	mustTB(t, "", "certs", "pair", "--out", d, "--nodes", "a,b")
	return d
}

// ---- data ----

func testSeed(t *testing.T) uint64 {
	t.Helper()
	var seed uint64
	if s := os.Getenv("TWINBLOCK_CEPH_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("TWINBLOCK_CEPH_SEED=%q: %v", s, err)
		}
	} else {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (TWINBLOCK_CEPH_SEED=%d replays it)", seed, seed)
	return seed
}

func loadOptions(seed, base uint64, blocks, workers int, d time.Duration) ackload.Options {
	return ackload.Options{BlockSize: 4096, Blocks: blocks, Base: base, Workers: workers,
		MaxOps: 1 << 30, Duration: d, Seed: seed}
}

// errDevice keeps the first error of the device under a load (ackload
// stops quietly at one).
type errDevice struct {
	dev ackload.Device
	mu  sync.Mutex
	err error
}

func (d *errDevice) WriteAt(p []byte, off uint64, fua bool) error {
	return d.note(d.dev.WriteAt(p, off, fua))
}

func (d *errDevice) ReadAt(p []byte, off uint64) error { return d.note(d.dev.ReadAt(p, off)) }

func (d *errDevice) note(err error) error {
	if err != nil {
		d.mu.Lock()
		if d.err == nil {
			d.err = err
		}
		d.mu.Unlock()
	}
	return err
}

func (d *errDevice) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// startLoad runs a verified load in the background; wait returns its log
// and the first error the device saw.
func startLoad(dev ackload.Device, o ackload.Options) (wait func() (*ackload.Log, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), o.Duration+clientTimeout)
	d := &errDevice{dev: dev}
	var l *ackload.Log
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		l, runErr = ackload.Run(ctx, d, o)
	}()
	return func() (*ackload.Log, error) {
		<-done
		cancel()
		if runErr != nil {
			return l, runErr
		}
		return l, d.Err()
	}
}

func verifyOn(t *testing.T, n *node, dev ackload.Device, l *ackload.Log, what string) ackload.Result {
	t.Helper()
	res, err := l.Verify(dev)
	if err != nil {
		t.Fatalf("%s: verify on %s: %v\nserver log:\n%s", what, n.name, err, n.log())
	}
	if res.Acked == 0 {
		t.Fatalf("%s: verify on %s checked no acknowledged block: %+v", what, n.name, res)
	}
	return res
}

// exportImage reads an rbd image with `rbd export` (another client than
// twinblock: what is there is in the cluster).
func exportImage(t *testing.T, c *rbdtest.Cluster, image string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), image+".raw")
	if _, err := c.RBD("export", "--no-progress", c.Pool+"/"+image, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeText(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
