package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Options configure RunJournal and RunPair. Fields marked "pair" are
// ignored by RunJournal.
type Options struct {
	// Twinblock is the twinblock binary the daemons run (the CLI passes
	// os.Executable()). Needed by every row that goes through NBD.
	Twinblock string
	// Fio and Taskset are the binaries ("fio", "taskset" on PATH if empty).
	Fio, Taskset string
	// Dir is where the run's work directory is made: put it on the disk
	// under test. Default ".".
	Dir string
	// Runtime is the measured time of each sample (default 10 s), after
	// RampTime unmeasured (default 2 s; negative means none).
	Runtime, RampTime time.Duration
	// Repeat is the samples per row (default 3); tables show medians.
	Repeat int
	// Size is each volume's size and the region fio writes (default 1 GiB).
	Size int64
	// Rows selects rows by key (JournalRows, PairRows); nil means all.
	Rows []string
	// Pin runs daemons and fio under taskset (see Pinning). Without
	// taskset or with fewer than 2 CPUs the run is unpinned and the report
	// says so.
	Pin bool
	// WANLatency is the one-way delay the proxy adds (pair; default 2.5 ms).
	WANLatency time.Duration
	// WANModes are the replication modes measured across the WAN proxy
	// (pair; default sync, memory, async). sync carries the target.
	WANModes []string
	// StartTimeout bounds each daemon start, including the pair's
	// handshake (default 30 s).
	StartTimeout time.Duration
	// Keep leaves the work directory in place (to look at logs and files).
	Keep bool
	// Progress receives one line per sample; nil discards.
	Progress io.Writer
	// Command is the invocation, for the report.
	Command string
}

// Row keys. Keys are stable: --rows and the JSON files use them.
const (
	RowBaseline  = "baseline"   // journal: fio psync write+fdatasync, one stream
	RowNBDQD1    = "nbd-qd1"    // journal: standalone volume over NBD, QD1
	RowNBDQD32   = "nbd-qd32"   // journal: same, QD32
	RowJournal1  = "journal-1"  // journal: in-process, 1 appender
	RowJournal32 = "journal-32" // journal: in-process, 32 appenders

	RowStreams2       = "streams2"        // pair floor: two psync streams at once
	RowRTT            = "rtt"             // pair floor: loopback round trip
	RowStandaloneQD32 = "standalone-qd32" // pair: standalone volume, pinned like the pair
	RowStandaloneQD1  = "standalone-qd1"
	RowPairQD32       = "pair-qd32" // pair: sync pair on loopback
	RowPairQD1        = "pair-qd1"
	// RowAsyncQD32 is an async pair on loopback (no proxy): the pair's
	// cost on this machine (the second node's disk and CPU work, the
	// primary's sends) without the wait for the peer's acknowledgement.
	// No target; it tells how much of sync's gap to standalone is waiting.
	RowAsyncQD32 = "async-qd32"
	// WAN rows are "wan-MODE-qd32" and "wan-MODE-qd1".
)

// Targets of the issues.
const (
	// GroupCommitGoal: QD32 (or 32 appenders) must reach this many times
	// the QD1 (1 appender) rate.
	GroupCommitGoal = 10.0
	// LatencyGoal: QD1 p50 at most this many times its floor.
	LatencyGoal = 1.3
	// PairIOPSGoal: sync pair QD32 IOPS at least this share of standalone.
	PairIOPSGoal = 0.7
	// WANEfficiencyGoal: across the WAN, QD32 IOPS at least this share of
	// 32 requests per round trip.
	WANEfficiencyGoal = 0.8
)

// Setup names, in the order each round visits them.
const (
	setupStandalone = "standalone"
	setupPair       = "pair"
	setupPairAsync  = "pair-async"
)

var setupNames = []string{setupStandalone, setupPair, setupPairAsync, "wan-sync", "wan-memory", "wan-async"}

// loopbackModes are the replication modes of the pairs without a proxy.
var loopbackModes = map[string]string{setupPair: "sync", setupPairAsync: "async"}

