package rbdbench

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench"
)

func TestProcCPU(t *testing.T) {
	d, err := procCPU(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("procCPU(self) = %v, %v", d, err)
	}
	got, err := parseStatCPU("42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0")
	if err != nil || got != 3*time.Second {
		t.Fatalf("parseStatCPU = %v, %v; want 3s (300 ticks)", got, err)
	}
	for _, bad := range []string{"", "42 no-paren", "42 (x) S 1 2", "42 (x) S 1 2 3 4 5 6 7 8 9 10 -1 0", "42 (x) S 1 2 3 4 5 6 7 8 9 10 99999999999999999 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) accepted", bad)
		}
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add("42 (twinblock) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0")
	f.Add("1 ((() S")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseStatCPU(s)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU time %v from %q", d, s)
		}
	})
}

func TestReportRatiosAndMarkdown(t *testing.T) {
	r := &Report{Command: "twinblock bench rbd", Repeat: 2, Size: 256 << 20, Pool: "rbd", Rows: map[string]*RowResult{},
		Commands: map[string]string{}}
	res := func(iops float64, p50 time.Duration) bench.Result {
		return bench.Result{IOPS: iops, P50: p50, P99: 2 * p50, IOs: 1}
	}
	r.Rows[RowRawQD1] = &RowResult{Key: RowRawQD1, Samples: []bench.Result{res(3000, 300*time.Microsecond), res(2800, 320*time.Microsecond)}}
	r.Rows[RowTBQD1] = &RowResult{Key: RowTBQD1, Samples: []bench.Result{res(2000, 450*time.Microsecond), res(2100, 480*time.Microsecond)}}
	r.Rows[RowRawQD32] = &RowResult{Key: RowRawQD32, Samples: []bench.Result{res(8000, 4*time.Millisecond), res(6000, 5*time.Millisecond)}}
	r.Rows[RowTBQD32] = &RowResult{Key: RowTBQD32, Samples: []bench.Result{res(4000, 8*time.Millisecond), res(3000, 9*time.Millisecond)}}
	r.finish(map[string][]time.Duration{RowTBQD32: {6 * time.Second, 3 * time.Second}}, 12*time.Second)
	// Medians of two: the mean. QD1 p50 465/310 = 1.5; QD32 3500/7000 = 0.5.
	if r.QD1P50 < 1.49 || r.QD1P50 > 1.51 || r.QD32IOPS < 0.49 || r.QD32IOPS > 0.51 {
		t.Fatalf("ratios %.3f %.3f", r.QD1P50, r.QD32IOPS)
	}
	if len(r.QD32IOPSRounds) != 2 || r.QD32IOPSRounds[0] != 0.5 {
		t.Fatalf("per round: %v", r.QD32IOPSRounds)
	}
	md := r.Markdown()
	for _, want := range []string{"| 1.50× | 1.50×, 1.50× |", "`tb-qd32` 0.50, 0.25", "## Notes", "`raw-qd1`"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
