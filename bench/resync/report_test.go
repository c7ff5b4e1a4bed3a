package resync

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func round(i int, direct, buffered, both, resync float64, wire int64) *Round {
	r := &Round{Index: i, ChangedBytes: 10 * ChunkSize,
		ReadBuffered: &ReadMeasure{Seconds: buffered},
		ReadBoth:     &ReadMeasure{Seconds: both},
		Resync: &ResyncMeasure{Seconds: resync, WallSeconds: resync + 0.3, WireBytes: wire, SentBytes: 10 * ChunkSize,
			TotalBytes: 1 << 30, Full: true, CPUBusy: 0.5, DaemonCPUSeconds: 1},
	}
	if direct > 0 {
		r.ReadDirect = &ReadMeasure{Seconds: direct}
	}
	return r
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestReportTargets(t *testing.T) {
	rep := &Report{Name: "resync", Title: "t", Machine: Machine{NProc: 2, LoadStart: "1.5", LoadEnd: "6.25"}, Settings: Settings{Size: 1 << 30, ChunkSize: ChunkSize, Changed: 0.01, Cache: CacheCold, Repeat: 4}}
	rep.Rounds = []*Round{
		round(0, 2, 3, 5, 3, 11<<20), // read once 2 s (O_DIRECT faster): 1.5×
		round(1, 4, 2, 5, 4, 12<<20), // read once 2 s (buffered faster): 2×
		round(2, 2, 2, 5, 2, 10<<20), // 1×
		{Index: 3, Error: "boom"},    // failed: left out of the medians
	}
	rep.finish()
	if got := rep.failedRounds(); got != 1 {
		t.Fatalf("failed rounds %d", got)
	}
	m := rep.Medians
	if m.Rounds != 3 || m.ReadOnceSeconds != 2 || m.ReadOnceMethod != "O_DIRECT, one request at a time" || m.ResyncSeconds != 3 || m.WireBytes != 11<<20 || m.ReadDirectSeconds != 2 || m.ReadBothSeconds != 5 {
		t.Fatalf("medians %+v", m)
	}
	wire, tm := rep.Targets[0], rep.Targets[1]
	if !wire.Valid || !near(wire.Value, 100*float64(11<<20)/(1<<30)) || !wire.Pass() || len(wire.PerRound) != 3 {
		t.Fatalf("wire target %+v", wire)
	}
	if !tm.Valid || tm.Value != 1.5 || !tm.Pass() || len(tm.PerRound) != 3 || tm.PerRound[1] != 1 {
		t.Fatalf("time target %+v", tm)
	}
	if rep.ResyncOverReadBoth != 0.6 {
		t.Fatalf("resync / read both = %v", rep.ResyncOverReadBoth)
	}
	if met, total := rep.Met(); met != 2 || total != 2 {
		t.Fatalf("met %d of %d", met, total)
	}
	// Over the goal: not met, and the table says by how much.
	rep.Rounds[0].Resync.Seconds, rep.Rounds[1].Resync.Seconds, rep.Rounds[2].Resync.Seconds = 8, 8, 8
	rep.finish()
	if rep.Targets[1].Pass() || !strings.Contains(rep.TargetTable(), "✗ (167% over)") {
		t.Fatalf("4× read time passed the 1.5× goal:\n%s", rep.TargetTable())
	}

	rep.Rounds[3].ResyncFirst = true
	md := rep.Markdown()
	for _, want := range []string{"## Targets: 1 of 2 met", "| 3 | resync, then reads |", "boom", "drop_caches", "read both images at once", "Every round is also in `resync.json`", "load average up to 6.2 on 2 CPUs"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	if err := rep.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	var back Report
	data, err := os.ReadFile(filepath.Join(dir, "resync.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &back); err != nil || len(back.Rounds) != 4 || back.Medians == nil || len(back.Targets) != 2 {
		t.Fatalf("resync.json: %v %+v", err, back)
	}
	if _, err := os.Stat(filepath.Join(dir, "resync.md")); err != nil {
		t.Fatal(err)
	}
}

func TestReportNoRounds(t *testing.T) {
	rep := &Report{Name: "resync", Settings: Settings{Size: 1 << 30, ChunkSize: ChunkSize, Cache: CacheWarm}}
	rep.Rounds = []*Round{{Error: "x"}}
	rep.finish()
	for _, tg := range rep.Targets {
		if tg.Valid || tg.Pass() {
			t.Fatalf("target without inputs is valid: %+v", tg)
		}
	}
	if rep.Medians != nil || !strings.Contains(rep.Table(), "n/a") || !strings.Contains(rep.Markdown(), "Page cache: warm") {
		t.Fatalf("report without rounds:\n%s", rep.Markdown())
	}
}

func TestReadOnceMethod(t *testing.T) {
	rs := []*Round{round(0, 3, 2, 4, 1, 1), round(1, 3, 2.5, 4, 1, 1), round(2, 1, 2.2, 4, 1, 1)}
	// Medians: O_DIRECT 3 (one lucky 1 s sample does not count), buffered 2.2.
	m, s, ok := readOnceMethod(rs)
	if !ok || s != 2.2 || m.name != "through the page cache, one request at a time" {
		t.Fatalf("%v %v %q", ok, s, m.name)
	}
	for _, r := range rs {
		r.ReadDirectQD4 = &ReadMeasure{Seconds: 0.5}
	}
	if m, s, _ := readOnceMethod(rs); s != 0.5 || m.name != "O_DIRECT, 4 requests in flight" {
		t.Fatalf("%v %q", s, m.name)
	}
	// A method some round lacks is not a candidate.
	rs[1].ReadDirectQD4 = nil
	if _, s, _ := readOnceMethod(rs); s != 2.2 {
		t.Fatalf("%v", s)
	}
	if _, _, ok := readOnceMethod([]*Round{{}}); ok {
		t.Fatal("no reads: found a method")
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{Twinblock: "x"}.withDefaults()
	if err != nil || o.Size != 4<<30 || o.Changed != 0.01 || o.Repeat != 3 || o.Cache != CacheCold || o.Seed == 0 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for name, bad := range map[string]Options{
		"no binary": {},
		"size":      {Twinblock: "x", Size: ChunkSize + 1},
		"changed":   {Twinblock: "x", Changed: 1.5},
		"negative":  {Twinblock: "x", Changed: -0.1},
		"repeat":    {Twinblock: "x", Repeat: -1},
		"cache":     {Twinblock: "x", Cache: "lukewarm"},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMemTotalAndShowArgs(t *testing.T) {
	if got := memTotal("24684084 kB"); got != "23.5 GiB" {
		t.Fatalf("memTotal: %q", got)
	}
	if got := memTotal("junk"); got != "junk" {
		t.Fatalf("memTotal(junk): %q", got)
	}
	p, err := newPair(t.TempDir(), "/x/bin/twinblock", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Dir(p.a.dir)
	got := p.showArgs([]string{"/x/bin/twinblock", "serve", "--config", filepath.Join(work, "a", "twinblock.yaml")})
	if got != "twinblock serve --config WORK/a/twinblock.yaml" {
		t.Fatalf("showArgs: %q", got)
	}
}