// rowKind says how a row's samples are taken.
type rowKind int

const (
	kindPsync  rowKind = iota // fio psync fdatasync on Streams files at once
	kindRTT                   // Go loopback ping-pong
	kindAppend                // in-process journal appenders
	kindNBD                   // fio over NBD against a setup's primary
)

type rowSpec struct {
	key, name, unit string
	kind            rowKind
	streams         int    // kindPsync
	appenders       int    // kindAppend
	setup           string // kindNBD
	iodepth         int    // kindNBD
}

// JournalRows lists the rows of RunJournal, in report order.
func JournalRows() []string { return keys(journalSpecs()) }

// PairRows lists the rows of RunPair for the given WAN modes.
func PairRows(wanModes []string) []string { return keys(pairSpecs(wanModes)) }

func keys(specs []rowSpec) []string {
	var k []string
	for _, s := range specs {
		k = append(k, s.key)
	}
	return k
}

func journalSpecs() []rowSpec {
	return []rowSpec{
		{key: RowBaseline, name: "baseline: 4k write + fdatasync on a file (fio psync)", unit: "IOPS", kind: kindPsync, streams: 1},
		{key: RowNBDQD1, name: "twinblock standalone over NBD, 4k randwrite QD1", unit: "IOPS", kind: kindNBD, setup: setupStandalone, iodepth: 1},
		{key: RowNBDQD32, name: "twinblock standalone over NBD, 4k randwrite QD32", unit: "IOPS", kind: kindNBD, setup: setupStandalone, iodepth: 32},
		{key: RowJournal1, name: "journal.Append in process, 1 appender, 4 KiB", unit: "appends/s", kind: kindAppend, appenders: 1},
		{key: RowJournal32, name: "journal.Append in process, 32 appenders, 4 KiB", unit: "appends/s", kind: kindAppend, appenders: 32},
	}
}

func pairSpecs(wanModes []string) []rowSpec {
	specs := []rowSpec{
		{key: RowStreams2, name: "floor: 4k write + fdatasync, two streams at once (fio psync)", unit: "IOPS (both)", kind: kindPsync, streams: 2},
		{key: RowRTT, name: "floor: loopback TCP round trip (64 B ping-pong)", unit: "round trips/s", kind: kindRTT},
		{key: RowStandaloneQD32, name: "standalone volume, 4k randwrite QD32", unit: "IOPS", kind: kindNBD, setup: setupStandalone, iodepth: 32},
		{key: RowStandaloneQD1, name: "standalone volume, 4k randwrite QD1", unit: "IOPS", kind: kindNBD, setup: setupStandalone, iodepth: 1},
		{key: RowPairQD32, name: "sync pair on loopback, 4k randwrite QD32", unit: "IOPS", kind: kindNBD, setup: setupPair, iodepth: 32},
		{key: RowPairQD1, name: "sync pair on loopback, 4k randwrite QD1", unit: "IOPS", kind: kindNBD, setup: setupPair, iodepth: 1},
		{key: RowAsyncQD32, name: "async pair on loopback, 4k randwrite QD32 (reference, no target)", unit: "IOPS", kind: kindNBD, setup: setupPairAsync, iodepth: 32},
	}
	for _, m := range wanModes {
		for _, qd := range []int{32, 1} {
			specs = append(specs, rowSpec{
				key:  fmt.Sprintf("wan-%s-qd%d", m, qd),
				name: fmt.Sprintf("%s pair across the WAN proxy, 4k randwrite QD%d", m, qd),
				unit: "IOPS", kind: kindNBD, setup: "wan-" + m, iodepth: qd,
			})
		}
	}
	return specs
}

