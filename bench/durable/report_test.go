package durable

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// reportWith builds a report whose rows have one sample each with the
// given measures, medians computed.
func reportWith(ms map[string]Measure) *Report {
	r := &Report{Name: "test", Title: "Test"}
	for k, m := range ms {
		m := m
		row := &Row{Key: k, Name: k, Unit: "IOPS", Samples: []Sample{{Round: 1, Measure: &m}}}
		row.computeMedian()
		r.Rows = append(r.Rows, row)
	}
	return r
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }

func TestJournalTargets(t *testing.T) {
	r := reportWith(map[string]Measure{
		RowBaseline:  {Rate: 5000, P50: 200 * time.Microsecond},
		RowNBDQD1:    {Rate: 4000, P50: 250 * time.Microsecond},
		RowNBDQD32:   {Rate: 36000, P50: time.Millisecond},
		RowJournal1:  {Rate: 5000},
		RowJournal32: {Rate: 60000},
	})
	ts := journalTargets(r)
	want := []struct {
		value float64
		pass  bool
	}{
		{9, false},   // 36000 / 4000 < 10
		{1.25, true}, // 250 µs / 200 µs <= 1.3
		{12, true},   // 60000 / 5000 >= 10
	}
	if len(ts) != len(want) {
		t.Fatalf("%d targets", len(ts))
	}
	for i, w := range want {
		if !ts[i].Valid || !near(ts[i].Value, w.value) || ts[i].Pass() != w.pass {
			t.Errorf("target %d %q: value %v valid %v pass %v, want %v pass %v", i, ts[i].Name, ts[i].Value, ts[i].Valid, ts[i].Pass(), w.value, w.pass)
		}
	}
	if m := ts[0].Margin(); !near(m, -0.1) {
		t.Errorf("margin %v, want -0.1 (10%% short)", m)
	}
	if m := ts[1].Margin(); !near(m, 0.05/1.3) {
		t.Errorf("margin %v", m)
	}
}

func TestPairTargets(t *testing.T) {
	r := reportWith(map[string]Measure{
		RowStreams2:       {Rate: 6400, P50: 300 * time.Microsecond},
		RowRTT:            {Rate: 60000, P50: 20 * time.Microsecond},
		RowStandaloneQD32: {Rate: 10000},
		RowPairQD32:       {Rate: 7500},
		RowPairQD1:        {Rate: 2000, P50: 480 * time.Microsecond},
		"wan-sync-qd32":   {Rate: 5000},
	})
	ts := pairTargets(r, 2500*time.Microsecond)
	if len(ts) != 3 {
		t.Fatalf("%d targets", len(ts))
	}
	if !ts[0].Valid || !near(ts[0].Value, 0.75) || !ts[0].Pass() {
		t.Errorf("pair/standalone: %+v", ts[0])
	}
	// floor = 300 + 20 = 320 µs; 480/320 = 1.5 > 1.3.
	if !ts[1].Valid || !near(ts[1].Value, 1.5) || ts[1].Pass() || !strings.Contains(ts[1].Inputs, "320 µs") {
		t.Errorf("p50/floor: %+v", ts[1])
	}
	// 0.8 × 32 / 5 ms = 5120; 5000 misses it.
	if !ts[2].Valid || !near(ts[2].Goal, 5120) || ts[2].Value != 5000 || ts[2].Pass() || ts[2].Unit != "IOPS" {
		t.Errorf("WAN: %+v", ts[2])
	}
}

func TestTargetsWithMissingRowsAreNotMet(t *testing.T) {
	r := reportWith(map[string]Measure{RowNBDQD1: {Rate: 4000, P50: time.Millisecond}})
	// A row whose samples all failed has no median.
	r.Rows = append(r.Rows, &Row{Key: RowNBDQD32, Samples: []Sample{{Error: "boom"}}})
	r.Rows[len(r.Rows)-1].computeMedian()
	for _, tg := range journalTargets(r) {
		if tg.Valid || tg.Pass() {
			t.Errorf("%q valid %v pass %v without its inputs", tg.Name, tg.Valid, tg.Pass())
		}
	}
	for _, tg := range pairTargets(reportWith(nil), 2500*time.Microsecond) {
		if tg.Valid || tg.Pass() {
			t.Errorf("%q valid without rows", tg.Name)
		}
	}
	// A zero denominator is not a ratio.
	z := reportWith(map[string]Measure{RowNBDQD1: {Rate: 0}, RowNBDQD32: {Rate: 10}})
	if tg := journalTargets(z)[0]; tg.Valid {
		t.Errorf("ratio over zero accepted: %+v", tg)
	}
}

