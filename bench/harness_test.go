package bench

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make test-deps)", tool)
		}
	}
}

// children lists the live child processes of this test process, so a test
// can check that everything a launcher started is gone.
func children(t *testing.T) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, pid := range strings.Fields(string(b)) {
			// A reaped child vanishes; a zombie still shows "Z".
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			if err == nil && !strings.Contains(string(st), ") Z ") {
				out = append(out, pid)
			}
		}
	}
	return out
}

// A twinblock binary that dies at once must give a clear error quoting its
// output, and the launcher must have passed the serve command line.
func TestTwinblockStartFailsClearly(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	bin := writeScript(t, dir, "twinblock", `echo "$@" > `+argsFile+`; echo "serve: backend exploded" >&2; exit 3`)
	s := NewTwinblockServer(TwinblockOptions{Binary: bin, Size: 1 << 30, Dir: dir, StartTimeout: 20 * time.Second})
	err := s.Start(t.Context())
	if !errors.Is(err, ErrServerStart) || !strings.Contains(err.Error(), "backend exploded") {
		t.Fatalf("err = %v, want ErrServerStart quoting the output", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop after failed start: %v", err)
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "serve --log-level warn --name vol0 --backend mem --size 1073741824 --listen 127.0.0.1:"
	if !strings.HasPrefix(string(args), want) || !strings.Contains(string(args), "--socket "+filepath.Join(dir, "twinblock.sock")) {
		t.Errorf("args = %q, want prefix %q and the socket", args, want)
	}
}

// A server that never accepts must not hang the harness: Start gives up
// after the start timeout, and the process is gone afterwards.
func TestTwinblockStartTimeout(t *testing.T) {
	dir := t.TempDir()
	bin := writeScript(t, dir, "twinblock", "exec sleep 60")
	s := NewTwinblockServer(TwinblockOptions{Binary: bin, Size: 1 << 20, Dir: dir, StartTimeout: 300 * time.Millisecond})
	err := s.Start(t.Context())
	if !errors.Is(err, ErrServerStart) || !strings.Contains(err.Error(), "not accepting after") {
		t.Fatalf("err = %v, want ErrServerStart after the timeout", err)
	}
	if !s.p.Exited() {
		t.Error("the process still runs after a failed start")
	}
	if err := s.Check(); !errors.Is(err, ErrServerExited) {
		t.Errorf("Check = %v, want ErrServerExited", err)
	}
}

// A port that accepts but does not speak NBD is not a started server.
func TestProbeNBDRejectsNonNBD(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH\r\n"))
			c.Close()
		}
	}()
	if err := ProbeNBD(t.Context(), "tcp", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "not an NBD server") {
		t.Fatalf("probe = %v", err)
	}
}

