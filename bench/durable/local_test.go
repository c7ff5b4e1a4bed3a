package durable

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench"
)

func TestLoopbackRTT(t *testing.T) {
	m, err := LoopbackRTT(t.Context(), RTTOptions{Rounds: 500, Warmup: 10, Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	if m.Rate <= 0 || m.P50 <= 0 || m.P99 < m.P50 {
		t.Fatalf("implausible %+v", m)
	}
}

func TestLoopbackRTTCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := LoopbackRTT(ctx, RTTOptions{Rounds: 1 << 30}); err == nil {
		t.Fatal("no error from a cancelled context")
	}
}

func TestAppendLoad(t *testing.T) {
	dir := t.TempDir()
	m, err := AppendLoad(t.Context(), AppendOptions{Dir: dir, Appenders: 4, Runtime: 300 * time.Millisecond, Ramp: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Records made durable, at least one per fdatasync, and latencies.
	if m.Rate <= 0 || m.PerSync < 1 || m.P50 <= 0 || m.P99 < m.P50 {
		t.Fatalf("implausible %+v", m)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("journal directory left behind: %v", left)
	}
	if _, err := AppendLoad(t.Context(), AppendOptions{Dir: dir, Appenders: 0, Runtime: time.Second}); !errors.Is(err, ErrOptions) {
		t.Errorf("no appenders: %v", err)
	}
}

// A load cut short by ctx returns at once with ctx's error rather than a
// rate over a partial window.
func TestAppendLoadCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := AppendLoad(ctx, AppendOptions{Dir: t.TempDir(), Appenders: 2, Runtime: time.Hour, Ramp: 10 * time.Millisecond})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestProcessStop(t *testing.T) {
	p, err := startProcess("sleeper", []string{"sleep", "60"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.stop(10 * time.Second); err != nil || !p.Exited() {
		t.Fatalf("stop: %v, exited %v", err, p.Exited())
	}
	if err := p.stop(time.Second); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	// A child that ignores SIGTERM is killed after the grace.
	stubborn, err := startProcess("stubborn", []string{"sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`})
	if err != nil {
		t.Fatal(err)
	}
	if err := poll(t.Context(), "stubborn ready", 10*time.Second, nil, func(context.Context) error {
		if stubborn.Output.String() == "" {
			return errors.New("no output yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := stubborn.stop(200 * time.Millisecond); err == nil || !stubborn.Exited() {
		t.Fatalf("stop of a TERM-ignoring child: %v, exited %v", err, stubborn.Exited())
	}
	var nilProc *process
	if err := nilProc.stop(time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPollReportsExit(t *testing.T) {
	p, err := startProcess("quitter", []string{"sh", "-c", "echo bad config >&2; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	err = poll(t.Context(), "quitter ready", 30*time.Second, []*process{p}, func(context.Context) error { return errors.New("not yet") })
	if !errors.Is(err, ErrStart) {
		t.Fatalf("err %v, want ErrStart", err)
	}
	<-p.Done()
	if err := p.exitError(); !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "bad config") {
		t.Errorf("exit error lacks the child's output: %v", err)
	}
	err = poll(t.Context(), "never", 100*time.Millisecond, nil, func(context.Context) error { return errors.New("still no") })
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "still no") {
		t.Errorf("timeout: %v", err)
	}
}

func TestRunCommand(t *testing.T) {
	out, err := runCommand(t.Context(), 10*time.Second, "sh", "-c", "echo hello")
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("%q %v", out, err)
	}
	if _, err := runCommand(t.Context(), 100*time.Millisecond, "sleep", "30"); !errors.Is(err, ErrCommand) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
	if _, err := runCommand(t.Context(), 10*time.Second, "sh", "-c", "echo why >&2; exit 1"); !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "why") {
		t.Errorf("failure: %v", err)
	}
}

func TestProbeNBDRejectsStaleSocket(t *testing.T) {
	if err := bench.ProbeNBD(t.Context(), "unix", filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("probe of a missing socket succeeded")
	}
}

func TestReadUUID(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "state.json")
	os.WriteFile(good, []byte(`{"version":1,"uuid":"9793353d0ccc4cd59338fa4e70957c2b","role":"primary"}`), 0o644)
	if u, err := readUUID(good); err != nil || u != "9793353d0ccc4cd59338fa4e70957c2b" {
		t.Fatalf("%q %v", u, err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"version":1}`), 0o644)
	if _, err := readUUID(bad); err == nil {
		t.Error("no uuid accepted")
	}
}
