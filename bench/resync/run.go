package resync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Cache modes: the state of the page cache at the start of every
// measurement (see the package doc).
const (
	CacheCold = "cold" // sync + drop_caches before each measurement (root)
	CacheWarm = "warm" // both images read into the page cache first
)

// Options configure Run.
type Options struct {
	// Twinblock is the binary the daemons run (the CLI passes
	// os.Executable()).
	Twinblock string
	// Dir is where the work directory (2 × Size of images) is made: put it
	// on the disk under test. Default ".".
	Dir string
	// Size of each image (default 4 GiB); a multiple of ChunkSize.
	Size int64
	// Changed is the share of 64 KiB chunks rewritten on the secondary
	// each round (default 0.01), in (0, 1].
	Changed float64
	// Repeat is the number of rounds (default 3); tables show medians.
	Repeat int
	// Cache is CacheCold (default) or CacheWarm.
	Cache string
	// Seed makes the images and the chunks picked reproducible (0: random,
	// reported).
	Seed uint64
	// StartTimeout bounds each daemon start (default 30 s); PassTimeout
	// each resync pass (default 10 min).
	StartTimeout, PassTimeout time.Duration
	// Keep leaves the work directory (images, journals, configs) in place.
	Keep bool
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Command is the invocation, for the report.
	Command string
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		o.Dir = "."
	}
	if o.Size == 0 {
		o.Size = 4 << 30
	}
	if o.Changed == 0 {
		o.Changed = 0.01
	}
	if o.Repeat == 0 {
		o.Repeat = 3
	}
	if o.Cache == "" {
		o.Cache = CacheCold
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64() | 1
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.PassTimeout == 0 {
		o.PassTimeout = 10 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	switch {
	case o.Twinblock == "":
		return o, fmt.Errorf("%w: no twinblock binary", ErrOptions)
	case o.Size <= 0 || o.Size%ChunkSize != 0:
		return o, fmt.Errorf("%w: size %d is not a positive multiple of %d", ErrOptions, o.Size, ChunkSize)
	case !(o.Changed > 0 && o.Changed <= 1):
		return o, fmt.Errorf("%w: changed share %g: want more than 0 and at most 1", ErrOptions, o.Changed)
	case o.Repeat < 1:
		return o, fmt.Errorf("%w: repeat %d", ErrOptions, o.Repeat)
	case o.Cache != CacheCold && o.Cache != CacheWarm:
		return o, fmt.Errorf("%w: cache mode %q: want %s or %s", ErrOptions, o.Cache, CacheCold, CacheWarm)
	}
	return o, nil
}

// Run creates the images, runs Repeat rounds and returns the report. The
// report is nil only when nothing could be measured (bad options, the
// images or certificates could not be made); otherwise it comes back with
// whatever error ended or spoiled the run.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.Cache == CacheCold {
		// Fail before writing gigabytes when the cache cannot be dropped.
		if err := dropCaches(); err != nil {
			return nil, err
		}
	}
	work, err := os.MkdirTemp(o.Dir, ".twinblock-bench-resync-")
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(work); err == nil {
		work = abs
	}
	defer func() {
		if o.Keep {
			fmt.Fprintf(o.Progress, "kept %s\n", work)
			return
		}
		if rerr := os.RemoveAll(work); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()

	certs := filepath.Join(work, "certs")
	if _, err := runCommand(ctx, commandTimeout, o.Twinblock, "certs", "pair", "--out", certs, "--nodes", "a,b"); err != nil {
		return nil, err
	}
	p, err := newPair(work, o.Twinblock, certs, o.StartTimeout)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := p.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	fmt.Fprintf(o.Progress, "writing two %s images in %s (seed %d)\n", bench.FormatBytes(o.Size), work, o.Seed)
	t0 := time.Now()
	if err := makeImages(ctx, p.a.img, p.b.img, o.Size, o.Seed); err != nil {
		return nil, fmt.Errorf("resync bench: writing the images: %w", err)
	}
	fmt.Fprintf(o.Progress, "images written in %.1fs\n", time.Since(t0).Seconds())

	rep = &Report{
		Name:    "resync",
		Title:   "Resync benchmark: checksummed initial sync of a secondary that differs in a share of its chunks",
		Date:    time.Now().UTC(),
		Command: o.Command,
		Machine: machineInfo(ctx, work),
		Settings: Settings{
			Size: o.Size, ChunkSize: ChunkSize, Changed: o.Changed, ChangedChunks: changedChunks(o.Size, o.Changed),
			Repeat: o.Repeat, Cache: o.Cache, Dir: work, Seed: o.Seed, ReadRequest: ioSize,
		},
	}
	for round := range o.Repeat {
		if err := ctx.Err(); err != nil {
			break
		}
		r := runRound(ctx, o, p, round)
		rep.Rounds = append(rep.Rounds, r)
		fmt.Fprintln(o.Progress, r.summary())
	}
	rep.Machine.LoadEnd = bench.LoadAvg()
	rep.finish()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if failed := rep.failedRounds(); failed > 0 {
		return rep, fmt.Errorf("%w: %d of %d", ErrRounds, failed, len(rep.Rounds))
	}
	return rep, nil
}