// RunJournal measures the journal's group commit and its cost over a plain
// write + fdatasync (issue 3): fio psync on a file, a standalone file
// volume over NBD at QD1 and QD32, and journal.Append in this process with
// 1 and 32 appenders. It returns the report with whatever was measured,
// and an error wrapping ErrSamples when some samples failed.
func RunJournal(ctx context.Context, o Options) (*Report, error) {
	h, err := newHarness(ctx, o, journalSpecs(), "journal", "Journal benchmark: group commit and the cost of durability")
	if err != nil {
		return nil, err
	}
	h.note("%s", psyncNote)
	h.note("The journal-* rows run inside the harness process (unpinned) on a new journal in the work directory, so they measure the journal alone: no NBD, no backend apply.")
	return h.run(ctx, journalTargets)
}

// RunPair measures synchronous replication (issue 4): a standalone file
// volume against a sync pair on loopback (TLS, file backends), pinned as
// the issue says, the floor under a replicated write (a write + fdatasync
// while a second such stream runs, plus the loopback round trip), and the
// pair across a WAN proxy in each of WANModes.
func RunPair(ctx context.Context, o Options) (*Report, error) {
	if len(o.WANModes) == 0 {
		o.WANModes = []string{"sync", "memory", "async"}
	}
	for _, m := range o.WANModes {
		if m != "sync" && m != "memory" && m != "async" {
			return nil, fmt.Errorf("%w: WAN mode %q (known: sync, memory, async)", ErrOptions, m)
		}
	}
	if o.WANLatency == 0 {
		o.WANLatency = 2500 * time.Microsecond
	}
	if o.WANLatency < 0 {
		return nil, fmt.Errorf("%w: WAN latency %s", ErrOptions, o.WANLatency)
	}
	h, err := newHarness(ctx, o, pairSpecs(o.WANModes), "pair", "Pair benchmark: synchronous replication against a standalone volume")
	if err != nil {
		return nil, err
	}
	h.rep.Settings.WANLatency = o.WANLatency
	h.note("%s", psyncNote)
	h.note("Floor = streams2 p50 + rtt p50. Both journals of a loopback pair are on this one disk, so the primary's and the secondary's fdatasyncs contend like two concurrent streams; a pair on two machines would not pay that.")
	h.note("The WAN proxy is `twinblock proxy` (userspace, byte-transparent, TLS passes through); only the primary dials, so every replication byte crosses it.")
	lat := o.WANLatency
	return h.run(ctx, func(r *Report) []Target { return pairTargets(r, lat) })
}

// psyncNote explains the latency of the psync rows.
const psyncNote = "psync rows: fio reports the pwrite() latency and the fdatasync latency separately and keeps no joint histogram, so p50/p99 there are write p50 + fdatasync p50 (and p99 + p99); the write is a page-cache copy of a few µs. Each stream's parts are under Every sample."

// harness is one run in progress.
type harness struct {
	o      Options
	work   string // the run's work directory (absolute)
	specs  []rowSpec
	rows   map[string]*Row
	setups map[string]*setup
	rep    *Report
	// broken records setups that could not be made; their rows get that
	// error as their only sample.
	broken map[string]error
	// The block device of the work directory, for DiskUse.
	diskOK               bool
	diskMajor, diskMinor uint32
	dropNoted            bool // a failed page-cache drop was noted
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Fio == "" {
		c.Fio = "fio"
	}
	if c.Taskset == "" {
		c.Taskset = "taskset"
	}
	if c.Dir == "" {
		c.Dir = "."
	}
	if c.Runtime == 0 {
		c.Runtime = 10 * time.Second
	}
	if c.RampTime == 0 {
		c.RampTime = 2 * time.Second
	} else if c.RampTime < 0 {
		c.RampTime = 0
	}
	if c.Repeat == 0 {
		c.Repeat = 3
	}
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	switch {
	case c.Runtime < 0:
		return c, fmt.Errorf("%w: runtime %s", ErrOptions, c.Runtime)
	case c.Repeat < 0:
		return c, fmt.Errorf("%w: repeat %d", ErrOptions, c.Repeat)
	case c.Size < 1<<20 || c.Size%4096 != 0:
		return c, fmt.Errorf("%w: size %d: at least 1 MiB, a multiple of 4 KiB", ErrOptions, c.Size)
	case c.StartTimeout < 0:
		return c, fmt.Errorf("%w: start timeout %s", ErrOptions, c.StartTimeout)
	}
	return c, nil
}

