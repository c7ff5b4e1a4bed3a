package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinblock/twinblock/test/testenv"
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
	bin, remove, err := testenv.TempBuild("twinblock-e2e-", testenv.BuildOptions{Timeout: buildTimeout})
	defer remove()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building twinblock:", err)
		return 1
	}
	tbBin = bin
	return m.Run()
}

// ---- client tools ----

// needTools skips the test when a client binary is missing.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := testenv.LookTool(n); !ok {
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

// command builds an exec.Cmd in its own process group, killed as a whole
// when ctx ends.
var command = testenv.Command

func runSpec(t *testing.T, s cmdSpec) result {
	t.Helper()
	if s.timeout == 0 {
		s.timeout = clientTimeout
	}
	return fromEnv(testenv.Run(t, testenv.Spec{Name: s.name, Args: s.args, Timeout: s.timeout, Stdin: s.stdin, Dir: s.dir}))
}

func fromEnv(r testenv.Result) result {
	return result{stdout: r.Stdout, stderr: r.Stderr, err: r.Err, code: r.Code}
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
type syncBuffer = testenv.SyncBuffer

// timeouts are this suite's bounds, as testenv takes them.
var timeouts = testenv.Timeouts{Client: clientTimeout, Start: startTimeout, Stop: stopTimeout,
	Wait: waitTimeout, Poll: pollEvery}

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
	*testenv.Server
	addr   string // 127.0.0.1:PORT
	socket string // unix socket path, "" when none
	cmd    *exec.Cmd
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
// accepts connections; the test's cleanup kills it.
func startServer(t *testing.T, o serveOptions) *server {
	t.Helper()
	return wrapServer(testenv.StartServer(t, testenv.ServeOptions{Bin: tbBin, Args: o.args, Socket: o.socket, Timeouts: timeouts}))
}

func wrapServer(s *testenv.Server) *server {
	return &server{Server: s, addr: s.Addr, socket: s.Socket, cmd: s.Cmd}
}

// freeAddr returns a loopback address nothing listens on right now.
var freeAddr = testenv.FreeAddr

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
