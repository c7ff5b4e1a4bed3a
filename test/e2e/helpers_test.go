package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tbBin is the twinblock binary TestMain built.
var tbBin string

// Time bounds. Generous compared with what the commands need on an idle
// machine (a second or two), tight enough that a hang fails the suite
// long before go test's own timeout.
const (
	clientTimeout = 60 * time.Second  // one client command
	startTimeout  = 20 * time.Second  // serve until it accepts connections
	stopTimeout   = 45 * time.Second  // SIGTERM until exit (drain default is 30 s)
	buildTimeout  = 5 * time.Minute   // go build of the binary
	fioTimeout    = 120 * time.Second // one fio run
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// TWINBLOCK_E2E_BIN tests a binary built elsewhere (a release build,
	// or a known-good one while the tree does not compile).
	if bin := os.Getenv("TWINBLOCK_E2E_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		tbBin = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "twinblock-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := buildBinary(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building twinblock:", err)
		return 1
	}
	tbBin = bin
	return m.Run()
}

// buildBinary builds ./cmd/twinblock from the module root into dir.
func buildBinary(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go tool not on PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module (go env GOMOD is empty)")
	}
	bin := filepath.Join(dir, "twinblock")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/twinblock")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}

// ---- client tools ----

var toolCache struct {
	sync.Mutex
	paths map[string]string
}

// sbinDirs are searched after PATH: e2fsck, losetup and mkfs.ext4 live
// there and a non-login root shell may not have them on PATH.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/bin"}

func lookTool(name string) (string, bool) {
	toolCache.Lock()
	defer toolCache.Unlock()
	if p, ok := toolCache.paths[name]; ok {
		return p, p != ""
	}
	if toolCache.paths == nil {
		toolCache.paths = map[string]string{}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		p = ""
		for _, d := range sbinDirs {
			c := filepath.Join(d, name)
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				p = c
				break
			}
		}
	}
	toolCache.paths[name] = p
	return p, p != ""
}

// needTools skips the test when a client binary is missing.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := lookTool(n); !ok {
			t.Skipf("%s is not installed (`make test-deps` installs qemu-utils, libnbd-bin, python3-libnbd, fio, nbdkit, fuse3, e2fsprogs)", n)
		}
		if n == "nbdsh" {
			ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
			err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import nbd").Run()
			cancel()
			if err != nil {
				t.Skipf("nbdsh needs Debian's python3-libnbd (/usr/bin/python3 cannot import nbd: %v)", err)
			}
		}
	}
}

// clientEnv puts /usr/bin first: nbdsh runs `python3 -m nbd`, and the first
// python3 on these machines' PATH is not Debian's and lacks the module.
func clientEnv() []string {
	return append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/sbin:"+os.Getenv("PATH"), "LC_ALL=C")
}

type result struct {
	stdout, stderr string
	err            error
	code           int // exit code; -1 when killed or not started
}

func (r result) String() string {
	return fmt.Sprintf("err=%v exit=%d\n--- stdout:\n%s\n--- stderr:\n%s", r.err, r.code, r.stdout, r.stderr)
}

// cmdSpec describes one command run under a timeout.
type cmdSpec struct {
	name    string
	args    []string
	timeout time.Duration // clientTimeout when zero
	stdin   io.Reader
	dir     string
}

// command builds an exec.Cmd that runs in its own process group and has
// the whole group killed when ctx ends, so a client's children cannot
// outlive the timeout.
func command(ctx context.Context, t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	path := name
	if !strings.Contains(name, "/") {
		p, ok := lookTool(name)
		if !ok {
			t.Fatalf("%s not found", name)
		}
		path = p
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = clientEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func runSpec(t *testing.T, s cmdSpec) result {
	t.Helper()
	if s.timeout == 0 {
		s.timeout = clientTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	cmd := command(ctx, t, s.name, s.args...)
	cmd.Stdin = s.stdin
	cmd.Dir = s.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", s.timeout, err)
	}
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err, code: code}
}

// run runs a client command with clientTimeout.
func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	return runSpec(t, cmdSpec{name: name, args: args})
}

// mustRun runs a client command and fails the test unless it exits 0.
func mustRun(t *testing.T, name string, args ...string) result {
	t.Helper()
	r := run(t, name, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), r)
	}
	return r
}

// nbdsh runs a Python script in nbdsh connected to uri (h is the handle).
func nbdsh(t *testing.T, uri, script string) result {
	t.Helper()
	return run(t, "nbdsh", "-u", uri, "-c", script)
}

// ---- the server under test ----

// syncBuffer collects a subprocess's stderr; the exec copier goroutine
// writes while the test reads.
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

// serveOptions says how to start `twinblock serve`.
type serveOptions struct {
	// args are the serve arguments other than --listen and --socket:
	// "--config", path, or the flag form "--name", "vol0", ...
	args []string
	// socket also exports on a unix socket in the test's directory.
	socket bool
}

// server is one running `twinblock serve` process.
type server struct {
	t      *testing.T
	addr   string // 127.0.0.1:PORT
	socket string // unix socket path, "" when none
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{} // closed once the process has exited
	state  *os.ProcessState
	cancel context.CancelFunc
}