func newHarness(ctx context.Context, opts Options, all []rowSpec, name, title string) (*harness, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	specs, err := selectRows(all, o.Rows)
	if err != nil {
		return nil, err
	}
	needFio, needBin := false, false
	for _, s := range specs {
		needFio = needFio || s.kind == kindPsync || s.kind == kindNBD
		needBin = needBin || s.kind == kindNBD
	}
	if needFio {
		if _, err := exec.LookPath(o.Fio); err != nil {
			return nil, fmt.Errorf("%w: fio: %w (Debian: apt-get install fio)", ErrOptions, err)
		}
	}
	if needBin && o.Twinblock == "" {
		return nil, fmt.Errorf("%w: no twinblock binary for the NBD rows", ErrOptions)
	}
	h := &harness{o: o, specs: specs, rows: map[string]*Row{}, setups: map[string]*setup{}, broken: map[string]error{}}
	h.rep = &Report{
		Name: name, Title: title, Date: time.Now(), Command: o.Command,
		Settings: Settings{Runtime: o.Runtime, RampTime: o.RampTime, Repeat: o.Repeat, Size: o.Size},
	}
	var pin Pinning
	if o.Pin {
		_, lookErr := exec.LookPath(o.Taskset)
		switch {
		case lookErr != nil:
			h.note("Run unpinned: taskset not found (%v); install util-linux.", lookErr)
		case runtime.NumCPU() < 2:
			h.note("Run unpinned: %d CPU, pinning needs 2.", runtime.NumCPU())
		default:
			pin = Pinning{Primary: "0", Client: "0", Secondary: "1"}
			h.rep.Settings.Pinning = &pin
		}
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if h.work, err = os.MkdirTemp(abs, ".twinblock-bench-"+name+"-"); err != nil {
		return nil, fmt.Errorf("durable: work directory: %w", err)
	}
	h.rep.Settings.Dir = h.work
	if maj, mnr, err := diskOf(h.work); err == nil {
		if _, err := readDisk(maj, mnr); err == nil {
			h.diskOK, h.diskMajor, h.diskMinor = true, maj, mnr
		}
	}
	h.rep.Machine = machineInfo(ctx, o.Fio, h.work)
	for _, s := range specs {
		h.rows[s.key] = &Row{Key: s.key, Name: s.name, Unit: s.unit, Command: h.describe(s)}
		h.rep.Rows = append(h.rep.Rows, h.rows[s.key])
		if s.kind == kindNBD && h.setups[s.setup] == nil {
			st := &setup{
				name: s.setup, dir: filepath.Join(h.work, s.setup),
				bin: o.Twinblock, taskset: o.Taskset, pin: pin, size: o.Size, startTimeout: o.StartTimeout,
			}
			if mode, ok := strings.CutPrefix(s.setup, "wan-"); ok {
				st.mode, st.wanLatency = mode, o.WANLatency
			} else {
				st.mode = loopbackModes[s.setup] // "" for standalone
			}
			h.setups[s.setup] = st
		}
	}
	return h, nil
}

// selectRows keeps the rows named in keys (all when keys is empty).
func selectRows(all []rowSpec, keys []string) ([]rowSpec, error) {
	if len(keys) == 0 {
		return all, nil
	}
	var known []string
	for _, s := range all {
		known = append(known, s.key)
	}
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return nil, fmt.Errorf("%w: row %q (known: %s)", ErrOptions, k, strings.Join(known, ", "))
		}
	}
	var out []rowSpec
	for _, s := range all {
		if slices.Contains(keys, s.key) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (h *harness) note(format string, args ...any) {
	h.rep.Notes = append(h.rep.Notes, fmt.Sprintf(format, args...))
}

func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.o.Progress, format+"\n", args...)
}

