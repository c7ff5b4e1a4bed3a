package durable

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
)

// fioCmd is one fio process: its arguments (without the binary and without
// --output), an optional CPU list for taskset, and a bound on its run time.
type fioCmd struct {
	Fio     string // fio binary
	Taskset string // taskset binary; used only when CPUs != ""
	CPUs    string // taskset -c list, "" = unpinned
	Args    []string
	Timeout time.Duration
	Dir     string // where the JSON output file goes
}

// argv is the full command line: [taskset -c CPUS] fio ARGS --output=OUT.
func (c fioCmd) argv(out string) []string {
	var a []string
	if c.CPUs != "" {
		a = append(a, c.Taskset, "-c", c.CPUs)
	}
	a = append(a, c.Fio)
	a = append(a, c.Args...)
	return append(a, "--output="+out)
}

// CommandLine renders the command for the report, with the output file
// left out (it is a temporary file).
func (c fioCmd) CommandLine() string {
	a := c.argv("")
	return quoteArgs(a[:len(a)-1])
}

// run runs fio (bench.RunFio: its own process group, killed through ctx
// or the timeout rather than letting a terminal Ctrl-C make it report a
// short run as a good sample, and dying with the harness) and returns its
// JSON output.
func (c fioCmd) run(ctx context.Context) ([]byte, error) {
	data, err := bench.RunFio(ctx, bench.FioExec{Argv: c.argv, Timeout: c.Timeout, Dir: c.Dir})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCommand, c.CommandLine(), err)
	}
	return data, nil
}

// fioTimeout bounds a time-based fio run: connection setup, laying out a
// file and draining the queue take seconds; a minute more is far beyond.
func fioTimeout(runtime, ramp time.Duration) time.Duration {
	return ramp + runtime + time.Minute
}

// fioDuration writes d in milliseconds, which fio's time parser accepts.
func fioDuration(d time.Duration) string {
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10) + "ms"
}

// PsyncArgs is fio's command line for len(files) concurrent streams of
// 4 KiB random writes, each followed by fdatasync (psync engine, one
// request at a time per stream), one job per file, time based. This is the
// plain-file floor under any durable 4 KiB write on the disk of files.
func PsyncArgs(files []string, size int64, runtime, ramp time.Duration) []string {
	a := []string{
		"--ioengine=psync", "--rw=randwrite", "--bs=4k", "--fdatasync=1", "--iodepth=1",
		"--size=" + strconv.FormatInt(size, 10),
		"--norandommap",
		"--time_based", "--runtime=" + fioDuration(runtime),
		"--percentile_list=50:99",
		"--output-format=json",
	}
	if ramp > 0 {
		a = append(a, "--ramp_time="+fioDuration(ramp))
	}
	// Options before the first --name are global; each --name starts a job
	// that runs concurrently with the others.
	for i, f := range files {
		a = append(a, "--name=stream"+strconv.Itoa(i+1), "--filename="+f)
	}
	return a
}

