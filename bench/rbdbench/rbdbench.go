// Package rbdbench measures a journal-fronted twinblock volume on Ceph RBD
// against fio's own RBD engine on a raw image of the same cluster, in the
// same run: `twinblock bench rbd`.
//
// Rows (4 KiB random writes, fio, time based):
//
//	raw-qd1, raw-qd32  fio --ioengine=rbd on a raw image (librbd, cache off)
//	tb-qd1, tb-qd32    fio --ioengine=nbd over a unix socket to `twinblock
//	                   serve` exporting an rbd volume (journal in --dir)
//
// Both images have the same size and are written once in full before the
// first sample (a first write to an RBD object creates it, which costs
// more than an overwrite). Rows are interleaved within each round; the
// report shows per-row medians and the ratios tb/raw of QD1 p50 latency and
// QD32 IOPS.
//
// Both clients run with rbd_cache=false: fio through a generated ceph.conf
// (the cluster's, plus a [client] section), twinblock because its rbd
// backend always forces it.
//
// The package only starts processes (twinblock, fio, rbd), so it builds
// without cgo; the twinblock binary it runs must have Ceph support.
package rbdbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Options configure Run.
type Options struct {
	// Twinblock is a twinblock binary with Ceph support (the CLI passes
	// os.Executable()). Fio and RBD default to "fio" and "rbd" on PATH.
	Twinblock, Fio, RBD string
	// ConfFile, Keyring and Client reach the cluster (Keyring: "" uses
	// what ConfFile says; Client default "admin"); Pool holds the two
	// images the run creates and removes (default "rbd").
	ConfFile, Keyring, Client, Pool string
	// Dir is where the work directory (twinblock's journal) is made: put
	// it on the disk under test. Default ".".
	Dir string
	// Size of each image and the region fio writes (default 256 MiB).
	Size int64
	// Runtime and RampTime of each sample (default 10 s and 2 s; negative
	// RampTime: none). Repeat is the rounds (default 3).
	Runtime, RampTime time.Duration
	Repeat            int
	// StartTimeout bounds twinblock serve's start (default 30 s).
	StartTimeout time.Duration
	// Keep leaves the work directory and the images in place.
	Keep bool
	// Progress receives one line per sample; nil discards.
	Progress io.Writer
	// Command is the invocation, for the report.
	Command string
}

// Row keys, in report order.
const (
	RowRawQD1  = "raw-qd1"
	RowRawQD32 = "raw-qd32"
	RowTBQD1   = "tb-qd1"
	RowTBQD32  = "tb-qd32"
)

var rowTitles = map[string]string{
	RowRawQD1:  "fio --ioengine=rbd, raw image, 4k randwrite QD1",
	RowRawQD32: "fio --ioengine=rbd, raw image, 4k randwrite QD32",
	RowTBQD1:   "twinblock rbd volume over NBD (unix socket), 4k randwrite QD1",
	RowTBQD32:  "twinblock rbd volume over NBD (unix socket), 4k randwrite QD32",
}

// Rows are the row keys in report order.
func Rows() []string { return []string{RowRawQD1, RowTBQD1, RowRawQD32, RowTBQD32} }

// ErrBench is wrapped by every error of a run's setup.
var ErrBench = errors.New("rbdbench")