func TestFloorAndWANGoal(t *testing.T) {
	if f := Floor(&Measure{P50: 306 * time.Microsecond}, &Measure{P50: 16 * time.Microsecond}); f != 322*time.Microsecond {
		t.Errorf("floor %s", f)
	}
	if g := WANGoal(2500 * time.Microsecond); !near(g, 5120) {
		t.Errorf("goal %v", g)
	}
	if g := WANGoal(10 * time.Millisecond); !near(g, 1280) {
		t.Errorf("goal %v", g)
	}
	if g := WANGoal(0); g != 0 {
		t.Errorf("goal %v at no latency", g)
	}
}

func TestMedianMeasure(t *testing.T) {
	row := &Row{Samples: []Sample{
		{Measure: &Measure{Rate: 100, P50: 3 * time.Millisecond, P99: 9, PerSync: 4}},
		{Error: "failed"},
		{Measure: &Measure{Rate: 300, P50: 1 * time.Millisecond, P99: 7, PerSync: 2}},
		{Measure: &Measure{Rate: 200, P50: 2 * time.Millisecond, P99: 8, PerSync: 3}},
	}}
	row.computeMedian()
	want := Measure{Rate: 200, P50: 2 * time.Millisecond, P99: 8, PerSync: 3}
	if row.OK != 3 || row.Median == nil || *row.Median != want {
		t.Fatalf("ok %d median %+v, want %+v", row.OK, row.Median, want)
	}
	none := &Row{Samples: []Sample{{Error: "x"}}}
	none.computeMedian()
	if none.Median != nil || none.OK != 0 {
		t.Fatalf("median of no successes: %+v", none.Median)
	}
}

func TestTablesMarkTargets(t *testing.T) {
	r := reportWith(map[string]Measure{
		RowBaseline:  {Rate: 5000, P50: 200 * time.Microsecond, P99: 4 * time.Millisecond},
		RowNBDQD1:    {Rate: 4000, P50: 250 * time.Microsecond},
		RowNBDQD32:   {Rate: 20000, P50: time.Millisecond},
		RowJournal32: {Rate: 60000, PerSync: 16.25},
	})
	r.Targets = journalTargets(r)
	tt := r.TargetTable()
	for _, want := range []string{
		"| NBD QD32 IOPS / QD1 IOPS (group commit) | 5.00× | >= 10.00× | ✗ (50% off) | 20,000 / 4,000 IOPS |",
		"| 1.25× | <= 1.30× | ✓ |",
		"| journal appends/s: 32 appenders / 1 appender | – | >= 10.00× | n/a |",
	} {
		if !strings.Contains(tt, want) {
			t.Errorf("target table lacks %q:\n%s", want, tt)
		}
	}
	if met, total := r.Met(); met != 1 || total != 3 {
		t.Errorf("met %d of %d", met, total)
	}
	rt := r.RowTable()
	if !strings.Contains(rt, "| 60,000 IOPS (16.2 rec/sync) |") || !strings.Contains(rt, "| 200 µs | 4.00 ms | 1/1 |") {
		t.Errorf("row table:\n%s", rt)
	}
}

func TestWriteFiles(t *testing.T) {
	r := reportWith(map[string]Measure{RowStreams2: {Rate: 6000, P50: 300 * time.Microsecond}})
	r.Name, r.Command = "pair", "twinblock bench pair"
	r.Rows[0].Samples[0].Streams = []PsyncResult{{Name: "stream1", WriteP50: 5 * time.Microsecond, SyncP50: 295 * time.Microsecond}}
	r.Rows = append(r.Rows, &Row{Key: "pair-qd1", Name: "pair", Samples: []Sample{{Round: 2, Error: "daemon a|b exited"}}})
	r.Settings = Settings{Runtime: 10 * time.Second, Repeat: 3, Size: 1 << 30, Dir: "/w", Pinning: &Pinning{Primary: "0", Client: "0", Secondary: "1"}, WANLatency: 2500 * time.Microsecond}
	r.Machine = Machine{NProc: 2, Kernel: "6.1", Fio: "fio-3.33", Disk: "Filesystem Type\n/dev/vda ext4"}
	r.Targets = pairTargets(r, 2500*time.Microsecond)
	dir := t.TempDir()
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "pair.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"`twinblock bench pair`", "/dev/vda ext4", "taskset -c", "2.5ms each way (5ms round trip)",
		"stream1: write 5 µs + fdatasync 295 µs", `daemon a\|b exited`, "## Targets: 0 of 3 met"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("pair.md lacks %q", want)
		}
	}
	js, err := os.ReadFile(filepath.Join(dir, "pair.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 2 || back.Rows[0].Samples[0].Streams[0].SyncP50 != 295*time.Microsecond || back.Rows[1].Samples[0].Error == "" {
		t.Errorf("round trip through JSON lost samples: %+v", back.Rows)
	}
}