// runRound rewrites chunks of b, measures the baselines and one resync,
// in the order the round's parity says.
func runRound(ctx context.Context, o Options, p *pair, round int) *Round {
	r := &Round{Index: round, Start: time.Now().UTC()}
	seed := o.Seed + uint64(round+1)*0x9e3779b97f4a7c15
	offs, err := mutate(p.b.img, o.Size, changedChunks(o.Size, o.Changed), seed)
	if err != nil {
		r.Error = fmt.Sprintf("rewriting chunks of b: %v", err)
		return r
	}
	r.ChangedBytes = int64(len(offs)) * ChunkSize
	steps := []func() error{
		func() error { return measureBaselines(ctx, o, p, r) },
		func() error { return measureResync(ctx, o, p, r, offs) },
	}
	if round%2 == 1 {
		steps[0], steps[1] = steps[1], steps[0]
		r.ResyncFirst = true
	}
	var errs []string
	for _, step := range steps {
		if err := step(); err != nil {
			errs = append(errs, err.Error())
			if ctx.Err() != nil {
				break
			}
		}
	}
	r.Error = strings.Join(errs, "; ")
	return r
}

// prepareCache puts the page cache in the round's state.
func prepareCache(ctx context.Context, o Options, p *pair) error {
	if o.Cache == CacheCold {
		return dropCaches()
	}
	_, _, err := readTogether(ctx, p.a.img, p.b.img)
	return err
}

// resyncWindow is how many 4 MiB hash requests the engine keeps in flight
// (engine scanWindow): the deepest baseline reads as many at once.
const resyncWindow = 4

func measureBaselines(ctx context.Context, o Options, p *pair, r *Round) error {
	read := func(dst **ReadMeasure, what string, f func() (time.Duration, int64, error)) error {
		if err := prepareCache(ctx, o, p); err != nil {
			return err
		}
		d, n, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		*dst = &ReadMeasure{Seconds: d.Seconds(), Bytes: n, MBps: float64(n) / 1e6 / d.Seconds()}
		return nil
	}
	if o.Cache == CacheCold {
		if err := read(&r.ReadDirect, "O_DIRECT read", func() (time.Duration, int64, error) {
			return readOnce(ctx, p.a.img, true, 1)
		}); err != nil {
			return err
		}
		if err := read(&r.ReadDirectQD4, "O_DIRECT read, 4 in flight", func() (time.Duration, int64, error) {
			return readOnce(ctx, p.a.img, true, resyncWindow)
		}); err != nil {
			return err
		}
	}
	if err := read(&r.ReadBuffered, "buffered read", func() (time.Duration, int64, error) {
		return readOnce(ctx, p.a.img, false, 1)
	}); err != nil {
		return err
	}
	return read(&r.ReadBoth, "reading both images at once", func() (time.Duration, int64, error) {
		return readTogether(ctx, p.a.img, p.b.img)
	})
}

