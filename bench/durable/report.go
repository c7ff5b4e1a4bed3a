package durable

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
)

// Measure is what one sample (or the median of a row's samples) measured.
type Measure struct {
	// Rate is operations per second in the row's Unit: IOPS for fio rows,
	// appends/s for journal rows, round trips/s for the loopback RTT.
	Rate float64 `json:"rate"`
	// P50 and P99 are per-operation latencies: fio's completion latency,
	// write + fdatasync for psync rows, Append's latency, the round trip.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// PerSync is records per fdatasync (journal rows only).
	PerSync float64 `json:"records_per_sync,omitempty"`
}

// medianMeasure takes the median of each field on its own: with a noisy
// machine the median rate and the median p50 may come from different
// samples, which is what a comparison of medians wants.
func medianMeasure(ms []Measure) Measure {
	return Measure{
		Rate:    bench.MedianFunc(ms, func(m Measure) float64 { return m.Rate }),
		P50:     time.Duration(bench.MedianFunc(ms, func(m Measure) float64 { return float64(m.P50) })),
		P99:     time.Duration(bench.MedianFunc(ms, func(m Measure) float64 { return float64(m.P99) })),
		PerSync: bench.MedianFunc(ms, func(m Measure) float64 { return m.PerSync }),
	}
}

// Sample is one measurement of a row.
type Sample struct {
	Round   int       `json:"round"`
	Start   time.Time `json:"start"`
	Measure *Measure  `json:"measure,omitempty"`
	// Streams holds each fio job of a psync sample (write and fdatasync
	// percentiles apart).
	Streams []PsyncResult `json:"streams,omitempty"`
	// CPU is how busy each CPU was from the start to the end of the
	// sample (ramp included): it tells a CPU-bound row from a disk-bound one.
	CPU *CPUUse `json:"cpu,omitempty"`
	// Disk is what the work directory's block device did meanwhile.
	Disk  *DiskUse `json:"disk,omitempty"`
	Error string   `json:"error,omitempty"`
}

// Row is one measured thing: a configuration and workload.
type Row struct {
	Key  string `json:"key"`  // stable id, used by --rows
	Name string `json:"name"` // what the table shows
	Unit string `json:"unit"` // of Measure.Rate
	// Command is how a sample of this row is run (fio's command line, or
	// a description of an in-process measurement).
	Command string   `json:"command,omitempty"`
	Samples []Sample `json:"samples"`
	OK      int      `json:"ok_samples"`
	// Median is the per-field median of the successful samples; nil when
	// none succeeded.
	Median *Measure `json:"median,omitempty"`
}

func (r *Row) computeMedian() {
	r.OK, r.Median = bench.MedianOf(r.Samples, func(s Sample) *Measure { return s.Measure }, medianMeasure)
}

// Cmp is the direction of a target.
type Cmp string

const (
	AtLeast Cmp = ">=" // higher is better
	AtMost  Cmp = "<=" // lower is better
)

// Target is one goal of an issue, checked against this run's medians.
type Target struct {
	Name string  `json:"name"`
	Cmp  Cmp     `json:"cmp"`
	Goal float64 `json:"goal"`
	// Value is the measured figure; Valid is false when a row it needs has
	// no successful sample (or was not selected).
	Value float64 `json:"value"`
	Valid bool    `json:"valid"`
	// Unit is "×" for ratios, or the unit of an absolute figure.
	Unit string `json:"unit"`
	// Inputs says what Value was computed from, with the figures.
	Inputs string `json:"inputs"`
	// PerRound is the same figure computed from the samples of each round
	// on its own (rounds where an input failed are left out). The verdict
	// uses Value, from the medians; PerRound shows how much of a miss or
	// a pass is drift of a noisy machine, which hits the samples of one
	// round alike.
	PerRound []float64 `json:"per_round,omitempty"`
}

// Pass reports whether a valid target is met.
func (t Target) Pass() bool {
	if !t.Valid {
		return false
	}
	if t.Cmp == AtMost {
		return t.Value <= t.Goal
	}
	return t.Value >= t.Goal
}

// Margin is how far Value is from Goal as a fraction of Goal, positive
// when the target is met with room to spare and negative by how much it
// is missed (-0.25: 25% short of a ≥ goal, or 25% over a ≤ goal).
func (t Target) Margin() float64 {
	if !t.Valid || t.Goal == 0 {
		return 0
	}
	if t.Cmp == AtMost {
		return (t.Goal - t.Value) / t.Goal
	}
	return (t.Value - t.Goal) / t.Goal
}