// PsyncResult is one fio psync job with fdatasync=1.
type PsyncResult struct {
	Name string `json:"name"`
	// IOPS counts writes; each is followed by an fdatasync, so it is the
	// rate of durable 4 KiB writes.
	IOPS float64 `json:"iops"`
	IOs  int64   `json:"ios"`
	// WriteP50/P99 are the pwrite() completion latencies (a page-cache
	// copy), SyncP50/P99 those of the fdatasync that follows it.
	WriteP50 time.Duration `json:"write_p50_ns"`
	WriteP99 time.Duration `json:"write_p99_ns"`
	SyncP50  time.Duration `json:"sync_p50_ns"`
	SyncP99  time.Duration `json:"sync_p99_ns"`
	// P50 and P99 are the latency of a durable write: write + fdatasync.
	// fio reports the two separately and keeps no joint histogram, so this
	// is the sum of the percentiles. The write is a few µs with little
	// spread, so the sum is within a few µs of the true percentile of the
	// sum (slightly above it at p99).
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

type psyncOutput struct {
	Jobs []struct {
		Name  string `json:"jobname"`
		Error int    `json:"error"`
		Write struct {
			IOPS     float64 `json:"iops"`
			TotalIOs int64   `json:"total_ios"`
			Clat     latNS   `json:"clat_ns"`
		} `json:"write"`
		Sync *struct {
			Lat latNS `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

type latNS struct {
	N          int64              `json:"N"`
	Percentile map[string]float64 `json:"percentile"`
}

// ParsePsync decodes fio's --output-format=json of a psync job with
// fdatasync=1 (PsyncArgs), one result per job. Text before the JSON
// document (fio's messages) is skipped. It is a decoder of another
// program's output and has a fuzz target.
func ParsePsync(data []byte) ([]PsyncResult, error) {
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return nil, fmt.Errorf("%w: no JSON document", ErrFioOutput)
	}
	var out psyncOutput
	if err := json.NewDecoder(bytes.NewReader(data[i:])).Decode(&out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFioOutput, err)
	}
	if len(out.Jobs) == 0 {
		return nil, fmt.Errorf("%w: no jobs", ErrFioOutput)
	}
	rs := make([]PsyncResult, 0, len(out.Jobs))
	for _, j := range out.Jobs {
		if j.Error != 0 {
			return nil, fmt.Errorf("%w: job %q: error %d", ErrFioOutput, j.Name, j.Error)
		}
		if !bench.FiniteNonNeg(j.Write.IOPS) || j.Write.TotalIOs <= 0 {
			return nil, fmt.Errorf("%w: job %q: no writes", ErrFioOutput, j.Name)
		}
		if j.Sync == nil || j.Sync.Lat.N <= 0 {
			return nil, fmt.Errorf("%w: job %q: no fdatasync latencies (run with --fdatasync=1)", ErrFioOutput, j.Name)
		}
		r := PsyncResult{Name: j.Name, IOPS: j.Write.IOPS, IOs: j.Write.TotalIOs}
		var err error
		for _, p := range []struct {
			m   map[string]float64
			pct float64
			dst *time.Duration
		}{
			{j.Write.Clat.Percentile, 50, &r.WriteP50},
			{j.Write.Clat.Percentile, 99, &r.WriteP99},
			{j.Sync.Lat.Percentile, 50, &r.SyncP50},
			{j.Sync.Lat.Percentile, 99, &r.SyncP99},
		} {
			if *p.dst, err = percentile(p.m, p.pct); err != nil {
				return nil, fmt.Errorf("job %q: %w", j.Name, err)
			}
		}
		r.P50 = r.WriteP50 + r.SyncP50
		r.P99 = r.WriteP99 + r.SyncP99
		rs = append(rs, r)
	}
	return rs, nil
}

// percentile is bench.FioPercentile with ErrFioOutput.
func percentile(m map[string]float64, pct float64) (time.Duration, error) {
	d, err := bench.FioPercentile(m, pct)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrFioOutput, err)
	}
	return d, nil
}

// streamsMeasure folds concurrent psync streams into one measure: the
// rate is their sum (what the disk delivered), p50 the mean of the
// streams' p50s (they are symmetric, so this is what one stream sees) and
// p99 the worst stream's p99.
func streamsMeasure(rs []PsyncResult) Measure {
	var m Measure
	for _, r := range rs {
		m.Rate += r.IOPS
		m.P50 += r.P50
		m.P99 = max(m.P99, r.P99)
	}
	if len(rs) > 0 {
		m.P50 /= time.Duration(len(rs))
	}
	return m
}

// nbdMeasure converts the shared harness's fio result.
func nbdMeasure(r bench.Result) Measure {
	return Measure{Rate: r.IOPS, P50: r.P50, P99: r.P99}
}

// quoteArgs renders a command line for the report.
func quoteArgs(argv []string) string { return benchutil.QuoteArgs(argv, " \t'\"?&") }