// memServer serves one mem volume named vol0 in flag form.
func memServer(t *testing.T, size string, socket bool) *server {
	t.Helper()
	return startServer(t, serveOptions{
		args:   []string{"--name", "vol0", "--backend", "mem", "--size", size},
		socket: socket,
	})
}

// startServer starts serve on a free loopback port and waits until it
// accepts connections. A port taken between our probe and serve's listen
// is retried with another port.
func startServer(t *testing.T, o serveOptions) *server {
	t.Helper()
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		s, retry := tryStart(t, o)
		if s != nil {
			return s
		}
		lastLog = retry
	}
	t.Fatalf("twinblock serve did not start after 3 attempts; last stderr:\n%s", lastLog)
	return nil
}

// tryStart returns the ready server, or nil and the stderr of a start that
// failed only because the port was taken. Other failures end the test.
func tryStart(t *testing.T, o serveOptions) (*server, string) {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"serve", "--listen", addr}, o.args...)
	s := &server{t: t, addr: addr, log: &syncBuffer{}, done: make(chan struct{})}
	if o.socket {
		// Unix socket paths are limited to 108 bytes and t.TempDir() can be
		// long, so the socket gets its own short directory.
		d, err := os.MkdirTemp("", "tb-sock-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		s.socket = filepath.Join(d, "nbd.sock")
		args = append(args, "--socket", s.socket)
	}
	// The process lives until Stop or the test's cleanup, not bound to a
	// client-style timeout; the context only serves to kill it in cleanup.
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cmd := command(ctx, t, tbBin, args...)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	s.cmd = cmd
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", tbBin, err)
	}
	go func() {
		_ = cmd.Wait()
		s.state = cmd.ProcessState
		close(s.done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.done:
			cancel()
			log := s.log.String()
			if strings.Contains(log, "address already in use") {
				return nil, log
			}
			t.Fatalf("twinblock %s exited before accepting connections (%v):\n%s", strings.Join(args, " "), s.state, log)
		default:
		}
		if s.accepting() {
			break
		}
		if time.Now().After(deadline) {
			s.kill()
			t.Fatalf("twinblock serve did not accept connections within %v:\n%s", startTimeout, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("twinblock serve %s stderr:\n%s", strings.Join(args[1:], " "), s.log.String())
		}
	})
	return s, ""
}

// accepting reports whether every listener answers with the NBD greeting.
// The probe reads the whole greeting before closing, so the server sees a
// clean EOF rather than a reset.
func (s *server) accepting() bool {
	if !nbdGreets("tcp", s.addr) {
		return false
	}
	return s.socket == "" || nbdGreets("unix", s.socket)
}

func nbdGreets(network, addr string) bool {
	c, err := net.DialTimeout(network, addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	// NBDMAGIC, IHAVEOPT, 16 bits of handshake flags.
	var g [18]byte
	if _, err := io.ReadFull(c, g[:]); err != nil {
		return false
	}
	return string(g[:16]) == "NBDMAGICIHAVEOPT"
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// URI is the TCP URI of an export.
func (s *server) URI(export string) string { return "nbd://" + s.addr + "/" + export }

// UnixURI is the unix-socket URI of an export.
func (s *server) UnixURI(export string) string {
	if s.socket == "" {
		s.t.Fatal("server started without a unix socket")
	}
	return "nbd+unix:///" + export + "?socket=" + s.socket
}

// Log is the server's stderr so far.
func (s *server) Log() string { return s.log.String() }

// Signal sends sig to the server process.
func (s *server) Signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to twinblock: %v", sig, err)
	}
}

// Wait waits for the process to exit and returns its exit code.
func (s *server) Wait() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		s.kill()
		s.t.Fatalf("twinblock serve did not exit within %v of SIGTERM:\n%s", stopTimeout, s.Log())
	}
	return s.state.ExitCode()
}

// Stop sends SIGTERM and asserts a clean exit (code 0).
func (s *server) Stop() {
	s.t.Helper()
	s.Signal(syscall.SIGTERM)
	if code := s.Wait(); code != 0 {
		s.t.Fatalf("twinblock serve exited %d after SIGTERM (want 0):\n%s", code, s.Log())
	}
}

// kill ends the process group at once (cleanup after a failure).
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

// tb runs a twinblock CLI command (not serve) under clientTimeout.
func tb(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runSpec(t, cmdSpec{name: tbBin, args: args, dir: dir})
}

// ---- data ----

// randomBytes returns n reproducible pseudo-random bytes for seed.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	r := rand.NewChaCha8(s)
	_, _ = r.Read(b)
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sparseFile creates an all-zero file of size bytes without allocating it.
func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// allBytes reports whether every byte of b is v, and where the first
// other one is.
func allBytes(b []byte, v byte) (bool, int) {
	for i, c := range b {
		if c != v {
			return false, i
		}
	}
	return true, -1
}

// requireEqualData fails with the first differing offset instead of
// printing megabytes.
func requireEqualData(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at offset %d (got %#02x, want %#02x); sha256 %s, want %s",
				what, i, got[i], want[i], sha(got), sha(want))
		}
	}
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// statBlocks is the number of 512-byte blocks a file allocates.
func statBlocks(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks
	}
	return 0
}

// fileSHA streams a file through sha256 (large images stay out of memory).
func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