// Report is one run of a benchmark: what ran where, every sample, the
// medians and the targets. It is what NAME.json holds.
type Report struct {
	Name     string    `json:"name"` // "journal" or "pair"
	Title    string    `json:"title"`
	Date     time.Time `json:"date"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	// Setups lists how each configuration's daemons were run.
	Setups  map[string][]string `json:"setups,omitempty"`
	Rows    []*Row              `json:"rows"`
	Targets []Target            `json:"targets"`
	Notes   []string            `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc  int    `json:"nproc"`
	CPU    string `json:"cpu,omitempty"`
	Kernel string `json:"kernel"`
	Fio    string `json:"fio"`
	Go     string `json:"go"`
	// Disk is `df -PT DIR` of the work directory: the disk every file of
	// the run is on.
	Disk      string `json:"disk"`
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`
}

// Settings are the options that shape the numbers.
type Settings struct {
	Runtime    time.Duration `json:"runtime_ns"`
	RampTime   time.Duration `json:"ramp_time_ns"`
	Repeat     int           `json:"repeat"`
	Size       int64         `json:"size_bytes"`
	Dir        string        `json:"dir"`
	Pinning    *Pinning      `json:"pinning,omitempty"`
	WANLatency time.Duration `json:"wan_latency_one_way_ns,omitempty"`
}

// Row returns the row with key, or nil.
func (r *Report) Row(key string) *Row {
	for _, row := range r.Rows {
		if row.Key == key {
			return row
		}
	}
	return nil
}

// median returns the median of row key, or nil when it has none.
func (r *Report) median(key string) *Measure {
	if row := r.Row(key); row != nil {
		return row.Median
	}
	return nil
}

// perRound computes f for each round in which every row of keys has a
// successful sample, in round order.
func (r *Report) perRound(keys []string, f func(m map[string]Measure) (float64, bool)) []float64 {
	byRound := map[int]map[string]Measure{}
	maxRound := 0
	for _, k := range keys {
		row := r.Row(k)
		if row == nil {
			return nil
		}
		for _, s := range row.Samples {
			if s.Measure == nil {
				continue
			}
			if byRound[s.Round] == nil {
				byRound[s.Round] = map[string]Measure{}
			}
			byRound[s.Round][k] = *s.Measure
			maxRound = max(maxRound, s.Round)
		}
	}
	var out []float64
	for round := 0; round <= maxRound; round++ {
		ms := byRound[round]
		if len(ms) != len(keys) {
			continue
		}
		if v, ok := f(ms); ok {
			out = append(out, v)
		}
	}
	return out
}

// Met counts the valid targets met, and all targets.
func (r *Report) Met() (met, total int) { return benchutil.Met(r.Targets) }

// TargetTable renders the targets as a markdown table with ✓/✗.
func (r *Report) TargetTable() string {
	var b strings.Builder
	b.WriteString("| target | measured | goal | | from |\n|---|--:|--:|:-:|---|\n")
	for _, t := range r.Targets {
		if !t.Valid {
			fmt.Fprintf(&b, "| %s | – | %s %s | n/a | %s |\n", t.Name, t.Cmp, fmtValue(t.Goal, t.Unit), t.Inputs)
			continue
		}
		mark := "✓"
		if !t.Pass() {
			mark = fmt.Sprintf("✗ (%.0f%% off)", -100*t.Margin())
		}
		from := t.Inputs
		if len(t.PerRound) > 1 {
			var pr []string
			for _, v := range t.PerRound {
				pr = append(pr, fmtValue(v, t.Unit))
			}
			from += "; per round: " + strings.Join(pr, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s %s | %s | %s |\n", t.Name, fmtValue(t.Value, t.Unit), t.Cmp, fmtValue(t.Goal, t.Unit), mark, from)
	}
	return b.String()
}

// RowTable renders every row's medians as a markdown table.
func (r *Report) RowTable() string {
	var b strings.Builder
	b.WriteString("| row | rate | p50 | p99 | samples |\n|---|--:|--:|--:|--:|\n")
	for _, row := range r.Rows {
		if row.Median == nil {
			fmt.Fprintf(&b, "| %s | failed | | | 0/%d |\n", row.Name, len(row.Samples))
			continue
		}
		m := row.Median
		rate := bench.FormatCount(m.Rate) + " " + row.Unit
		if m.PerSync > 0 {
			rate += fmt.Sprintf(" (%.1f rec/sync)", m.PerSync)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d/%d |\n", row.Name, rate, bench.FormatLatency(m.P50), bench.FormatLatency(m.P99), row.OK, len(row.Samples))
	}
	return b.String()
}

// Table is what the CLI prints: rows, then targets.
func (r *Report) Table() string {
	return r.RowTable() + "\n" + r.TargetTable()
}

// Markdown renders NAME.md: what ran where, the tables, every sample.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	benchutil.Head{Title: r.Title, Date: r.Date, Command: r.Command, NProc: m.NProc, CPU: m.CPU,
		Rest:      fmt.Sprintf(", kernel %s, %s, %s", m.Kernel, m.Fio, m.Go),
		LoadStart: m.LoadStart, LoadEnd: m.LoadEnd}.Write(&b)
	s := r.Settings
	fmt.Fprintf(&b, "- Each sample: `--time_based --runtime %s`", s.Runtime)
	if s.RampTime > 0 {
		fmt.Fprintf(&b, " after `--ramp_time %s` (in-process rows: the same ramp and runtime)", s.RampTime)
	}
	fmt.Fprintf(&b, "; %d rounds, configurations interleaved within each round; the tables show per-column medians. Volumes of %s, written once in full before the first sample.\n", s.Repeat, bench.FormatBytes(s.Size))
	b.WriteString("- Before every sample: `sync`, then the page cache of the run's files dropped (POSIX_FADV_DONTNEED, what fio's default `invalidate=1` does for its own files), so no sample inherits the cache the fill or the sample before left.\n")
	if s.Pinning != nil {
		p := s.Pinning
		fmt.Fprintf(&b, "- Pinning (taskset -c): primary/standalone daemon %s, fio %s, secondary and WAN proxy %s.\n", p.Primary, p.Client, p.Secondary)
	} else {
		b.WriteString("- Pinning: none.\n")
	}
	if s.WANLatency > 0 {
		fmt.Fprintf(&b, "- WAN: userspace proxy (`twinblock proxy`) between primary and secondary adding %s each way (%s round trip).\n", s.WANLatency, 2*s.WANLatency)
	}
	fmt.Fprintf(&b, "- Disk (`df -PT %s`):\n\n```\n%s\n```\n\n", s.Dir, strings.TrimSpace(m.Disk))

	met, total := r.Met()
	benchutil.WriteResults(&b, met, total, r.TargetTable(), r.RowTable(), r.Notes)
	b.WriteString("\n## How each row was run\n\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "- **%s** (`%s`): %s\n", row.Name, row.Key, row.Command)
	}
	if len(r.Setups) > 0 {
		b.WriteString("\nDaemons:\n\n")
		for _, name := range setupOrder(r.Setups) {
			fmt.Fprintf(&b, "- %s:\n", name)
			for _, c := range r.Setups[name] {
				fmt.Fprintf(&b, "  - `%s`\n", c)
			}
		}
	}
	b.WriteString("\n## Every sample\n\n| row | round | rate | p50 | p99 | note |\n|---|--:|--:|--:|--:|---|\n")
	for _, row := range r.Rows {
		for _, smp := range row.Samples {
			if smp.Measure == nil {
				fmt.Fprintf(&b, "| %s | %d | failed | | | %s |\n", row.Key, smp.Round, strings.ReplaceAll(smp.Error, "|", "\\|"))
				continue
			}
			sm := smp.Measure
			note := ""
			if sm.PerSync > 0 {
				note = fmt.Sprintf("%.1f records/sync", sm.PerSync)
			}
			if smp.CPU != nil {
				if note != "" {
					note += "; "
				}
				note += smp.CPU.String() + "; "
			}
			if smp.Disk != nil {
				note += smp.Disk.String() + "; "
			}
			for _, st := range smp.Streams {
				note += fmt.Sprintf("%s: write %s + fdatasync %s; ", st.Name, bench.FormatLatency(st.WriteP50), bench.FormatLatency(st.SyncP50))
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", row.Key, smp.Round, bench.FormatCount(sm.Rate), bench.FormatLatency(sm.P50), bench.FormatLatency(sm.P99), strings.TrimSuffix(note, "; "))
		}
	}
	fmt.Fprintf(&b, "\nEvery sample is also in `%s.json`.\n", r.Name)
	return b.String()
}

func setupOrder(m map[string][]string) []string {
	var out []string
	for _, n := range setupNames {
		if _, ok := m[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// WriteFiles writes NAME.md and NAME.json into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	return benchutil.WriteFiles(dir, r.Name, r, r.Markdown())
}

// machineInfo gathers the facts the report states about the machine.
func machineInfo(ctx context.Context, fio, dir string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), Kernel: bench.KernelRelease(), CPU: bench.CPUModel(), LoadStart: bench.LoadAvg()}
	if out, err := runCommand(ctx, 10*time.Second, fio, "--version"); err == nil {
		m.Fio = strings.TrimSpace(string(out))
	} else {
		m.Fio = "fio (version unknown: " + err.Error() + ")"
	}
	if out, err := runCommand(ctx, 10*time.Second, "df", "-PT", dir); err == nil {
		m.Disk = string(out)
	} else {
		m.Disk = "unknown: " + err.Error()
	}
	return m
}

func fmtValue(v float64, unit string) string {
	if unit == "×" {
		return fmt.Sprintf("%.2f×", v)
	}
	return bench.FormatCount(v) + " " + unit
}
