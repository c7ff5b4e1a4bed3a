package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var toolCache struct {
	sync.Mutex
	paths map[string]string
}

// sbinDirs are searched after PATH: e2fsck, losetup and mkfs.ext4 live
// there and a non-login root shell may not have them on PATH.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/bin"}

// LookTool finds a client binary on PATH or in the sbin directories; the
// answer is cached.
func LookTool(name string) (string, bool) {
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

// ClientEnv puts /usr/bin first: nbdsh runs `python3 -m nbd`, and the first
// python3 on these machines' PATH is not Debian's and lacks the module.
func ClientEnv() []string {
	return append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/sbin:"+os.Getenv("PATH"), "LC_ALL=C")
}

// Command builds an exec.Cmd that runs in its own process group and has
// the whole group killed when ctx ends, so a client's children cannot
// outlive the timeout. A name without a slash is looked up with LookTool.
func Command(ctx context.Context, t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	path := name
	if !strings.Contains(name, "/") {
		p, ok := LookTool(name)
		if !ok {
			t.Fatalf("%s not found", name)
		}
		path = p
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = ClientEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Spec describes one command run under a timeout.
type Spec struct {
	Name    string
	Args    []string
	Timeout time.Duration // required: every command is bounded
	Stdin   io.Reader
	Dir     string
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Err            error
	Code           int // exit code; -1 when killed or not started
}

// Run runs s to the end (or its timeout) and collects its output.
func Run(t *testing.T, s Spec) Result {
	t.Helper()
	if s.Timeout <= 0 {
		t.Fatalf("testenv: %s run without a timeout", s.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	cmd := Command(ctx, t, s.Name, s.Args...)
	cmd.Stdin = s.Stdin
	cmd.Dir = s.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", s.Timeout, err)
	}
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return Result{Stdout: stdout.String(), Stderr: stderr.String(), Err: err, Code: code}
}

// SyncBuffer collects a subprocess's output; the exec copier goroutine
// writes while the test reads.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ShortTempDir is a temporary directory with a short path, removed at
// cleanup: admin and NBD sockets live in it and unix socket paths are
// limited to 108 bytes, which t.TempDir() under a long test name can
// exceed.
func ShortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// FreeAddr returns a loopback address nothing listens on right now. The
// port is below the kernel's ephemeral range (ip_local_port_range), so no
// outgoing connection of this or a parallel test can be given it between
// this probe and the daemon's bind: with a port from the ephemeral range
// that race made a pair test fail with "address already in use" once.
func FreeAddr(t *testing.T) string {
	t.Helper()
	lo := ephemeralLow()
	for range 200 {
		port := 10000 + rand.IntN(max(lo-10000, 1)) // global source: seeded randomly per process, safe for parallel tests
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken: try another
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	// Every probe below the range was taken (not expected): let the
	// kernel choose.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux
// default 32768; read from /proc when available, floor 11000).
func ephemeralLow() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	return max(lo, 11000)
}

// Seed is the value of the environment variable env when set (to replay a
// failure), else a fresh one; the test logs it either way.
func Seed(t *testing.T, env string) uint64 {
	t.Helper()
	var seed uint64
	if s := os.Getenv(env); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("%s=%q: %v", env, s, err)
		}
	} else {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (%s=%d replays it)", seed, env, seed)
	return seed
}