func TestSelectRowsAndOptions(t *testing.T) {
	got, err := selectRows(journalSpecs(), []string{RowJournal32, RowBaseline})
	if err != nil || len(got) != 2 || got[0].key != RowBaseline || got[1].key != RowJournal32 {
		t.Fatalf("selected %v (%v): want report order", keys(got), err)
	}
	if _, err := selectRows(journalSpecs(), []string{"nbd-qd64"}); !errors.Is(err, ErrOptions) {
		t.Errorf("unknown row: %v", err)
	}
	if k := PairRows([]string{"sync"}); len(k) != 9 || k[6] != RowAsyncQD32 || k[7] != "wan-sync-qd32" || k[8] != "wan-sync-qd1" {
		t.Errorf("pair rows %v", k)
	}
	for name, o := range map[string]Options{
		"size":    {Size: 1000},
		"runtime": {Runtime: -time.Second},
		"repeat":  {Repeat: -1},
	} {
		if _, err := o.withDefaults(); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: %v", name, err)
		}
	}
	d, err := (&Options{RampTime: -1}).withDefaults()
	if err != nil || d.RampTime != 0 || d.Runtime != 10*time.Second || d.Repeat != 3 || d.Size != 1<<30 || d.Dir != "." {
		t.Errorf("defaults %+v %v", d, err)
	}
	if _, err := RunPair(t.Context(), Options{WANModes: []string{"fast"}}); !errors.Is(err, ErrOptions) {
		t.Errorf("bad mode: %v", err)
	}
	if _, err := RunJournal(t.Context(), Options{Rows: []string{RowNBDQD1}, Dir: t.TempDir()}); !errors.Is(err, ErrOptions) {
		t.Errorf("NBD row without a binary: %v", err)
	}
}

func TestFmt(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 5119.6: "5,120", 1234567: "1,234,567"} {
		if got := bench.FormatCount(in); got != want {
			t.Errorf("bench.FormatCount(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[time.Duration]string{0: "–", 16 * time.Microsecond: "16 µs", 4060 * time.Microsecond: "4.06 ms", 41 * time.Millisecond: "41.0 ms"} {
		if got := bench.FormatLatency(in); got != want {
			t.Errorf("bench.FormatLatency(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	lat := make([]time.Duration, 0, 200)
	for i := 200; i >= 1; i-- {
		lat = append(lat, time.Duration(i))
	}
	p50, p99 := percentiles(lat)
	if p50 != 100 || p99 != 198 {
		t.Errorf("p50 %d p99 %d, want 100 198 (nearest rank)", p50, p99)
	}
	if p50, p99 := percentiles([]time.Duration{7}); p50 != 7 || p99 != 7 {
		t.Errorf("one value: %d %d", p50, p99)
	}
	if p50, p99 := percentiles(nil); p50 != 0 || p99 != 0 {
		t.Errorf("none: %d %d", p50, p99)
	}
}

// Per-round ratios pair the samples of one round and skip rounds where an
// input failed; the verdict still uses the medians.
func TestPerRoundRatios(t *testing.T) {
	m := func(rate float64) *Measure { return &Measure{Rate: rate, P50: time.Millisecond} }
	r := &Report{Rows: []*Row{
		{Key: RowJournal1, Samples: []Sample{{Round: 1, Measure: m(2000)}, {Round: 2, Measure: m(6000)}, {Round: 3, Measure: m(6500)}}},
		{Key: RowJournal32, Samples: []Sample{{Round: 1, Measure: m(25000)}, {Round: 2, Error: "x"}, {Round: 3, Measure: m(97500)}}},
	}}
	for _, row := range r.Rows {
		row.computeMedian()
	}
	tg := journalTargets(r)[2]
	if len(tg.PerRound) != 2 || !near(tg.PerRound[0], 12.5) || !near(tg.PerRound[1], 15) {
		t.Fatalf("per round %v, want [12.5 15]", tg.PerRound)
	}
	// Medians: 61250 / 6000.
	if !near(tg.Value, 61250.0/6000) {
		t.Errorf("value %v", tg.Value)
	}
	r.Targets = []Target{tg}
	if tt := r.TargetTable(); !strings.Contains(tt, "per round: 12.50×, 15.00×") {
		t.Errorf("table:\n%s", tt)
	}
}
