package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Report is one harness run: settings, machine, every sample and the
// median of each cell. It is what nbd.json holds.
type Report struct {
	Date     time.Time    `json:"date"`
	Command  string       `json:"command"`
	Machine  Machine      `json:"machine"`
	Settings Settings     `json:"settings"`
	Servers  []ServerInfo `json:"servers"`
	Notes    []string     `json:"notes,omitempty"`
	Cells    []*Cell      `json:"cells"`
}

// Machine describes where the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu,omitempty"`
	Kernel    string `json:"kernel"`
	Fio       string `json:"fio"`
	Nbdkit    string `json:"nbdkit,omitempty"`
	Go        string `json:"go"`
	GoNBD     string `json:"go_nbd,omitempty"`
	MemTotalB int64  `json:"mem_total_bytes,omitempty"`
	// LoadStart and LoadEnd are /proc/loadavg's 1-minute figure when the run
	// began and ended: other work on the machine shows up here first.
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`
}

// Settings are the harness options that shape the numbers.
type Settings struct {
	Runtime    time.Duration `json:"runtime_ns"`
	RampTime   time.Duration `json:"ramp_time_ns"`
	Repeat     int           `json:"repeat"`
	Size       int64         `json:"size_bytes"`
	Servers    []string      `json:"servers"`
	Workloads  []string      `json:"workloads"`
	Transports []string      `json:"transports"`
}

// ServerInfo says how a server under test was run.
type ServerInfo struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Commands    []string `json:"commands,omitempty"`
}

// Cell is one (workload, transport, server) combination.
type Cell struct {
	Workload  string    `json:"workload"`
	Transport Transport `json:"transport"`
	Server    string    `json:"server"`
	// Median is the per-field median of the successful samples; nil when
	// none succeeded.
	Median  *Result  `json:"median,omitempty"`
	OK      int      `json:"ok_samples"`
	Samples []Sample `json:"samples"`
}

// Sample is one fio run of a cell.
type Sample struct {
	Round  int       `json:"round"`
	Start  time.Time `json:"start"`
	Result *Result   `json:"result,omitempty"`
	Error  string    `json:"error,omitempty"`
}

func (c *Cell) computeMedian() {
	c.OK, c.Median = MedianOf(c.Samples, func(s Sample) *Result { return s.Result }, MedianResult)
}

// Row is one line of the comparison table.
type Row struct {
	Cell *Cell
	// IOPSRatio and P50Ratio compare the cell's medians with the baseline
	// (nbdkit) cell of the same workload and transport; 0 when there is
	// nothing to compare. For IOPS higher is better, for p50 lower is.
	IOPSRatio float64
	P50Ratio  float64
}

// Target is the IOPS ratio against nbdkit that twinblock must reach on
// every row.
const Target = 0.9

// Rows pairs every cell with its baseline ratios, in report order.
func (r *Report) Rows() []Row {
	base := map[[2]string]*Result{}
	for _, c := range r.Cells {
		if c.Server == Baseline && c.Median != nil {
			base[[2]string{c.Workload, string(c.Transport)}] = c.Median
		}
	}
	rows := make([]Row, 0, len(r.Cells))
	for _, c := range r.Cells {
		row := Row{Cell: c}
		b := base[[2]string{c.Workload, string(c.Transport)}]
		if c.Server != Baseline && b != nil && c.Median != nil {
			if b.IOPS > 0 {
				row.IOPSRatio = c.Median.IOPS / b.IOPS
			}
			if b.P50 > 0 {
				row.P50Ratio = float64(c.Median.P50) / float64(b.P50)
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// BelowTarget lists the twinblock rows under Target× nbdkit IOPS.
func (r *Report) BelowTarget() []Row {
	var out []Row
	for _, row := range r.Rows() {
		if row.Cell.Server == ServerTwinblock && row.IOPSRatio > 0 && row.IOPSRatio < Target {
			out = append(out, row)
		}
	}
	return out
}

// Table renders the comparison as a markdown table.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| workload | transport | server | IOPS | MB/s | p50 | p99 | IOPS ×nbdkit | p50 ×nbdkit |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range r.Rows() {
		c := row.Cell
		if c.Median == nil {
			fmt.Fprintf(&b, "| %s | %s | %s | failed | | | | | |\n", c.Workload, c.Transport, c.Server)
			continue
		}
		m := c.Median
		ratio, p50 := "", ""
		if row.IOPSRatio > 0 {
			ratio = fmt.Sprintf("%.2f", row.IOPSRatio)
			if c.Server == ServerTwinblock && row.IOPSRatio < Target {
				ratio = "**" + ratio + "** ✗"
			}
		}
		if row.P50Ratio > 0 {
			p50 = fmt.Sprintf("%.2f", row.P50Ratio)
		}
		n := ""
		if c.OK < len(c.Samples) {
			n = fmt.Sprintf(" (%d/%d ok)", c.OK, len(c.Samples))
		}
		fmt.Fprintf(&b, "| %s | %s | %s%s | %s | %.1f | %s | %s | %s | %s |\n",
			c.Workload, c.Transport, c.Server, n, FormatCount(m.IOPS), m.MBps, FormatLatency(m.P50), FormatLatency(m.P99), ratio, p50)
	}
	return b.String()
}

// Markdown renders nbd.md: what ran where, the table, and the verdict.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("# NBD benchmark: twinblock against nbdkit and go-nbd\n\n")
	fmt.Fprintf(&b, "- Date: %s\n", r.Date.Format(time.RFC3339))
	if r.Command != "" {
		fmt.Fprintf(&b, "- Command: `%s`\n", r.Command)
	}
	m := r.Machine
	fmt.Fprintf(&b, "- Machine: %d CPUs", m.NProc)
	if m.CPU != "" {
		fmt.Fprintf(&b, " (%s)", m.CPU)
	}
	if m.MemTotalB > 0 {
		fmt.Fprintf(&b, ", %s RAM", fmtBytes(m.MemTotalB))
	}
	fmt.Fprintf(&b, ", kernel %s", m.Kernel)
	if m.LoadStart != "" {
		fmt.Fprintf(&b, "; load average %s at start, %s at end", m.LoadStart, m.LoadEnd)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- Tools: %s", m.Fio)
	if m.Nbdkit != "" {
		fmt.Fprintf(&b, ", %s", m.Nbdkit)
	}
	fmt.Fprintf(&b, ", %s", m.Go)
	if m.GoNBD != "" {
		fmt.Fprintf(&b, ", go-nbd %s", m.GoNBD)
	}
	b.WriteString("\n")
	s := r.Settings
	fmt.Fprintf(&b, "- Each sample: fio `--ioengine=nbd`, one job, `--time_based --runtime %s`", s.Runtime)
	if s.RampTime > 0 {
		fmt.Fprintf(&b, " after `--ramp_time %s`", s.RampTime)
	}
	fmt.Fprintf(&b, ", `--norandommap`, region %s from offset 0. Each cell ran %d times; rounds are the outer loop and servers the inner one (%s, %s, …), so drift of the machine hits every server alike. The table shows per-column medians.\n",
		fmtBytes(s.Size), s.Repeat, strings.Join(s.Servers, ", "), strings.Join(s.Servers, ", "))
	b.WriteString("- p50/p99 are fio completion latencies (clat). Ratio columns compare with nbdkit in the same run: IOPS ×nbdkit higher is better, p50 ×nbdkit lower is better.\n\n")

	b.WriteString(r.Table())
	b.WriteString("\n")

	if slices.Contains(s.Servers, ServerTwinblock) && slices.Contains(s.Servers, Baseline) {
		below := r.BelowTarget()
		rows := 0
		for _, row := range r.Rows() {
			if row.Cell.Server == ServerTwinblock && row.IOPSRatio > 0 {
				rows++
			}
		}
		fmt.Fprintf(&b, "**Target: twinblock ≥ %.1f× nbdkit IOPS on every row.** ", Target)
		if len(below) == 0 && rows > 0 {
			fmt.Fprintf(&b, "Met on all %d rows.\n\n", rows)
		} else {
			fmt.Fprintf(&b, "Met on %d of %d rows; below on:\n\n", rows-len(below), rows)
			for _, row := range below {
				fmt.Fprintf(&b, "- %s over %s: %.2f× (p50 %.2f×)\n", row.Cell.Workload, row.Cell.Transport, row.IOPSRatio, row.P50Ratio)
			}
			b.WriteString("\n")
		}
	}
	if r.hasPlot() {
		b.WriteString("![IOPS relative to nbdkit](nbd.svg)\n\n")
	}

	b.WriteString("## Servers\n\n")
	for _, si := range r.Servers {
		fmt.Fprintf(&b, "- **%s**: %s\n", si.Name, si.Description)
		for _, c := range si.Commands {
			fmt.Fprintf(&b, "  - `%s`\n", c)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	var fails []string
	for _, c := range r.Cells {
		for _, smp := range c.Samples {
			if smp.Error != "" {
				fails = append(fails, fmt.Sprintf("- round %d %s %s %s: %s", smp.Round, c.Workload, c.Transport, c.Server, smp.Error))
			}
		}
	}
	if len(fails) > 0 {
		b.WriteString("\n## Failed samples\n\n")
		b.WriteString(strings.Join(fails, "\n"))
		b.WriteString("\n")
	}
	b.WriteString("\nEvery sample is in `nbd.json`.\n")
	return b.String()
}

// WriteFiles writes nbd.md, nbd.json and (when there is a baseline to
// compare with) nbd.svg into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := WriteJSON(filepath.Join(dir, "nbd.json"), r); err != nil {
		return err
	}
	svg := filepath.Join(dir, "nbd.svg")
	if r.hasPlot() {
		if err := os.WriteFile(svg, []byte(r.SVG()), 0o644); err != nil {
			return err
		}
	} else {
		// A plot from an earlier run would not describe this one.
		os.Remove(svg)
	}
	return os.WriteFile(filepath.Join(dir, "nbd.md"), []byte(r.Markdown()), 0o644)
}

func machineInfo(ctx context.Context, o Options) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), Kernel: KernelRelease(), CPU: CPUModel(), LoadStart: LoadAvg()}
	if kb := ProcField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		if _, err := fmt.Sscanf(kb, "%d kB", &n); err == nil {
			m.MemTotalB = n << 10
		}
	}
	if v, err := fioVersion(ctx, o.Fio); err == nil {
		m.Fio = v
	} else {
		m.Fio = "fio (version unknown: " + err.Error() + ")"
	}
	if slices.Contains(o.Servers, ServerNbdkit) {
		if v, err := toolVersion(ctx, o.Nbdkit, "--version"); err == nil {
			m.Nbdkit = v
		}
	}
	if slices.Contains(o.Servers, ServerGoNBD) {
		m.GoNBD = goNBDVersion()
	}
	return m
}

// WriteJSON writes v to path as indented JSON ending in a newline: the
// form of every report's .json file.
func WriteJSON(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}

// KernelRelease is the running kernel's release ("6.1.0-18-amd64"), ""
// when unknown.
func KernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// CPUModel is /proc/cpuinfo's first "model name", "" when unknown.
func CPUModel() string { return ProcField("/proc/cpuinfo", "model name") }

// LoadAvg is the 1-minute load average, "" when unknown.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// ProcField returns the value of the first "key: value" line of a /proc file.
func ProcField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// goNBDVersion is the go-nbd module version linked into this binary.
func goNBDVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/pojntfx/go-nbd" {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}

// FormatLatency writes a latency for a table: "18 µs", "2.50 ms",
// "20.0 ms", and "–" for none.
func FormatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// FormatCount writes f rounded with thousands separators: 54,321.
func FormatCount(f float64) string {
	n := int64(f + 0.5)
	s := fmt.Sprint(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// FormatBytes writes a size in whole GiB or MiB when it is a multiple of
// one, in bytes otherwise: "1 GiB", "64 MiB", "1052672 bytes".
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// fmtBytes is FormatBytes, except that a size of a GiB or more that is
// not a whole number of MiB (MemTotal) reads as "15.6 GiB".
func fmtBytes(n int64) string {
	if n >= 1<<30 && n%(1<<20) != 0 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return FormatBytes(n)
}