// describe says how a row's sample is taken, for the report.
func (h *harness) describe(s rowSpec) string {
	switch s.kind {
	case kindPsync:
		files := make([]string, s.streams)
		for i := range files {
			files[i] = fmt.Sprintf("DIR/stream%d.dat", i+1)
		}
		return fmt.Sprintf("`%s` (p50/p99 = write clat + fdatasync latency percentiles)", quoteArgs(append([]string{"fio"}, PsyncArgs(files, h.o.Size, h.o.Runtime, h.o.RampTime)...)))
	case kindRTT:
		return "in process: 20,000 round trips of 64 bytes on one 127.0.0.1 TCP connection after 1,000 unmeasured"
	case kindAppend:
		return fmt.Sprintf("in process: %d appender goroutine(s), each calling journal.Append (4 KiB write op, waits until durable) in a loop on a new journal in DIR, checkpoint + trim every %d records; ramp %s, then %s measured", s.appenders, checkpointEvery, h.o.RampTime, h.o.Runtime)
	case kindNBD:
		pin := ""
		if p := h.rep.Settings.Pinning; p != nil {
			pin = "taskset -c " + p.Client + " "
		}
		return fmt.Sprintf("`%sfio %s` against the %s setup", pin, quoteArgs(nbdArgs("nbd+unix:///vol0?socket=PRIMARY/nbd.sock", s.iodepth, h.o.Size, h.o.Runtime, h.o.RampTime)), s.setup)
	}
	return ""
}

// nbdArgs is fio's command line for 4 KiB random writes at iodepth over NBD.
func nbdArgs(uri string, iodepth int, size int64, runtime, ramp time.Duration) []string {
	a := []string{
		"--name=4k-randwrite-qd" + strconv.Itoa(iodepth),
		"--ioengine=nbd", "--uri=" + uri,
		"--rw=randwrite", "--bs=4k", "--iodepth=" + strconv.Itoa(iodepth),
		"--size=" + strconv.FormatInt(size, 10),
		// The random map only costs client CPU, which on two cores is
		// taken from the server under test.
		"--norandommap",
		"--time_based", "--runtime=" + fioDuration(runtime),
		"--percentile_list=50:99", "--output-format=json",
	}
	if ramp > 0 {
		a = append(a, "--ramp_time="+fioDuration(ramp))
	}
	return a
}

// run makes the setups, takes every sample and computes the targets.
func (h *harness) run(ctx context.Context, targets func(*Report) []Target) (rep *Report, err error) {
	defer func() {
		for _, st := range h.setups {
			st.stop()
		}
		if h.o.Keep {
			h.progress("kept work directory %s", h.work)
		} else {
			os.RemoveAll(h.work)
		}
		for _, row := range h.rep.Rows {
			row.computeMedian()
		}
		h.rep.Targets = targets(h.rep)
		h.rep.Machine.LoadEnd = bench.LoadAvg()
		rep = h.rep
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err == nil {
			for _, row := range h.rep.Rows {
				if row.OK < len(row.Samples) || len(row.Samples) == 0 {
					err = fmt.Errorf("%w: row %s: %d of %d samples ok", ErrSamples, row.Key, row.OK, len(row.Samples))
					break
				}
			}
		}
	}()
	h.prepare(ctx)
	for round := 1; round <= h.o.Repeat && ctx.Err() == nil; round++ {
		for _, g := range h.groups() {
			if ctx.Err() != nil {
				break
			}
			h.runGroup(ctx, round, g)
		}
	}
	return h.rep, nil
}

// group is what runs back to back within a round: one non-daemon row, or
// every row of one setup (started once for them).
type group struct {
	setup string
	specs []rowSpec
}

func (h *harness) groups() []group {
	var gs []group
	idx := map[string]int{}
	for _, s := range h.specs {
		if s.kind != kindNBD {
			gs = append(gs, group{specs: []rowSpec{s}})
			continue
		}
		if i, ok := idx[s.setup]; ok {
			gs[i].specs = append(gs[i].specs, s)
			continue
		}
		idx[s.setup] = len(gs)
		gs = append(gs, group{setup: s.setup, specs: []rowSpec{s}})
	}
	return gs
}

