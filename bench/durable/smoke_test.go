package durable

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/test/testenv"
)

// tbBin is the twinblock binary TestMain built for the smoke tests; ""
// with -short or when the build failed (buildErr says why).
var (
	tbBin    string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithBuild(m, "durable-test-bin-", &tbBin, &buildErr))
}

func needSmoke(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("smoke test runs real daemons and fio; skipped with -short")
	}
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("fio not installed (apt-get install fio)")
	}
	if buildErr != nil {
		t.Fatalf("building twinblock: %v", buildErr)
	}
}

// smokeOptions: one row, one short sample, a small volume.
func smokeOptions(t *testing.T, row string) Options {
	return Options{
		Twinblock: tbBin, Dir: t.TempDir(), Rows: []string{row},
		Runtime: time.Second, RampTime: -1, Repeat: 1, Size: 16 << 20,
		StartTimeout: 20 * time.Second, Command: "test",
	}
}

// checkSmoke asserts that the one row has one good sample and that the run
// cleaned up its work directory.
func checkSmoke(t *testing.T, rep *Report, err error, dir, row string) {
	t.Helper()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	r := rep.Row(row)
	if r == nil || r.OK != 1 || r.Median == nil || r.Median.Rate <= 0 || r.Median.P50 <= 0 {
		t.Fatalf("row %s: %+v", row, r)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("work directory left behind: %v", left)
	}
	if rep.Machine.Fio == "" || !strings.Contains(rep.Machine.Disk, "Filesystem") {
		t.Errorf("machine facts missing: %+v", rep.Machine)
	}
}

// The journal benchmark's NBD row against the real binary: create, serve a
// standalone file volume, fill it, fio over the unix socket, stop.
func TestRunJournalSmoke(t *testing.T) {
	needSmoke(t)
	o := smokeOptions(t, RowNBDQD1)
	rep, err := RunJournal(t.Context(), o)
	checkSmoke(t, rep, err, o.Dir, RowNBDQD1)
	if len(rep.Setups[setupStandalone]) != 1 {
		t.Errorf("setup commands: %v", rep.Setups)
	}
	// The targets needing rows that did not run say so.
	for _, tg := range rep.Targets {
		if tg.Valid {
			t.Errorf("target %q valid with one row", tg.Name)
		}
	}
}

// The pair benchmark's QD1 row: certificates, two volumes with one uuid,
// secondary then primary, status until Connected, fio, stop both.
func TestRunPairSmoke(t *testing.T) {
	needSmoke(t)
	o := smokeOptions(t, RowPairQD1)
	o.Pin = true
	rep, err := RunPair(t.Context(), o)
	checkSmoke(t, rep, err, o.Dir, RowPairQD1)
	if cmds := rep.Setups[setupPair]; len(cmds) != 2 || !strings.Contains(cmds[0], "b/twinblock.yaml") || !strings.Contains(cmds[1], "a/twinblock.yaml") {
		t.Errorf("pair daemons (secondary first): %v", cmds)
	}
}

// Cancelling a run stops it promptly and still returns a report.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel)
	rep, err := RunJournal(ctx, Options{Dir: t.TempDir(), Rows: []string{RowJournal1}, Runtime: time.Hour, RampTime: -1, Repeat: 1, Size: 1 << 20})
	if err == nil || rep == nil {
		t.Fatalf("rep %v err %v", rep, err)
	}
	if rep.Row(RowJournal1).Median != nil {
		t.Error("a cancelled sample was counted")
	}
}
