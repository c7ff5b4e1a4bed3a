package bench

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The samples in testdata are real fio 3.33 output (Debian 12) against
// nbdkit's memory plugin.
func TestParseFioCaptured(t *testing.T) {
	cases := []struct {
		file string
		want Result
	}{
		{"fio-randwrite-qd32.json", Result{IOPS: 17273.635153, MBps: 70.837347, P50: 978944, P99: 20578304, IOs: 25945}},
		{"fio-randread-qd32-unix.json", Result{IOPS: 140920.079920, MBps: 577.208647, P50: 187392, P99: 733184, IOs: 141061}},
	}
	for _, c := range cases {
		got, err := ParseFio(readTestdata(t, c.file))
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if math.Abs(got.IOPS-c.want.IOPS) > 1e-6 || math.Abs(got.MBps-c.want.MBps) > 1e-6 ||
			got.P50 != c.want.P50 || got.P99 != c.want.P99 || got.IOs != c.want.IOs {
			t.Errorf("%s: got %+v, want %+v", c.file, got, c.want)
		}
	}
}

// The fuzz seeds must stay equivalent to the captured documents.
func TestCompactSampleParsesAlike(t *testing.T) {
	for _, name := range []string{"fio-randwrite-qd32.json", "fio-randread-qd32-unix.json"} {
		full, err1 := ParseFio(readTestdata(t, name))
		small, err2 := ParseFio(compactSample(t, name))
		if err1 != nil || err2 != nil || full != small {
			t.Errorf("%s: %+v %v vs %+v %v", name, full, err1, small, err2)
		}
	}
}

// fio writes its connection error before the JSON document and reports a
// job that did nothing; that must be an error, not a zero-IOPS sample.
func TestParseFioNoIO(t *testing.T) {
	data := readTestdata(t, "fio-no-io.json")
	if !strings.HasPrefix(string(data), "fio: ") {
		t.Fatal("testdata should start with fio's error line")
	}
	_, err := ParseFio(data)
	if !errors.Is(err, ErrFioOutput) || !strings.Contains(err.Error(), "no I/O") {
		t.Fatalf("err = %v, want ErrFioOutput about no I/O", err)
	}
	if pre := fioPreamble(data); !strings.Contains(pre, "Connection refused") {
		t.Errorf("preamble %q lacks fio's message", pre)
	}
}

func TestParseFioRejects(t *testing.T) {
	dir := `{"iops": 10, "bw_bytes": 4096, "total_ios": 5, "clat_ns": {"N": 5, "percentile": %s}}`
	job := func(err int, pct string) string {
		return `{"jobs": [{"jobname": "j", "error": ` + string(rune('0'+err)) + `, "write": ` +
			strings.Replace(dir, "%s", pct, 1) + `}]}`
	}
	good := job(0, `{"50.000000": 1000, "99.000000": 2000}`)
	if r, err := ParseFio([]byte(good)); err != nil || r.P50 != 1000 || r.P99 != 2000 || r.IOPS != 10 {
		t.Fatalf("control case: %+v, %v", r, err)
	}
	bad := map[string]string{
		"empty":           "",
		"not json":        "fio: something went wrong\n",
		"truncated":       good[:len(good)/2],
		"no jobs":         `{"jobs": []}`,
		"job error":       job(5, `{"50.000000": 1000, "99.000000": 2000}`),
		"no percentiles":  job(0, `{}`),
		"no p99":          job(0, `{"50.000000": 1000}`),
		"negative p50":    job(0, `{"50.000000": -1, "99.000000": 2000}`),
		"huge p99":        job(0, `{"50.000000": 1, "99.000000": 1e300}`),
		"negative iops":   `{"jobs": [{"jobname": "j", "write": {"iops": -1, "total_ios": 1}}]}`,
		"negative ios":    `{"jobs": [{"jobname": "j", "write": {"iops": 1, "total_ios": -1}}]}`,
		"wrong type":      `{"jobs": [{"jobname": "j", "write": {"iops": "fast"}}]}`,
		"nothing done":    `{"jobs": [{"jobname": "j"}]}`,
		"jobs not a list": `{"jobs": {}}`,
	}
	for name, in := range bad {
		if r, err := ParseFio([]byte(in)); !errors.Is(err, ErrFioOutput) {
			t.Errorf("%s: got %+v, %v; want ErrFioOutput", name, r, err)
		}
	}
}