// prepare makes certificates and volumes, and writes every volume once in
// full (1 MiB sequential writes through NBD, replicated like any write) so
// that samples overwrite allocated blocks and no sample pays for the
// backend's first allocation of the file.
func (h *harness) prepare(ctx context.Context) {
	certs := filepath.Join(h.work, "certs")
	var certErr error
	for _, name := range setupNames {
		st := h.setups[name]
		if st == nil || ctx.Err() != nil {
			continue
		}
		if st.paired() && certErr == nil {
			if _, err := os.Stat(certs); err != nil {
				_, certErr = runCommand(ctx, commandTimeout, h.o.Twinblock, "certs", "pair", "--out", certs, "--nodes", "a,b")
			}
		}
		if st.paired() && certErr != nil {
			h.broken[name] = certErr
			continue
		}
		h.progress("setup %s: create and fill %s", name, bench.FormatBytes(h.o.Size))
		err := st.create(ctx, certs)
		if err == nil {
			err = st.start(ctx)
		}
		if err == nil {
			if h.rep.Setups == nil {
				h.rep.Setups = map[string][]string{}
			}
			h.rep.Setups[name] = st.commands()
			fill := fioCmd{
				Fio: h.o.Fio, Dir: h.work, Timeout: time.Minute + time.Duration(h.o.Size/(16<<20))*time.Second,
				Args: []string{"--name=fill", "--ioengine=nbd", "--uri=" + st.URI(), "--rw=write", "--bs=1m", "--iodepth=8",
					"--size=" + strconv.FormatInt(h.o.Size, 10), "--output-format=json"},
			}
			var data []byte
			if data, err = fill.run(ctx); err == nil {
				_, err = bench.ParseFio(data)
			}
			if err == nil {
				err = st.check()
			}
		}
		if serr := st.stop(); err == nil {
			err = serr
		}
		if err != nil {
			h.broken[name] = fmt.Errorf("setup %s: %w", name, err)
			h.progress("setup %s failed: %v", name, err)
		}
	}
}

// snapshot is the machine's CPU and disk counters at one instant.
type snapshot struct {
	cpu  []cpuTimes
	disk diskCounters
}

func (h *harness) snapshot() snapshot {
	var s snapshot
	s.cpu, _ = readCPUTimes()
	if h.diskOK {
		s.disk, _ = readDisk(h.diskMajor, h.diskMinor)
	}
	return s
}

// annotate records on smp what the CPUs and the disk did since before.
func (h *harness) annotate(smp *Sample, before snapshot) {
	after := h.snapshot()
	smp.CPU = cpuUse(before.cpu, after.cpu)
	smp.Disk = diskUse(before.disk, after.disk)
}

// settle settles the run's work directory, which holds every volume,
// journal and in-process journal of the run (and fio's psync files, which
// fio invalidates itself as well). A failure to drop the cache is noted
// once in the report: the sample is still taken, from a warmer cache.
func (h *harness) settle() {
	if err := settle(h.work); err != nil && !h.dropNoted {
		h.dropNoted = true
		h.note("Dropping the page cache before a sample failed (%v): samples may start with the files cached by the sample before.", err)
	}
}

func (h *harness) record(key string, smp Sample) {
	row := h.rows[key]
	row.Samples = append(row.Samples, smp)
	if smp.Measure != nil {
		m := smp.Measure
		extra := ""
		if m.PerSync > 0 {
			extra = fmt.Sprintf(", %.1f records/sync", m.PerSync)
		}
		if smp.CPU != nil {
			extra += "; " + smp.CPU.String()
		}
		if smp.Disk != nil {
			extra += "; " + smp.Disk.String()
		}
		h.progress("round %d %-16s %s %s, p50 %s, p99 %s%s", smp.Round, key, bench.FormatCount(m.Rate), row.Unit, bench.FormatLatency(m.P50), bench.FormatLatency(m.P99), extra)
	} else {
		h.progress("round %d %-16s failed: %s", smp.Round, key, smp.Error)
	}
}

