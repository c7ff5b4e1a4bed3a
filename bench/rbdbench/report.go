package rbdbench

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
)

// Report is one run: every sample, the medians and the ratios.
type Report struct {
	Command  string                `json:"command"`
	Date     time.Time             `json:"date"`
	Machine  string                `json:"machine"`
	Size     int64                 `json:"size"`
	Runtime  string                `json:"runtime"`
	RampTime string                `json:"ramp_time"`
	Repeat   int                   `json:"repeat"`
	Pool     string                `json:"pool"`
	Dir      string                `json:"dir"`
	Commands map[string]string     `json:"commands"`
	Rows     map[string]*RowResult `json:"rows"`
	// QD1P50 is tb-qd1 p50 / raw-qd1 p50 (below 1: twinblock is faster);
	// QD32IOPS is tb-qd32 IOPS / raw-qd32 IOPS (above 1: faster). Both
	// from the medians, with the same ratio per round beside them.
	QD1P50          float64   `json:"ratio_qd1_p50"`
	QD32IOPS        float64   `json:"ratio_qd32_iops"`
	QD1P50Rounds    []float64 `json:"ratio_qd1_p50_rounds"`
	QD32IOPSRounds  []float64 `json:"ratio_qd32_iops_rounds"`
	LoadAvgAtFinish string    `json:"load_avg_at_finish"`
}

// RowResult is one row's samples and their median.
type RowResult struct {
	Key     string         `json:"key"`
	Title   string         `json:"title"`
	Samples []bench.Result `json:"samples"`
	Median  bench.Result   `json:"median"`
	// CPU is twinblock serve's CPU use during each sample (tb rows),
	// in CPUs (1.0: one core busy all the time), ramp included.
	CPU []float64 `json:"twinblock_cpus,omitempty"`
}

func machine() string {
	return fmt.Sprintf("%d CPUs (%s), kernel %s, %s; load average %s at start",
		runtime.NumCPU(), bench.CPUModel(), bench.KernelRelease(), runtime.Version(), bench.LoadAvg())
}

func (r *Report) finish(cpu map[string][]time.Duration, sample time.Duration) {
	for k, row := range r.Rows {
		row.Median = bench.MedianResult(row.Samples)
		for _, c := range cpu[k] {
			row.CPU = append(row.CPU, c.Seconds()/sample.Seconds())
		}
	}
	raw1, tb1 := r.Rows[RowRawQD1], r.Rows[RowTBQD1]
	raw32, tb32 := r.Rows[RowRawQD32], r.Rows[RowTBQD32]
	if raw1.Median.P50 > 0 {
		r.QD1P50 = float64(tb1.Median.P50) / float64(raw1.Median.P50)
	}
	if raw32.Median.IOPS > 0 {
		r.QD32IOPS = tb32.Median.IOPS / raw32.Median.IOPS
	}
	for i := range raw1.Samples {
		if i < len(tb1.Samples) && raw1.Samples[i].P50 > 0 {
			r.QD1P50Rounds = append(r.QD1P50Rounds, float64(tb1.Samples[i].P50)/float64(raw1.Samples[i].P50))
		}
		if i < len(tb32.Samples) && raw32.Samples[i].IOPS > 0 {
			r.QD32IOPSRounds = append(r.QD32IOPSRounds, tb32.Samples[i].IOPS/raw32.Samples[i].IOPS)
		}
	}
	r.LoadAvgAtFinish = bench.LoadAvg()
}

func ratios(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f×", x)
	}
	return strings.Join(s, ", ")
}

// Table is the plain-text summary printed at the end of a run.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %10s %10s %10s\n", "row", "IOPS", "p50", "p99")
	for _, k := range Rows() {
		m := r.Rows[k].Median
		fmt.Fprintf(&b, "%-10s %10.0f %10s %10s\n", k, m.IOPS, bench.FormatLatency(m.P50), bench.FormatLatency(m.P99))
	}
	fmt.Fprintf(&b, "\nQD1 p50  twinblock / raw rbd: %.2f× (per round: %s)\n", r.QD1P50, ratios(r.QD1P50Rounds))
	fmt.Fprintf(&b, "QD32 IOPS twinblock / raw rbd: %.2f× (per round: %s)\n", r.QD32IOPS, ratios(r.QD32IOPSRounds))
	return b.String()
}