func TestGoNBDServerLifecycle(t *testing.T) {
	s := NewGoNBDServer(GoNBDOptions{Size: 1 << 20, Dir: t.TempDir()})
	if err := s.Check(); !errors.Is(err, ErrServerExited) {
		t.Errorf("Check before Start = %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if u := s.URI(Unix); !strings.HasPrefix(u, "nbd+unix:///vol0?socket=") {
		t.Errorf("unix URI %q", u)
	}
	// An idle client in the middle of the handshake must not keep Stop
	// waiting.
	c, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(s.URI(TCP), "nbd://"), "/vol0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 8)
	if _, err := c.Read(buf); err != nil || string(buf) != nbdGreeting {
		t.Fatalf("greeting %q, %v", buf, err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	// The rest of the handshake header may still be buffered; after it
	// the connection must end rather than block.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("connection not closed by Stop: %v", err)
	}
}

func TestNbdkitServerLifecycle(t *testing.T) {
	needTools(t, "nbdkit")
	s := NewNbdkitServer(NbdkitOptions{Size: 1 << 20, Dir: t.TempDir()})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if len(children(t)) < 2 {
		t.Errorf("children %v, want the two nbdkit processes", children(t))
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); !errors.Is(err, ErrServerExited) {
		t.Errorf("Check after Stop = %v", err)
	}
	if c := children(t); len(c) != 0 {
		t.Errorf("processes left: %v", c)
	}
}

func TestNbdkitMissingBinary(t *testing.T) {
	s := NewNbdkitServer(NbdkitOptions{Binary: filepath.Join(t.TempDir(), "no-such-nbdkit"), Size: 1 << 20, Dir: t.TempDir()})
	if err := s.Start(t.Context()); !errors.Is(err, ErrServerStart) {
		t.Fatalf("err = %v, want ErrServerStart", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	bad := map[string]Options{
		"server":         {Servers: []string{"qemu"}},
		"workload":       {Servers: []string{"gonbd"}, Workloads: []string{"8k"}},
		"transport":      {Servers: []string{"gonbd"}, Transports: []string{"vsock"}},
		"size":           {Servers: []string{"gonbd"}, Size: 1000},
		"no twinblock":   {Servers: []string{"twinblock"}},
		"negative":       {Servers: []string{"gonbd"}, Runtime: -time.Second},
		"negative count": {Servers: []string{"gonbd"}, Repeat: -1},
	}
	for name, o := range bad {
		if _, err := Run(t.Context(), o); !errors.Is(err, ErrUnknown) && !errors.Is(err, ErrOptions) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	o, err := (&Options{Servers: []string{"gonbd", "nbdkit", "gonbd"}}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Servers, ",") != "nbdkit,gonbd" || o.Repeat != 3 || o.Runtime != 10*time.Second || o.Size != 1<<30 {
		t.Errorf("defaults: %+v", o)
	}
}

// If one server cannot start, Run fails with that server's error and stops
// the ones it had started.
func TestRunServerStartFailure(t *testing.T) {
	needTools(t, "fio", "nbdkit")
	dir := t.TempDir()
	bin := writeScript(t, dir, "twinblock", `echo "no such volume" >&2; exit 1`)
	// A broken nbdkit: go-nbd (in-process) is fine, nbdkit fails.
	rep, err := Run(t.Context(), Options{Servers: []string{"gonbd", "nbdkit"}, Nbdkit: bin, Size: 1 << 20, Runtime: time.Second})
	if !errors.Is(err, ErrServerStart) || rep != nil || !strings.Contains(err.Error(), "no such volume") {
		t.Fatalf("rep %v, err = %v; want ErrServerStart quoting nbdkit", rep, err)
	}
	rep, err = Run(t.Context(), Options{Twinblock: bin, Size: 1 << 20, Runtime: time.Second})
	if !errors.Is(err, ErrServerStart) || rep != nil {
		t.Fatalf("rep %v, err = %v; want ErrServerStart", rep, err)
	}
	// A twinblock stand-in that does start (nbdkit on the address and
	// socket the launcher passes), then a broken nbdkit: Run must stop
	// the started one.
	good := fakeTwinblock(t, dir)
	var progress strings.Builder
	rep, err = Run(t.Context(), Options{Servers: []string{"twinblock", "nbdkit"}, Twinblock: good, Nbdkit: bin,
		Size: 1 << 20, Runtime: time.Second, StartTimeout: 10 * time.Second, Progress: &progress})
	if !errors.Is(err, ErrServerStart) || rep != nil || !strings.Contains(err.Error(), "nbdkit (tcp)") {
		t.Fatalf("rep %v, err = %v; want ErrServerStart from nbdkit", rep, err)
	}
	if !strings.Contains(progress.String(), "starting nbdkit") {
		t.Fatalf("the stand-in twinblock did not start:\n%s", progress.String())
	}
	if c := children(t); len(c) != 0 {
		t.Errorf("processes left: %v", c)
	}
}

// fakeTwinblock writes a script that takes `twinblock serve` arguments as
// TwinblockServer passes them and serves them with two nbdkit processes.
func fakeTwinblock(t *testing.T, dir string) string {
	return writeScript(t, dir, "twinblock-nbdkit", `
[ "$1 $2 $3" = "serve --log-level warn" ] || { echo "unexpected args: $*" >&2; exit 2; }
addr=${11}
nbdkit --foreground --exit-with-parent -p "${addr##*:}" -i 127.0.0.1 memory size=64M &
exec nbdkit --foreground --exit-with-parent -U "${13}" memory size=64M`)
}

// A whole run, short: three servers (twinblock played by nbdkit behind the
// launcher's command line), one workload, one transport, one round. It
// checks what the report says, not how fast anything was.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs fio")
	}
	needTools(t, "fio", "nbdkit")
	var progress strings.Builder
	rep, err := Run(t.Context(), Options{
		Twinblock:  fakeTwinblock(t, t.TempDir()),
		Workloads:  []string{"4k-randread-qd32"},
		Transports: []string{"unix"},
		Runtime:    time.Second,
		Repeat:     1,
		Size:       64 << 20,
		Progress:   &progress,
		Command:    "bench smoke",
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(rep.Cells) != 3 {
		t.Fatalf("%d cells", len(rep.Cells))
	}
	for _, c := range rep.Cells {
		if c.Median == nil || c.Median.IOPS <= 0 || c.Median.P50 <= 0 || c.Median.P99 < c.Median.P50 || len(c.Samples) != 1 {
			t.Errorf("cell %s/%s: %+v", c.Server, c.Transport, c.Median)
		}
	}
	rows := rep.Rows()
	if rows[0].Cell.Server != ServerTwinblock || rows[0].IOPSRatio <= 0 || rows[2].Cell.Server != ServerGoNBD || rows[2].IOPSRatio <= 0 {
		t.Errorf("rows lack ratios: %+v %+v", rows[0], rows[2])
	}
	if !strings.Contains(progress.String(), "prefilling nbdkit over unix (64 MiB)") || len(rep.Notes) == 0 {
		t.Errorf("no prefill recorded:\n%s\nnotes %v", progress.String(), rep.Notes)
	}
	if rep.Machine.Fio == "" || !strings.HasPrefix(rep.Machine.Nbdkit, "nbdkit") || rep.Machine.NProc < 1 {
		t.Errorf("machine: %+v", rep.Machine)
	}
	if c := children(t); len(c) != 0 {
		t.Errorf("processes left: %v", c)
	}
	t.Log("\n" + rep.Table() + "IOPS " + strconv.FormatFloat(rep.Cells[0].Median.IOPS, 'f', 0, 64))
}