func measureResync(ctx context.Context, o Options, p *pair, r *Round, offs []int64) (err error) {
	defer func() {
		if serr := p.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if err := p.create(ctx); err != nil {
		return err
	}
	if err := p.start(ctx, p.b); err != nil {
		return err
	}
	if err := prepareCache(ctx, o, p); err != nil {
		return err
	}
	cpu0, cpuErr := readCPU()
	start := time.Now()
	if err := p.start(ctx, p.a); err != nil {
		return err
	}
	var final VolumeStatus
	// Status every 250 ms: each poll runs the CLI, whose CPU the pass
	// would otherwise compete with more than it must (the pass time is the
	// engine's own, so the interval only rounds the wall time).
	if err := p.poll(ctx, "resync pass", o.PassTimeout, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		st, err := p.status(ctx, p.a)
		if err != nil {
			return false, err
		}
		if st.Resync != nil && st.Resync.Error != "" {
			return false, fmt.Errorf("resync error: %s", st.Resync.Error)
		}
		final = st
		return st.Resynced(), fmt.Errorf("connection %s, peer %s, pending %d", st.Connection, st.PeerDisk, st.ResyncPendingBytes)
	}); err != nil {
		return err
	}
	wall := time.Since(start)
	cpu1, cpuErr2 := readCPU()
	daemonCPU := -1.0
	if ca, cb := p.a.cpuSeconds(), p.b.cpuSeconds(); ca >= 0 && cb >= 0 {
		daemonCPU = ca + cb
	}
	ps := p.px.Stats()
	pr := final.Resync
	m := &ResyncMeasure{
		Seconds: pr.Elapsed, WallSeconds: wall.Seconds(),
		TotalBytes: pr.TotalBytes, SentBytes: pr.SentBytes, Full: pr.Full,
		WireToSecondary: ps.BytesToTarget, WireToPrimary: ps.BytesToClient,
		WireBytes:     ps.BytesToTarget + ps.BytesToClient,
		LinkBytesSent: final.LinkBytesSent, LinkBytesRecv: final.LinkBytesReceived,
		CPUBusy: -1, DaemonCPUSeconds: daemonCPU,
	}
	if pr.Elapsed > 0 {
		m.CompareMBps = float64(pr.DoneBytes) / 1e6 / pr.Elapsed
	}
	if cpuErr == nil && cpuErr2 == nil {
		m.CPUBusy = cpuBusy(cpu0, cpu1)
	}
	r.Resync = m
	r.Commands = []string{p.showArgs(p.b.argv), p.showArgs(p.a.argv)}
	// Stop the daemons (a first, then b: b's writes are in its file) and
	// check the data itself.
	if err := p.stop(); err != nil {
		return err
	}
	switch {
	case !pr.Full || pr.TotalBytes != uint64(o.Size):
		return fmt.Errorf("%w: want a full pass over %d bytes, got total %d full %v", ErrCheck, o.Size, pr.TotalBytes, pr.Full)
	case int64(pr.SentBytes) != r.ChangedBytes:
		return fmt.Errorf("%w: sent %d bytes of chunk data, want the %d rewritten", ErrCheck, pr.SentBytes, r.ChangedBytes)
	}
	return compareChunks(p.a.img, p.b.img, offs)
}

// memTotal renders /proc/meminfo's "24684084 kB" as "23.5 GiB" ("" when
// unknown).
func memTotal(v string) string {
	kb, ok := strings.CutSuffix(v, " kB")
	if !ok {
		return v
	}
	n, err := strconv.ParseInt(kb, 10, 64)
	if err != nil {
		return v
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
}

// machineInfo gathers the facts the report states about the machine.
func machineInfo(ctx context.Context, dir string) Machine {
	m := Machine{NProc: runtime.NumCPU(), Go: runtime.Version(), Kernel: bench.KernelRelease(), CPU: bench.CPUModel(),
		Memory: memTotal(bench.ProcField("/proc/meminfo", "MemTotal")), LoadStart: bench.LoadAvg()}
	if out, err := runCommand(ctx, 10*time.Second, "df", "-PT", dir); err == nil {
		m.Disk = string(out)
	} else {
		m.Disk = "unknown: " + err.Error()
	}
	return m
}
