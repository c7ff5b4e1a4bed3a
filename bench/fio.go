package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Workload is one fio access pattern.
type Workload struct {
	Name      string // e.g. "4k-randwrite-qd32"
	RW        string // fio rw=: randwrite, randread, write, read
	BlockSize int64  // bytes
	IODepth   int
}

// Workloads are the standard NBD workloads, in report order.
var Workloads = []Workload{
	{Name: "4k-randwrite-qd1", RW: "randwrite", BlockSize: 4 << 10, IODepth: 1},
	{Name: "4k-randwrite-qd32", RW: "randwrite", BlockSize: 4 << 10, IODepth: 32},
	{Name: "4k-randread-qd32", RW: "randread", BlockSize: 4 << 10, IODepth: 32},
	{Name: "1m-seqwrite-qd8", RW: "write", BlockSize: 1 << 20, IODepth: 8},
}

// WorkloadByName finds a standard workload.
func WorkloadByName(name string) (Workload, error) {
	for _, w := range Workloads {
		if w.Name == name {
			return w, nil
		}
	}
	return Workload{}, fmt.Errorf("%w: workload %q (known: %s)", ErrUnknown, name, strings.Join(workloadNames(), ", "))
}

func workloadNames() []string {
	var n []string
	for _, w := range Workloads {
		n = append(n, w.Name)
	}
	return n
}

// FioJob is one fio invocation against one NBD URI.
type FioJob struct {
	Fio      string // fio binary; "" means "fio" on PATH
	URI      string // nbd://host:port/export or nbd+unix:///export?socket=PATH
	Workload Workload
	Size     int64 // bytes of the region fio touches, from offset 0
	// Runtime > 0 makes the job time based (it loops over the region until
	// Runtime has passed after RampTime). Runtime == 0 makes fio do one
	// pass over Size bytes, which is how a region is pre-filled.
	Runtime  time.Duration
	RampTime time.Duration
	// Timeout bounds the whole fio process; 0 picks one from Runtime,
	// RampTime and Size.
	Timeout time.Duration
	// Dir is where fio's JSON output file goes; "" means os.TempDir().
	Dir string
}

// Args returns fio's command line (without the binary) writing JSON to out.
func (j FioJob) Args(out string) []string {
	w := j.Workload
	a := []string{
		"--name=" + w.Name,
		"--ioengine=nbd",
		"--uri=" + j.URI,
		"--rw=" + w.RW,
		"--bs=" + strconv.FormatInt(w.BlockSize, 10),
		"--iodepth=" + strconv.Itoa(w.IODepth),
		"--size=" + strconv.FormatInt(j.Size, 10),
		// The random map keeps fio from hitting a block twice per pass;
		// with a time-based job it only adds client CPU, which on two
		// cores is taken from the server under test.
		"--norandommap",
		"--percentile_list=50:99",
		"--output-format=json",
		"--output=" + out,
	}
	if j.Runtime > 0 {
		a = append(a, "--time_based", "--runtime="+fioDuration(j.Runtime))
		if j.RampTime > 0 {
			a = append(a, "--ramp_time="+fioDuration(j.RampTime))
		}
	}
	return a
}

// fioDuration writes d in milliseconds, which fio's time parser accepts.
func fioDuration(d time.Duration) string {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

func (j FioJob) timeout() time.Duration {
	if j.Timeout > 0 {
		return j.Timeout
	}
	if j.Runtime > 0 {
		// fio overruns a time-based job by the connection setup and the
		// drain of the queue; 30 s is far beyond either.
		return j.RampTime + j.Runtime + 30*time.Second
	}
	// One pass over the region: allow 16 MiB/s, far below anything this
	// harness measures, plus a minute.
	return time.Minute + time.Duration(j.Size/(16<<20))*time.Second
}

// Result is what one fio run measured.
type Result struct {
	IOPS float64 `json:"iops"`
	// MBps is megabytes (10^6 bytes) per second, fio's bw_bytes / 1e6.
	MBps float64 `json:"mbps"`
	// P50 and P99 are completion-latency percentiles (fio's clat).
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	IOs int64         `json:"ios"`
}

// Run runs fio and returns what it measured. The process is killed when
// ctx ends or the job's timeout passes.
func (j FioJob) Run(ctx context.Context) (Result, error) {
	fio := j.Fio
	if fio == "" {
		fio = "fio"
	}
	data, err := RunFio(ctx, FioExec{
		Argv:    func(out string) []string { return append([]string{fio}, j.Args(out)...) },
		Timeout: j.timeout(),
		Dir:     j.Dir,
	})
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s: %w", ErrFioFailed, j.URI, err)
	}
	r, err := ParseFio(data)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", j.URI, err)
	}
	return r, nil
}

