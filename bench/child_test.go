package bench

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// RunFio returns what the child wrote to its output file, and on failure
// quotes both the child's stderr and the text before the JSON document
// (where fio puts its own errors when --output is a file).
func TestRunFio(t *testing.T) {
	script := func(body string) func(string) []string {
		return func(out string) []string { return []string{"sh", "-c", body, "sh", out} }
	}
	data, err := RunFio(t.Context(), FioExec{Argv: script(`echo '{"jobs":[]}' > "$1"`), Timeout: 10 * time.Second, Dir: t.TempDir()})
	if err != nil || strings.TrimSpace(string(data)) != `{"jobs":[]}` {
		t.Fatalf("success: %q %v", data, err)
	}
	_, err = RunFio(t.Context(), FioExec{Argv: script(`echo 'fio: bad uri' > "$1"; echo '{' >> "$1"; echo oops >&2; exit 1`), Timeout: 10 * time.Second, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "fio: bad uri") || !strings.Contains(err.Error(), "oops") || strings.Contains(err.Error(), "{") {
		t.Errorf("failure: %v", err)
	}
	_, err = RunFio(t.Context(), FioExec{Argv: script(`exec sleep 30`), Timeout: 100 * time.Millisecond, Dir: t.TempDir()})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timeout 100ms") {
		t.Errorf("timeout: %v", err)
	}
}

// Stop reports a child that had to be killed, and is safe on nil and on
// an exited process.
func TestProcessStopKills(t *testing.T) {
	p, err := StartProcess("stubborn", []string{"sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the trap is set; bounded so a broken shell fails the test
	// rather than hanging it.
	for i := 0; p.Output.String() == "" && !p.Exited(); i++ {
		if i == 1000 {
			t.Fatal("child never got ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Stop(100*time.Millisecond) || !p.Exited() {
		t.Fatalf("TERM-ignoring child not reported killed (exited %v)", p.Exited())
	}
	if p.Stop(time.Second) {
		t.Error("second Stop reported a kill")
	}
	var none *Process
	if none.Stop(time.Second) {
		t.Error("Stop on nil reported a kill")
	}
}