func (o *Options) defaults() {
	if o.Fio == "" {
		o.Fio = "fio"
	}
	if o.RBD == "" {
		o.RBD = "rbd"
	}
	if o.Client == "" {
		o.Client = "admin"
	}
	if o.Pool == "" {
		o.Pool = "rbd"
	}
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.Size <= 0 {
		o.Size = 256 << 20
	}
	if o.Runtime <= 0 {
		o.Runtime = 10 * time.Second
	}
	if o.RampTime == 0 {
		o.RampTime = 2 * time.Second
	}
	if o.RampTime < 0 {
		o.RampTime = 0
	}
	if o.Repeat <= 0 {
		o.Repeat = 3
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// run is one benchmark run's state.
type run struct {
	o        Options
	work     string
	conf     string // the generated client ceph.conf
	raw, vol string // image names
	tbCfg    string
	socket   string
	srv      *bench.Process
	// cpu is twinblock serve's CPU time during each sample of a tb row.
	cpu map[string][]time.Duration
}

// Run measures every row Repeat times and returns the report. The images
// and the work directory are removed at the end unless Keep is set.
func Run(ctx context.Context, o Options) (rep *Report, err error) {
	o.defaults()
	if o.Twinblock == "" || o.ConfFile == "" {
		return nil, fmt.Errorf("%w: Twinblock and ConfFile are required", ErrBench)
	}
	work, err := os.MkdirTemp(o.Dir, ".twinblock-bench-rbd-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBench, err)
	}
	work, _ = filepath.Abs(work)
	r := &run{o: o, work: work, conf: filepath.Join(work, "ceph.conf"),
		raw: fmt.Sprintf("tbbench-raw-%d", os.Getpid()), vol: fmt.Sprintf("tbbench-vol-%d", os.Getpid()),
		tbCfg: filepath.Join(work, "twinblock.yaml"), socket: filepath.Join(work, "nbd.sock"),
		cpu: map[string][]time.Duration{}}
	defer func() {
		if serr := r.stopServe(); serr != nil && err == nil {
			err = serr
		}
		if !o.Keep {
			for _, img := range []string{r.raw, r.vol} {
				_ = r.rbd("rm", "--no-progress", o.Pool+"/"+img)
			}
			os.RemoveAll(work)
		}
	}()
	rep = &Report{Command: o.Command, Date: time.Now().UTC(), Machine: machine(), Size: o.Size,
		Runtime: o.Runtime.String(), RampTime: o.RampTime.String(), Repeat: o.Repeat,
		Pool: o.Pool, Dir: work, Rows: map[string]*RowResult{}}
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	rep.Commands = r.commands()
	for _, k := range Rows() {
		rep.Rows[k] = &RowResult{Key: k, Title: rowTitles[k]}
	}
	for round := 1; round <= o.Repeat; round++ {
		for _, k := range Rows() {
			res, err := r.sample(ctx, k)
			if err != nil {
				return rep, fmt.Errorf("round %d, %s: %w", round, k, err)
			}
			rep.Rows[k].Samples = append(rep.Rows[k].Samples, res)
			fmt.Fprintf(o.Progress, "round %d/%d %-9s %8.0f IOPS  p50 %-8s p99 %s\n", round, o.Repeat, k, res.IOPS,
				bench.FormatLatency(res.P50), bench.FormatLatency(res.P99))
		}
	}
	rep.finish(r.cpu, o.Runtime+o.RampTime)
	return rep, nil
}

// setup writes the client conf, creates both images (the volume's with
// `twinblock create`), fills them, and starts twinblock serve.
func (r *run) setup(ctx context.Context) error {
	o := r.o
	orig, err := os.ReadFile(o.ConfFile)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBench, err)
	}
	extra := "\n[client]\nrbd cache = false\n"
	if o.Keyring != "" {
		abs, _ := filepath.Abs(o.Keyring)
		extra += "keyring = " + abs + "\n"
	}
	if err := os.WriteFile(r.conf, append(orig, extra...), 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrBench, err)
	}
	size := strconv.FormatInt(o.Size>>20, 10) + "M"
	if err := r.rbd("create", "--size", size, "--image-feature", "layering", o.Pool+"/"+r.raw); err != nil {
		return err
	}
	args := []string{"create", "vol0", "--config", r.tbCfg, "--backend", "rbd", "--ceph-conf", r.conf,
		"--client", o.Client, "--pool", o.Pool, "--image", r.vol, "--size", size,
		"--journal-dir", filepath.Join(r.work, "journal")}
	if out, err := r.cmd(ctx, o.Twinblock, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: twinblock %s: %w: %s", ErrBench, strings.Join(args, " "), err, bench.OneLine(string(out)))
	}
	// Written once in full, so every sample overwrites existing objects.
	for _, img := range []string{r.raw, r.vol} {
		fmt.Fprintf(o.Progress, "filling %s/%s (%d MiB)\n", o.Pool, img, o.Size>>20)
		if _, err := r.fioRBD(ctx, img, "write", 1<<20, 8, 0, 0); err != nil {
			return fmt.Errorf("filling %s: %w", img, err)
		}
	}
	return r.startServe(ctx)
}

func (r *run) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), "CEPH_CONF="+r.conf)
	c.SysProcAttr = bench.ChildProcAttr()
	c.WaitDelay = 5 * time.Second
	return c
}

// rbd runs the rbd CLI with the generated conf under a minute's bound.
func (r *run) rbd(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"-c", r.conf, "--id", r.o.Client}, args...)
	if out, err := r.cmd(ctx, r.o.RBD, full...).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: rbd %s: %w: %s", ErrBench, strings.Join(args, " "), err, bench.OneLine(string(out)))
	}
	return nil
}

func (r *run) startServe(ctx context.Context) error {
	argv := []string{r.o.Twinblock, "serve", "--config", r.tbCfg, "--listen", "none", "--socket", r.socket}
	p, err := bench.StartProcess("twinblock", argv)
	if err != nil {
		return fmt.Errorf("%w: starting twinblock serve: %w", ErrBench, err)
	}
	r.srv = p
	deadline := time.Now().Add(r.o.StartTimeout)
	for {
		if c, err := net.DialTimeout("unix", r.socket, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%w: twinblock serve exited: %v: %s", ErrBench, p.Err(), bench.OneLine(p.Output.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: twinblock serve not serving within %v: %s", ErrBench, r.o.StartTimeout, bench.OneLine(p.Output.String()))
		}
	}
}

func (r *run) stopServe() error {
	if r.srv == nil {
		return nil
	}
	p := r.srv
	r.srv = nil
	if p.Stop(45 * time.Second) {
		return fmt.Errorf("%w: twinblock serve needed SIGKILL to stop: %s", ErrBench, bench.OneLine(p.Output.String()))
	}
	return nil
}

