package resync

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/test/testenv"
)

// tbBin is the twinblock binary TestMain built for the smoke test; ""
// with -short or when the build failed (buildErr says why).
var (
	tbBin    string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithBuild(m, "resync-bench-bin-", &tbBin, &buildErr))
}

// TestSmokeWarm runs the whole benchmark on a small volume with a warm
// cache (dropping the machine's page cache is not a test's business): two
// rounds of a real pair over TLS through the counting proxy, each with
// rewritten chunks that the resync must carry exactly.
func TestSmokeWarm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real daemons; skipped with -short")
	}
	if buildErr != nil {
		t.Fatalf("building twinblock: %v", buildErr)
	}
	// The work directory holds the admin and NBD sockets: keep it short.
	dir, err := os.MkdirTemp("", "rsb-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Twinblock: tbBin, Dir: dir, Size: 32 << 20, Changed: 0.02, Repeat: 2, Cache: CacheWarm, Seed: 99,
		StartTimeout: 20 * time.Second, PassTimeout: time.Minute, Progress: &progress, Command: "test",
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rep.Rounds) != 2 || rep.Medians == nil || rep.Medians.Rounds != 2 {
		t.Fatalf("rounds: %+v", rep.Rounds)
	}
	want := int64(changedChunks(32<<20, 0.02)) * ChunkSize
	for _, r := range rep.Rounds {
		if r.Resync == nil || int64(r.Resync.SentBytes) != want || r.ChangedBytes != want || r.ReadDirect != nil {
			t.Fatalf("round %d: %+v / %+v", r.Index, r, r.Resync)
		}
		if r.Resync.WireBytes < want || r.Resync.WireBytes > 2*want+256<<10 {
			t.Errorf("round %d: %d bytes on the wire for %d changed", r.Index, r.Resync.WireBytes, want)
		}
	}
	if !rep.Rounds[1].ResyncFirst || rep.Rounds[0].ResyncFirst {
		t.Error("rounds do not alternate their order")
	}
	if !rep.Targets[0].Valid || !rep.Targets[1].Valid {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	// The work directory (images and all) is gone.
	left, _ := filepath.Glob(filepath.Join(dir, ".twinblock-bench-resync-*"))
	if len(left) != 0 {
		t.Fatalf("work directory left behind: %v", left)
	}
}