// With reads and writes in one job, throughput adds up and the latency is
// that of the direction that did most of the I/O.
func TestParseFioMixed(t *testing.T) {
	in := `{"jobs": [{"jobname": "j",
		"read":  {"iops": 100, "bw_bytes": 1e6, "total_ios": 100, "clat_ns": {"percentile": {"50.000000": 7, "99.000000": 8}}},
		"write": {"iops": 300, "bw_bytes": 3e6, "total_ios": 300, "clat_ns": {"percentile": {"50.000000": 70, "99.000000": 80}}}}]}`
	r, err := ParseFio([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if r.IOPS != 400 || r.MBps != 4 || r.IOs != 400 || r.P50 != 70 || r.P99 != 80 {
		t.Fatalf("got %+v", r)
	}
}

// compactSample keeps only what ParseFio reads from a captured fio
// document. Seeds of a few hundred bytes let the fuzzer spend its time
// mutating rather than minimizing 6 KB documents.
func compactSample(t testing.TB, name string) []byte {
	t.Helper()
	data := readTestdata(t, name)
	pre := fioPreamble(data)
	var doc struct {
		Jobs []map[string]json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(data[len(pre):], &doc); err != nil {
		t.Fatal(err)
	}
	for _, j := range doc.Jobs {
		for k := range j {
			if !slices.Contains([]string{"jobname", "error", "read", "write", "trim"}, k) {
				delete(j, k)
			}
		}
		for _, d := range []string{"read", "write", "trim"} {
			var dir map[string]json.RawMessage
			if err := json.Unmarshal(j[d], &dir); err != nil {
				t.Fatal(err)
			}
			for k := range dir {
				if !slices.Contains([]string{"iops", "bw_bytes", "total_ios", "clat_ns"}, k) {
					delete(dir, k)
				}
			}
			j[d], _ = json.Marshal(dir)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(pre), out...)
}

func FuzzParseFio(f *testing.F) {
	for _, name := range []string{"fio-randwrite-qd32.json", "fio-randread-qd32-unix.json", "fio-no-io.json"} {
		f.Add(compactSample(f, name))
	}
	f.Add([]byte(`{"jobs": [{"write": {"iops": 1, "total_ios": 1, "clat_ns": {"percentile": {"50": 1, "99": 2}}}}]}`))
	f.Add([]byte(`{"jobs": [{"read": {"iops": 1e308, "bw_bytes": 1e308, "total_ios": 9223372036854775807}}]}`))
	f.Add([]byte("fio: x\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseFio(data)
		if err != nil {
			if !errors.Is(err, ErrFioOutput) {
				t.Fatalf("error %v does not wrap ErrFioOutput", err)
			}
			return
		}
		if r.IOs <= 0 || !FiniteNonNeg(r.IOPS) || r.MBps < 0 || math.IsNaN(r.MBps) || r.P50 < 0 || r.P99 < 0 {
			t.Fatalf("accepted nonsense: %+v", r)
		}
	})
}

func TestFioJobArgs(t *testing.T) {
	w, err := WorkloadByName("4k-randread-qd32")
	if err != nil {
		t.Fatal(err)
	}
	j := FioJob{URI: "nbd://127.0.0.1:1/vol0", Workload: w, Size: 1 << 30, Runtime: 10 * time.Second, RampTime: 1500 * time.Millisecond}
	args := j.Args("/tmp/out.json")
	for _, want := range []string{"--ioengine=nbd", "--uri=nbd://127.0.0.1:1/vol0", "--rw=randread", "--bs=4096",
		"--iodepth=32", "--size=1073741824", "--time_based", "--runtime=10000ms", "--ramp_time=1500ms",
		"--percentile_list=50:99", "--output-format=json", "--output=/tmp/out.json"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	// A pass over the region (prefill) is not time based.
	j.Runtime, j.RampTime = 0, 0
	for _, a := range j.Args("x") {
		if strings.HasPrefix(a, "--time_based") || strings.HasPrefix(a, "--runtime") || strings.HasPrefix(a, "--ramp_time") {
			t.Errorf("one-pass job has %q", a)
		}
	}
	if _, err := WorkloadByName("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown workload: %v", err)
	}
}

// A fio that fails must give ErrFioFailed with its message, and one that
// hangs must be stopped by the job timeout.
func TestFioJobRunFailures(t *testing.T) {
	dir := t.TempDir()
	failing := writeScript(t, dir, "fio-fail", "echo 'fio: cannot connect' >&2; exit 1")
	j := FioJob{Fio: failing, URI: "nbd://x/", Workload: Workloads[0], Size: 1 << 20, Dir: dir}
	_, err := j.Run(t.Context())
	if !errors.Is(err, ErrFioFailed) || !strings.Contains(err.Error(), "cannot connect") {
		t.Fatalf("err = %v, want ErrFioFailed quoting fio", err)
	}
	hanging := writeScript(t, dir, "fio-hang", "exec sleep 60")
	j.Fio, j.Timeout = hanging, 200*time.Millisecond
	_, err = j.Run(t.Context())
	if !errors.Is(err, ErrFioFailed) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err = %v, want ErrFioFailed with timeout", err)
	}
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