func (r *run) sample(ctx context.Context, row string) (bench.Result, error) {
	depth := 1
	if strings.HasSuffix(row, "qd32") {
		depth = 32
	}
	if strings.HasPrefix(row, "raw") {
		return r.fioRBD(ctx, r.raw, "randwrite", 4096, depth, r.o.Runtime, r.o.RampTime)
	}
	if r.srv.Exited() {
		return bench.Result{}, fmt.Errorf("%w: twinblock serve exited: %s", ErrBench, bench.OneLine(r.srv.Output.String()))
	}
	job := r.nbdJob(depth)
	before, cerr := procCPU(r.srv.Cmd.Process.Pid)
	res, err := job.Run(ctx)
	after, cerr2 := procCPU(r.srv.Cmd.Process.Pid)
	if err == nil && cerr == nil && cerr2 == nil {
		r.cpu[row] = append(r.cpu[row], after-before)
	}
	return res, err
}

// procCPU is a process's user+system CPU time so far (/proc/PID/stat).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime+stime from the text of a /proc/PID/stat file.
func parseStatCPU(s string) (time.Duration, error) {
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: proc stat without a command name: %.80q", ErrBench, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: proc stat with %d fields: %.80q", ErrBench, len(f), s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	// Bounded far below overflow: no process has run for centuries.
	const maxTicks = 1 << 40
	if err1 != nil || err2 != nil || ut < 0 || st < 0 || ut > maxTicks || st > maxTicks {
		return 0, fmt.Errorf("%w: proc stat utime/stime %q %q", ErrBench, f[11], f[12])
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func (r *run) nbdJob(depth int) bench.FioJob {
	return bench.FioJob{
		Fio: r.o.Fio, URI: "nbd+unix:///vol0?socket=" + r.socket,
		Workload: bench.Workload{Name: fmt.Sprintf("4k-randwrite-qd%d", depth), RW: "randwrite", BlockSize: 4096, IODepth: depth},
		Size:     r.o.Size, Runtime: r.o.Runtime, RampTime: r.o.RampTime, Dir: r.work,
	}
}

// rbdArgs is fio's command line for the rbd engine (without binary and
// output).
func (r *run) rbdArgs(image, rw string, bs int64, depth int, runtime, ramp time.Duration) []string {
	a := []string{
		"--name=rbd-" + rw, "--ioengine=rbd", "--clientname=" + r.o.Client, "--pool=" + r.o.Pool,
		"--rbdname=" + image, "--rw=" + rw, "--bs=" + strconv.FormatInt(bs, 10),
		"--iodepth=" + strconv.Itoa(depth), "--size=" + strconv.FormatInt(r.o.Size, 10),
		"--norandommap", "--percentile_list=50:99", "--output-format=json",
	}
	if runtime > 0 {
		a = append(a, "--time_based", fmt.Sprintf("--runtime=%dms", runtime.Milliseconds()))
		if ramp > 0 {
			a = append(a, fmt.Sprintf("--ramp_time=%dms", ramp.Milliseconds()))
		}
	}
	return a
}

func (r *run) fioRBD(ctx context.Context, image, rw string, bs int64, depth int, runtime, ramp time.Duration) (bench.Result, error) {
	timeout := runtime + ramp + 30*time.Second
	if runtime == 0 {
		timeout = time.Minute + time.Duration(r.o.Size/(16<<20))*time.Second
	}
	data, err := bench.RunFio(ctx, bench.FioExec{
		Argv: func(out string) []string {
			// fio's rbd engine finds the cluster through CEPH_CONF.
			return append([]string{"env", "CEPH_CONF=" + r.conf, r.o.Fio}, append(r.rbdArgs(image, rw, bs, depth, runtime, ramp), "--output="+out)...)
		},
		Timeout: timeout,
		Dir:     r.work,
	})
	if err != nil {
		return bench.Result{}, fmt.Errorf("%w: fio rbd %s: %w", ErrBench, image, err)
	}
	return bench.ParseFio(data)
}

// commands says how each row was run, for the report.
func (r *run) commands() map[string]string {
	cmds := map[string]string{}
	for _, d := range []int{1, 32} {
		raw := append([]string{"CEPH_CONF=DIR/ceph.conf", "fio"}, r.rbdArgs("RAW", "randwrite", 4096, d, r.o.Runtime, r.o.RampTime)...)
		cmds[fmt.Sprintf("raw-qd%d", d)] = strings.Join(raw, " ")
		tb := append([]string{"fio"}, r.nbdJob(d).Args("OUT")...)
		for i, a := range tb {
			tb[i] = strings.ReplaceAll(a, r.work, "DIR")
		}
		tb = slices.DeleteFunc(tb, func(s string) bool { return strings.HasPrefix(s, "--output=") })
		cmds[fmt.Sprintf("tb-qd%d", d)] = strings.Join(tb, " ") + "   # against: twinblock serve --config DIR/twinblock.yaml --listen none --socket DIR/nbd.sock"
	}
	return cmds
}