func (h *harness) fail(round int, s rowSpec, err error) {
	h.record(s.key, Sample{Round: round, Start: time.Now(), Error: err.Error()})
}

func (h *harness) runGroup(ctx context.Context, round int, g group) {
	if g.setup == "" {
		s := g.specs[0]
		h.settle()
		smp := Sample{Round: round, Start: time.Now()}
		before := h.snapshot()
		var m Measure
		var err error
		switch s.kind {
		case kindPsync:
			m, smp.Streams, err = h.psync(ctx, s.streams)
		case kindRTT:
			m, err = LoopbackRTT(ctx, RTTOptions{})
		case kindAppend:
			m, err = AppendLoad(ctx, AppendOptions{Dir: h.work, Appenders: s.appenders, Runtime: h.o.Runtime, Ramp: h.o.RampTime})
		}
		if err != nil {
			smp.Error = err.Error()
		} else {
			smp.Measure = &m
			h.annotate(&smp, before)
		}
		if ctx.Err() == nil || err == nil {
			h.record(s.key, smp)
		}
		return
	}
	if err := h.broken[g.setup]; err != nil {
		// One failed sample says why; more would repeat it.
		for _, s := range g.specs {
			if len(h.rows[s.key].Samples) == 0 {
				h.fail(round, s, err)
			}
		}
		return
	}
	st := h.setups[g.setup]
	h.settle()
	if err := st.start(ctx); err != nil {
		if ctx.Err() == nil {
			for _, s := range g.specs {
				h.fail(round, s, err)
			}
		}
		return
	}
	defer func() {
		if err := st.stop(); err != nil {
			h.progress("%v", err)
		}
	}()
	for _, s := range g.specs {
		if ctx.Err() != nil {
			return
		}
		h.settle()
		smp := Sample{Round: round, Start: time.Now()}
		before := h.snapshot()
		c := fioCmd{Fio: h.o.Fio, Taskset: h.o.Taskset, CPUs: st.pin.Client, Dir: h.work,
			Args: nbdArgs(st.URI(), s.iodepth, h.o.Size, h.o.Runtime, h.o.RampTime), Timeout: fioTimeout(h.o.Runtime, h.o.RampTime)}
		data, err := c.run(ctx)
		var r bench.Result
		if err == nil {
			r, err = bench.ParseFio(data)
		}
		if cerr := st.check(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if err == nil && st.paired() {
			// A sample taken while the link was down measured a
			// standalone volume: it must not pass for the pair.
			if v, serr := st.status(ctx, st.aCfg); serr != nil {
				err = serr
			} else if v.Connection != ConnConnected {
				err = fmt.Errorf("durable: %s: link %s after the sample (%s)", st.name, v.Connection, v.ConnectionError)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			smp.Error = err.Error()
		} else {
			m := nbdMeasure(r)
			smp.Measure = &m
			h.annotate(&smp, before)
		}
		h.record(s.key, smp)
	}
}

// psync runs n concurrent fio psync fdatasync streams on n files in the
// work directory (laid out by fio on first use and kept across rounds).
func (h *harness) psync(ctx context.Context, n int) (Measure, []PsyncResult, error) {
	files := make([]string, n)
	for i := range files {
		files[i] = filepath.Join(h.work, fmt.Sprintf("stream%d.dat", i+1))
	}
	c := fioCmd{Fio: h.o.Fio, Dir: h.work, Args: PsyncArgs(files, h.o.Size, h.o.Runtime, h.o.RampTime),
		// Laying out the files happens before the timed part.
		Timeout: fioTimeout(h.o.Runtime, h.o.RampTime) + time.Duration(int64(n)*h.o.Size/(16<<20))*time.Second}
	data, err := c.run(ctx)
	if err != nil {
		return Measure{}, nil, err
	}
	rs, err := ParsePsync(data)
	if err != nil {
		return Measure{}, nil, err
	}
	if len(rs) != n {
		return Measure{}, nil, fmt.Errorf("%w: %d jobs, want %d", ErrFioOutput, len(rs), n)
	}
	return streamsMeasure(rs), rs, nil
}
