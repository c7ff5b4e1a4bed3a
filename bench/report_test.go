package bench

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{100, 1, 1}, 1},
	}
	for _, c := range cases {
		in := slices.Clone(c.in)
		if got := Median(in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("Median modified its input: %v", in)
		}
	}
}

// Each field's median is taken on its own: an outlier sample in one
// column does not drag the others.
func TestMedianResult(t *testing.T) {
	rs := []Result{
		{IOPS: 100, MBps: 1, P50: 30, P99: 900, IOs: 10},
		{IOPS: 300, MBps: 3, P50: 10, P99: 100, IOs: 30},
		{IOPS: 200, MBps: 2, P50: 20, P99: 5000, IOs: 20},
	}
	got := MedianResult(rs)
	want := Result{IOPS: 200, MBps: 2, P50: 20, P99: 900, IOs: 20}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func res(iops float64, p50 time.Duration) *Result {
	return &Result{IOPS: iops, MBps: iops * 4096 / 1e6, P50: p50, P99: 4 * p50, IOs: int64(iops)}
}

func cell(w string, t Transport, s string, rs ...*Result) *Cell {
	c := &Cell{Workload: w, Transport: t, Server: s}
	for i, r := range rs {
		smp := Sample{Round: i + 1, Result: r}
		if r == nil {
			smp.Error = "bench: server exited: boom"
		}
		c.Samples = append(c.Samples, smp)
	}
	c.computeMedian()
	return c
}

func sampleReport() *Report {
	us := time.Microsecond
	return &Report{
		Date:    time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC),
		Command: "twinblock bench nbd --out docs/bench",
		Machine: Machine{NProc: 2, Kernel: "6.1.0", LoadStart: "0.50", LoadEnd: "3.10", Fio: "fio-3.33", Nbdkit: "nbdkit 1.32.5", Go: "go1.26", GoNBD: "v0.3.2"},
		Settings: Settings{Runtime: 10 * time.Second, RampTime: 2 * time.Second, Repeat: 3, Size: 1 << 30,
			Servers: ServerNames, Workloads: []string{"4k-randwrite-qd1", "4k-randwrite-qd32"}, Transports: []string{"tcp"}},
		Servers: []ServerInfo{{Name: "nbdkit", Description: "memory", Commands: []string{"nbdkit memory size=1073741824"}}},
		Cells: []*Cell{
			cell("4k-randwrite-qd1", TCP, ServerTwinblock, res(19000, 20*us), res(21000, 18*us), res(20000, 19*us)),
			cell("4k-randwrite-qd1", TCP, ServerNbdkit, res(20000, 20*us), res(20000, 20*us), res(20000, 20*us)),
			cell("4k-randwrite-qd1", TCP, ServerGoNBD, nil, nil, nil),
			cell("4k-randwrite-qd32", TCP, ServerTwinblock, res(40000, 500*us), nil, res(40000, 500*us)),
			cell("4k-randwrite-qd32", TCP, ServerNbdkit, res(50000, 400*us), res(50000, 400*us), res(50000, 400*us)),
			cell("4k-randwrite-qd32", TCP, ServerGoNBD, res(45000, 450*us), res(45000, 450*us), res(45000, 450*us)),
		},
	}
}

func TestReportRowsAndVerdict(t *testing.T) {
	r := sampleReport()
	rows := r.Rows()
	if len(rows) != 6 {
		t.Fatalf("%d rows", len(rows))
	}
	if got := rows[0].IOPSRatio; got != 1.0 || rows[0].P50Ratio != 19.0/20 {
		t.Errorf("qd1 twinblock ratios = %v, %v", got, rows[0].P50Ratio)
	}
	if rows[1].IOPSRatio != 0 {
		t.Errorf("the baseline row has a ratio: %v", rows[1].IOPSRatio)
	}
	if rows[2].Cell.Median != nil || rows[2].IOPSRatio != 0 {
		t.Errorf("a cell with only failed samples has a median: %+v", rows[2])
	}
	if rows[3].IOPSRatio != 0.8 || rows[3].Cell.OK != 2 {
		t.Errorf("qd32 twinblock: ratio %v ok %d", rows[3].IOPSRatio, rows[3].Cell.OK)
	}
	below := r.BelowTarget()
	if len(below) != 1 || below[0].Cell.Workload != "4k-randwrite-qd32" {
		t.Fatalf("below target: %+v", below)
	}

	table := r.Table()
	for _, want := range []string{
		"| 4k-randwrite-qd1 | tcp | twinblock | 20,000 | 81.9 | 19 µs | 76 µs | 1.00 | 0.95 |",
		"| 4k-randwrite-qd1 | tcp | gonbd | failed |",
		"| 4k-randwrite-qd32 | tcp | twinblock (2/3 ok) | 40,000 | 163.8 | 500 µs | 2.00 ms | **0.80** ✗ | 1.25 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	md := r.Markdown()
	for _, want := range []string{"`twinblock bench nbd --out docs/bench`", "2 CPUs", "kernel 6.1.0; load average 0.50 at start, 3.10 at end", "fio-3.33", "nbdkit 1.32.5",
		"Met on 1 of 2 rows", "4k-randwrite-qd32 over tcp: 0.80×", "## Failed samples", "round 2 4k-randwrite-qd32 tcp twinblock",
		"`nbdkit memory size=1073741824`", "![IOPS relative to nbdkit](nbd.svg)"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	svg := sampleReport().SVG()
	d := xml.NewDecoder(strings.NewReader(svg))
	rects := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// Background + 3 bars (twinblock qd1, qd32, gonbd qd32) + 2 legend keys.
	if rects != 6 {
		t.Errorf("%d rects, want 6", rects)
	}
	if !strings.Contains(svg, "twinblock 4k-randwrite-qd32 tcp: 0.80×") {
		t.Errorf("bar title missing:\n%s", svg)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := sampleReport()
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(dir, "nbd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Cells) != 6 || len(back.Cells[3].Samples) != 3 || back.Cells[3].Samples[1].Error == "" ||
		back.Cells[0].Median.P50 != 19*time.Microsecond || back.Settings.Runtime != 10*time.Second {
		t.Fatalf("JSON round trip lost data: %s", js)
	}
	for _, f := range []string{"nbd.md", "nbd.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// A run without the baseline has nothing to plot; a stale plot goes.
	r.Cells = slices.DeleteFunc(r.Cells, func(c *Cell) bool { return c.Server == Baseline })
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nbd.svg")); !os.IsNotExist(err) {
		t.Errorf("stale nbd.svg kept: %v", err)
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 54321.6: "54,322", 1234567: "1,234,567"} {
		if got := FormatCount(in); got != want {
			t.Errorf("FormatCount(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[time.Duration]string{0: "–", 18 * time.Microsecond: "18 µs", 2500 * time.Microsecond: "2.50 ms", 20 * time.Millisecond: "20.0 ms"} {
		if got := FormatLatency(in); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", in, got, want)
		}
	}
}
