package testenv

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

var tbBin string
var buildErr error

func TestMain(m *testing.M) {
	os.Exit(MainWithBuild(m, "testenv-bin-", &tbBin, &buildErr))
}

var testTimeouts = Timeouts{Client: 30 * time.Second, Start: 20 * time.Second, Stop: 45 * time.Second,
	Wait: 10 * time.Second, Poll: 20 * time.Millisecond}

func TestRun(t *testing.T) {
	r := Run(t, Spec{Name: "sh", Args: []string{"-c", "cat; echo err >&2; exit 3"}, Stdin: strings.NewReader("in"),
		Timeout: 10 * time.Second, Dir: t.TempDir()})
	if r.Stdout != "in" || r.Stderr != "err\n" || r.Code != 3 || r.Err == nil {
		t.Fatalf("%+v", r)
	}
	start := time.Now()
	r = Run(t, Spec{Name: "sh", Args: []string{"-c", "sleep 30 & sleep 30"}, Timeout: 200 * time.Millisecond})
	if r.Err == nil || !strings.Contains(r.Err.Error(), "timed out") || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout: %+v after %v", r, time.Since(start))
	}
}

func TestSeedAndEnvCount(t *testing.T) {
	t.Setenv("TESTENV_SEED", "42")
	if s := Seed(t, "TESTENV_SEED"); s != 42 {
		t.Fatalf("seed %d", s)
	}
	t.Setenv("TESTENV_N", "7")
	if n := EnvCount("TESTENV_N", 3); n != 7 {
		t.Fatalf("count %d", n)
	}
	t.Setenv("TESTENV_N", "-1")
	if n := EnvCount("TESTENV_N", 3); n != 3 {
		t.Fatalf("count %d", n)
	}
}

type failDevice struct{ err error }

func (d failDevice) WriteAt([]byte, uint64, bool) error { return d.err }
func (d failDevice) ReadAt([]byte, uint64) error        { return nil }

func TestErrDevice(t *testing.T) {
	first, second := errors.New("first"), errors.New("second")
	d := &ErrDevice{Dev: failDevice{first}}
	if err := d.WriteAt(nil, 0, false); err != first {
		t.Fatal(err)
	}
	d.Dev = failDevice{second}
	_ = d.WriteAt(nil, 0, false)
	if d.Err() != first {
		t.Fatalf("kept %v, want the first error", d.Err())
	}
}

// TestServer starts a real `twinblock serve` with a mem volume, on TCP and
// a unix socket, and stops it cleanly; a second one is killed with SIGKILL.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the twinblock binary; skipped with -short")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	o := ServeOptions{Bin: tbBin, Args: []string{"--name", "vol0", "--backend", "mem", "--size", "1M"}, Socket: true, Timeouts: testTimeouts}
	s := StartServer(t, o)
	if !NBDGreets("tcp", s.Addr) || !NBDGreets("unix", s.Socket) {
		t.Fatal("no NBD greeting")
	}
	if got := s.URI("vol0"); got != "nbd://"+s.Addr+"/vol0" {
		t.Fatal(got)
	}
	if got := s.UnixURI("vol0"); got != "nbd+unix:///vol0?socket="+s.Socket {
		t.Fatal(got)
	}
	s.Stop()
	if NBDGreets("tcp", s.Addr) {
		t.Fatal("still serving after Stop")
	}
	o.Socket = false
	s = StartServer(t, o)
	s.Signal(syscall.SIGKILL)
	if code := s.Wait(); code != -1 {
		t.Fatalf("exit code %d after SIGKILL, want -1", code)
	}
}