// The subset of fio's JSON output (fio 3.x, --output-format=json) we read.
type fioOutput struct {
	Jobs []fioJob `json:"jobs"`
}

type fioJob struct {
	Name  string  `json:"jobname"`
	Error int     `json:"error"`
	Read  fioDir  `json:"read"`
	Write fioDir  `json:"write"`
	Trim  fioDir  `json:"trim"`
	Sync  *fioDir `json:"sync,omitempty"`
}

type fioDir struct {
	IOPS     float64 `json:"iops"`
	BWBytes  float64 `json:"bw_bytes"`
	TotalIOs int64   `json:"total_ios"`
	Clat     struct {
		N          int64              `json:"N"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// ParseFio decodes fio's JSON output. Text before the JSON document (fio
// prints warnings and errors there) is skipped. Throughput is summed over
// every job and direction; the latency percentiles are those of the
// direction that did the most I/O, and with several jobs the worst (largest)
// of the jobs' percentiles, since fio does not merge histograms in JSON
// without group_reporting.
func ParseFio(data []byte) (Result, error) {
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return Result{}, fmt.Errorf("%w: no JSON document", ErrFioOutput)
	}
	var out fioOutput
	dec := json.NewDecoder(bytes.NewReader(data[i:]))
	if err := dec.Decode(&out); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrFioOutput, err)
	}
	if len(out.Jobs) == 0 {
		return Result{}, fmt.Errorf("%w: no jobs", ErrFioOutput)
	}
	var r Result
	for _, j := range out.Jobs {
		if j.Error != 0 {
			return Result{}, fmt.Errorf("%w: job %q: error %d", ErrFioOutput, j.Name, j.Error)
		}
		main := &j.Read
		for _, d := range []*fioDir{&j.Read, &j.Write, &j.Trim} {
			if d.TotalIOs < 0 || !FiniteNonNeg(d.IOPS) || !FiniteNonNeg(d.BWBytes) {
				return Result{}, fmt.Errorf("%w: job %q: negative or non-finite counters", ErrFioOutput, j.Name)
			}
			r.IOPS += d.IOPS
			r.MBps += d.BWBytes / 1e6
			r.IOs += d.TotalIOs
			if d.TotalIOs > main.TotalIOs {
				main = d
			}
		}
		if main.TotalIOs == 0 {
			continue
		}
		p50, err := percentile(main.Clat.Percentile, 50)
		if err != nil {
			return Result{}, fmt.Errorf("job %q: %w", j.Name, err)
		}
		p99, err := percentile(main.Clat.Percentile, 99)
		if err != nil {
			return Result{}, fmt.Errorf("job %q: %w", j.Name, err)
		}
		r.P50 = max(r.P50, p50)
		r.P99 = max(r.P99, p99)
	}
	if r.IOs == 0 {
		return Result{}, fmt.Errorf("%w: no I/O completed", ErrFioOutput)
	}
	return r, nil
}

// percentile is FioPercentile for a completion latency, with ErrFioOutput.
func percentile(m map[string]float64, pct float64) (time.Duration, error) {
	d, err := FioPercentile(m, pct)
	if err != nil {
		return 0, fmt.Errorf("%w: clat %w", ErrFioOutput, err)
	}
	return d, nil
}

// fioVersion asks fio for its version ("fio-3.33").
func fioVersion(ctx context.Context, fio string) (string, error) {
	return toolVersion(ctx, fio, "--version")
}

func toolVersion(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, OneLine(string(ee.Stderr)))
		}
		return "", fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