// Markdown is the report docs/bench/rbd.md holds.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("# RBD benchmark: journal-fronted twinblock volume against fio's rbd engine\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", r.Date.Format(time.RFC3339))
	fmt.Fprintf(&b, "- Command: `%s`\n", r.Command)
	fmt.Fprintf(&b, "- Machine: %s; %s at end\n", r.Machine, r.LoadAvgAtFinish)
	fmt.Fprintf(&b, "- Each sample: 4 KiB random writes, `--time_based --runtime %s` after `--ramp_time %s`; %d rounds, rows interleaved within each round; tables show per-row medians. Two images of %d MiB in pool `%s` of the same cluster, each written once in full before the first sample. Both clients run with `rbd_cache=false`.\n",
		r.Runtime, r.RampTime, r.Repeat, r.Size>>20, r.Pool)
	fmt.Fprintf(&b, "- twinblock's journal is in the work directory (`%s`), on that disk.\n\n", r.Dir)
	b.WriteString("## Ratios\n\n| ratio | median | per round |\n|---|--:|---|\n")
	fmt.Fprintf(&b, "| QD1 p50 latency, twinblock / raw rbd (below 1: twinblock faster) | %.2f× | %s |\n", r.QD1P50, ratios(r.QD1P50Rounds))
	fmt.Fprintf(&b, "| QD32 IOPS, twinblock / raw rbd (above 1: twinblock faster) | %.2f× | %s |\n\n", r.QD32IOPS, ratios(r.QD32IOPSRounds))
	b.WriteString("## Medians\n\n| row | IOPS | p50 | p99 | samples |\n|---|--:|--:|--:|--:|\n")
	for _, k := range Rows() {
		row := r.Rows[k]
		m := row.Median
		fmt.Fprintf(&b, "| %s (`%s`) | %s | %s | %s | %d |\n", row.Title, k, bench.FormatCount(m.IOPS),
			bench.FormatLatency(m.P50), bench.FormatLatency(m.P99), len(row.Samples))
	}
	b.WriteString("\ntwinblock serve's CPU use during the tb samples (user+system, in CPUs, ramp included): ")
	for i, k := range []string{RowTBQD1, RowTBQD32} {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "`%s` %s", k, cpus(r.Rows[k].CPU))
	}
	b.WriteString(".\n")
	b.WriteString(notes)
	b.WriteString("\n## Every sample\n\n| row | round | IOPS | p50 | p99 |\n|---|--:|--:|--:|--:|\n")
	for _, k := range Rows() {
		for i, s := range r.Rows[k].Samples {
			fmt.Fprintf(&b, "| `%s` | %d | %s | %s | %s |\n", k, i+1, bench.FormatCount(s.IOPS), bench.FormatLatency(s.P50), bench.FormatLatency(s.P99))
		}
	}
	b.WriteString("\n## How each row was run\n\n")
	for _, k := range Rows() {
		fmt.Fprintf(&b, "- `%s`: `%s`\n", k, r.Commands[k])
	}
	return b.String()
}

func cpus(xs []float64) string {
	if len(xs) == 0 {
		return "not measured"
	}
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, ", ")
}

// notes explain the shape of the result (the write path), for the report.
const notes = `
## Notes

- For rbd volumes twinblock acknowledges a write once the journal holds it durably (and
  the peer, in a pair); the RBD write follows in the background, in order, and a read
  waits for the unapplied writes it overlaps (docs/architecture.md, "Asynchronous
  apply"). So its QD1 latency is the journal's fdatasync plus NBD and the engine, not
  the RBD round trip; its sustained rate is what the background apply gets into RBD,
  with a bounded backlog (writes wait beyond it).
- At QD32 the raw row is one fio process driving librbd's asynchronous API; the tb rows
  add fio's NBD client, the twinblock daemon and the journal's fdatasyncs, all on the
  same CPUs as the single OSD and monitor of the throw-away cluster. Load from other
  work on the machine moves every row; the rounds interleave the rows so that each
  ratio compares samples taken under the same conditions.
`

// WriteFiles writes DIR/rbd.md and DIR/rbd.json.
func (r *Report) WriteFiles(dir string) error {
	return benchutil.WriteFiles(dir, "rbd", r, r.Markdown())
}
