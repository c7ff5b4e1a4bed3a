package resync

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
)

// Goals of issue 5's Performance section.
const (
	// WireGoalPercent: bytes on the wire at most this share of the volume
	// (with 1% of the chunks changed).
	WireGoalPercent = 1.5
	// TimeGoal: the resync at most this many times the time to read the
	// volume once.
	TimeGoal = 1.5
)

// ReadMeasure is one baseline read.
type ReadMeasure struct {
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	MBps    float64 `json:"mb_per_s"` // 10^6 bytes per second
}

// ResyncMeasure is one resync pass.
type ResyncMeasure struct {
	// Seconds is the engine's own pass time (resync.elapsed_seconds);
	// WallSeconds runs from the primary's start to the harness seeing the
	// peer UpToDate (daemon start, TLS handshake, 100 ms status polls).
	Seconds     float64 `json:"seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	TotalBytes  uint64  `json:"total_bytes"`
	SentBytes   uint64  `json:"sent_bytes"` // chunk data, before compression
	Full        bool    `json:"full"`
	// Wire* are the proxy's counters: every byte of the peer link (TLS
	// included), primary→secondary and back.
	WireBytes       int64 `json:"wire_bytes"`
	WireToSecondary int64 `json:"wire_to_secondary"`
	WireToPrimary   int64 `json:"wire_to_primary"`
	// Link* are the primary's own counters (frames after compression,
	// before TLS).
	LinkBytesSent uint64  `json:"link_bytes_sent"`
	LinkBytesRecv uint64  `json:"link_bytes_received"`
	CompareMBps   float64 `json:"compare_mb_per_s"`
	// CPUBusy is the share of all CPUs' time spent busy from the primary's
	// start to the end of the pass (-1: unknown).
	CPUBusy float64 `json:"cpu_busy"`
	// DaemonCPUSeconds is the CPU time (user + system) both daemons used
	// from their start to the end of the pass (-1: unknown): what the
	// resync itself cost, whatever else ran on the machine.
	DaemonCPUSeconds float64 `json:"daemon_cpu_seconds"`
}

// Round is one round: b rewritten, the baselines and one resync.
type Round struct {
	Index        int          `json:"round"`
	Start        time.Time    `json:"start"`
	ResyncFirst  bool         `json:"resync_first,omitempty"`
	ChangedBytes int64        `json:"changed_bytes"`
	ReadDirect   *ReadMeasure `json:"read_direct,omitempty"`
	// ReadDirectQD4 reads with 4 requests in flight, as many as the
	// engine's hash requests.
	ReadDirectQD4 *ReadMeasure   `json:"read_direct_qd4,omitempty"`
	ReadBuffered  *ReadMeasure   `json:"read_buffered,omitempty"`
	ReadBoth      *ReadMeasure   `json:"read_both,omitempty"`
	Resync        *ResyncMeasure `json:"resync,omitempty"`
	Commands      []string       `json:"commands,omitempty"`
	Error         string         `json:"error,omitempty"`
}

// ok reports whether the round measured everything and checked out.
func (r *Round) ok() bool { return r.Error == "" && r.Resync != nil && r.ReadBuffered != nil }

// readMethod is one way the baselines read the primary's image once.
type readMethod struct {
	name string
	get  func(*Round) *ReadMeasure
}

var readMethods = []readMethod{
	{"O_DIRECT, one request at a time", func(r *Round) *ReadMeasure { return r.ReadDirect }},
	{"O_DIRECT, 4 requests in flight", func(r *Round) *ReadMeasure { return r.ReadDirectQD4 }},
	{"through the page cache, one request at a time", func(r *Round) *ReadMeasure { return r.ReadBuffered }},
}

// readOnceMethod picks the target's "time to read the volume once": of
// the read methods every round measured, the one with the smallest median
// (the fastest way this machine has to read the volume; a minimum of
// medians, not of single samples, so one lucky sample does not set it).
func readOnceMethod(rounds []*Round) (readMethod, float64, bool) {
	var best readMethod
	bestMed, found := 0.0, false
	for _, m := range readMethods {
		var xs []float64
		for _, r := range rounds {
			if x := m.get(r); x != nil && x.Seconds > 0 {
				xs = append(xs, x.Seconds)
			}
		}
		if len(xs) == 0 || len(xs) != len(rounds) {
			continue
		}
		if med := bench.Median(xs); !found || med < bestMed {
			best, bestMed, found = m, med, true
		}
	}
	return best, bestMed, found
}

func (r *Round) summary() string {
	s := fmt.Sprintf("round %d:", r.Index)
	if m := r.ReadDirect; m != nil {
		s += fmt.Sprintf(" read O_DIRECT %.2fs (%.0f MB/s),", m.Seconds, m.MBps)
	}
	if m := r.ReadDirectQD4; m != nil {
		s += fmt.Sprintf(" O_DIRECT 4 in flight %.2fs (%.0f MB/s),", m.Seconds, m.MBps)
	}
	if m := r.ReadBuffered; m != nil {
		s += fmt.Sprintf(" read buffered %.2fs (%.0f MB/s),", m.Seconds, m.MBps)
	}
	if m := r.ReadBoth; m != nil {
		s += fmt.Sprintf(" both images %.2fs,", m.Seconds)
	}
	if m := r.Resync; m != nil {
		s += fmt.Sprintf(" resync %.2fs (wall %.2fs), wire %s (%.3f%% of the volume), sent %s",
			m.Seconds, m.WallSeconds, bench.FormatCount(float64(m.WireBytes)), 100*float64(m.WireBytes)/float64(max(m.TotalBytes, 1)),
			bench.FormatCount(float64(m.SentBytes)))
	}
	if r.Error != "" {
		s += " ERROR: " + r.Error
	}
	return s
}

// Medians are per-field medians over the rounds that succeeded.
type Medians struct {
	Rounds               int     `json:"rounds"`
	ReadDirectSeconds    float64 `json:"read_direct_seconds,omitempty"`
	ReadDirectQD4Seconds float64 `json:"read_direct_qd4_seconds,omitempty"`
	ReadBufferedSeconds  float64 `json:"read_buffered_seconds"`
	ReadOnceSeconds      float64 `json:"read_once_seconds"`
	ReadOnceMethod       string  `json:"read_once_method"`
	ReadBothSeconds      float64 `json:"read_both_seconds"`
	ResyncSeconds        float64 `json:"resync_seconds"`
	ResyncWallSeconds    float64 `json:"resync_wall_seconds"`
	WireBytes            float64 `json:"wire_bytes"`
	SentBytes            float64 `json:"sent_bytes"`
	CompareMBps          float64 `json:"compare_mb_per_s"`
	CPUBusy              float64 `json:"cpu_busy"`
	DaemonCPUSeconds     float64 `json:"daemon_cpu_seconds"`
}

// Target is one goal of the issue, checked against this run's medians.
type Target struct {
	Name  string  `json:"name"`
	Goal  float64 `json:"goal"` // at most
	Value float64 `json:"value"`
	Valid bool    `json:"valid"`
	Unit  string  `json:"unit"` // "×" or "%"
	// Inputs says what Value was computed from; PerRound is the figure of
	// each successful round on its own.
	Inputs   string    `json:"inputs"`
	PerRound []float64 `json:"per_round,omitempty"`
}

// Pass reports whether a valid target is met.
func (t Target) Pass() bool { return t.Valid && t.Value <= t.Goal }

// Machine describes where the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu,omitempty"`
	Memory    string `json:"memory,omitempty"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Disk      string `json:"disk"` // df -PT of the work directory
	LoadStart string `json:"load_start,omitempty"`
	LoadEnd   string `json:"load_end,omitempty"`
}

// Settings are the options that shape the numbers.
type Settings struct {
	Size          int64   `json:"size_bytes"`
	ChunkSize     int64   `json:"chunk_size"`
	Changed       float64 `json:"changed_share"`
	ChangedChunks int     `json:"changed_chunks"`
	Repeat        int     `json:"repeat"`
	Cache         string  `json:"cache"`
	Dir           string  `json:"dir"`
	Seed          uint64  `json:"seed"`
	ReadRequest   int64   `json:"read_request_bytes"`
}

// Report is one run: NAME.json holds it.
type Report struct {
	Name     string    `json:"name"`
	Title    string    `json:"title"`
	Date     time.Time `json:"date"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Rounds   []*Round  `json:"rounds"`
	Medians  *Medians  `json:"medians,omitempty"`
	Targets  []Target  `json:"targets"`
	// ResyncOverReadBoth is the median resync time over the time to read
	// both images at once (what a pair sharing one disk must read): context
	// for the time target, not a goal.
	ResyncOverReadBoth float64  `json:"resync_over_read_both,omitempty"`
	Notes              []string `json:"notes,omitempty"`
}

func (r *Report) failedRounds() int {
	n := 0
	for _, rd := range r.Rounds {
		if !rd.ok() {
			n++
		}
	}
	return n
}

// finish computes the medians, the targets and the notes.
func (r *Report) finish() {
	var good []*Round
	for _, rd := range r.Rounds {
		if rd.ok() {
			good = append(good, rd)
		}
	}
	size := float64(r.Settings.Size)
	wire := Target{Name: "bytes on the wire / volume size", Goal: WireGoalPercent, Unit: "%",
		Inputs: "no successful round"}
	tm := Target{Name: "resync time / time to read the volume once", Goal: TimeGoal, Unit: "×",
		Inputs: "no successful round"}
	if len(good) > 0 {
		med := func(f func(*Round) float64) float64 { return bench.MedianFunc(good, f) }
		m := &Medians{
			Rounds:              len(good),
			ReadBufferedSeconds: med(func(rd *Round) float64 { return rd.ReadBuffered.Seconds }),
			ResyncSeconds:       med(func(rd *Round) float64 { return rd.Resync.Seconds }),
			ResyncWallSeconds:   med(func(rd *Round) float64 { return rd.Resync.WallSeconds }),
			WireBytes:           med(func(rd *Round) float64 { return float64(rd.Resync.WireBytes) }),
			SentBytes:           med(func(rd *Round) float64 { return float64(rd.Resync.SentBytes) }),
			CompareMBps:         med(func(rd *Round) float64 { return rd.Resync.CompareMBps }),
			CPUBusy:             med(func(rd *Round) float64 { return rd.Resync.CPUBusy }),
			DaemonCPUSeconds:    med(func(rd *Round) float64 { return rd.Resync.DaemonCPUSeconds }),
		}
		if good[0].ReadDirect != nil {
			m.ReadDirectSeconds = med(func(rd *Round) float64 {
				if rd.ReadDirect == nil {
					return 0
				}
				return rd.ReadDirect.Seconds
			})
		}
		if good[0].ReadDirectQD4 != nil {
			m.ReadDirectQD4Seconds = med(func(rd *Round) float64 {
				if rd.ReadDirectQD4 == nil {
					return 0
				}
				return rd.ReadDirectQD4.Seconds
			})
		}
		if good[0].ReadBoth != nil {
			m.ReadBothSeconds = med(func(rd *Round) float64 {
				if rd.ReadBoth == nil {
					return 0
				}
				return rd.ReadBoth.Seconds
			})
		}
		method, once, haveOnce := readOnceMethod(good)
		if haveOnce {
			m.ReadOnceSeconds, m.ReadOnceMethod = once, method.name
		}
		r.Medians = m
		wire.Valid, wire.Value = true, 100*m.WireBytes/size
		wire.Inputs = fmt.Sprintf("%s bytes (median; %s of chunk data) / %s; %.2f%% of the chunks rewritten",
			bench.FormatCount(m.WireBytes), bench.FormatCount(m.SentBytes), bench.FormatBytes(r.Settings.Size), 100*r.Settings.Changed)
		if m.ReadOnceSeconds > 0 {
			tm.Valid, tm.Value = true, m.ResyncSeconds/m.ReadOnceSeconds
			tm.Inputs = fmt.Sprintf("%.2f s / %.2f s (read %s)", m.ResyncSeconds, m.ReadOnceSeconds, m.ReadOnceMethod)
		}
		if m.ReadBothSeconds > 0 {
			r.ResyncOverReadBoth = m.ResyncSeconds / m.ReadBothSeconds
		}
		for _, rd := range good {
			wire.PerRound = append(wire.PerRound, 100*float64(rd.Resync.WireBytes)/size)
			if haveOnce {
				tm.PerRound = append(tm.PerRound, rd.Resync.Seconds/method.get(rd).Seconds)
			}
		}
	}
	r.Targets = []Target{wire, tm}
	r.Notes = r.notes()
}

func (r *Report) notes() []string {
	n := []string{
		"Both nodes run on this machine and their images share one disk, so the resync reads 2 × the volume from it (the primary's copy and the secondary's, at the same time); on two machines each node reads only its own. \"Read both images at once\" is the least this machine must do for that, shown for context; the target compares with reading the volume once, as the issue says.",
		"Each rewritten chunk is 64 KiB of fresh random data (every 4 KiB block of it differs), so sent_bytes must equal the rewritten bytes exactly; random data does not compress, so the wire carries at least as much. A round is failed when sent_bytes differs or the rewritten chunks of the two images still differ after the pass.",
		"The link goes through an in-process bench/proxy (byte-transparent, TLS passes through); its counters are every byte both ways, TLS handshake, heartbeats and hash lists included.",
	}
	if r.Settings.Cache == CacheCold {
		n = append(n, "Page cache: every measurement (each baseline read and each resync) starts after sync + `echo 3 > /proc/sys/vm/drop_caches`, so all of them read from the disk; the daemons' file backend reads through the page cache (no O_DIRECT), like the buffered baseline. \"Read the volume once\" is the fastest of three ways to read the primary's image in 4 MiB requests, by median over the rounds: O_DIRECT one request at a time, O_DIRECT with 4 in flight (as many as the engine's hash requests), and through the page cache one at a time (the kernel's readahead adds its own parallelism). drop_caches empties only this kernel's cache: if the disk is virtual and the host caches it, some \"disk\" reads are served from the host's memory, for the baselines and the resync alike.")
	} else {
		n = append(n, "Page cache: warm. Both images are read into the page cache before every measurement, so no measurement touches the disk: the figures measure hashing and the protocol, and \"read the volume once\" is a buffered read from the page cache.")
	}
	if busy := max(parseLoad(r.Machine.LoadStart), parseLoad(r.Machine.LoadEnd)); busy > float64(r.Machine.NProc) {
		n = append(n, fmt.Sprintf("The machine was busy with other work during the run (load average up to %.1f on %d CPUs, see the top): timings vary from round to round and run to run, and each round's own ratio (under Targets) shows how much. The byte counts do not depend on it.", busy, r.Machine.NProc))
	}
	n = append(n, "The resync time is the engine's own pass time (status resync.elapsed_seconds, from the pass starting on connect to its end); the wall time from starting the primary daemon to seeing the peer UpToDate is in every round's row.")
	return n
}

// fmtKiB writes a size below 1 MiB that is a whole number of KiB as
// "64 KiB", anything else as bench.FormatBytes does.
func fmtKiB(n int64) string {
	if n > 0 && n < 1<<20 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return bench.FormatBytes(n)
}

// parseLoad reads a load average ("3.42"); 0 when unknown.
func parseLoad(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return f
}

func fmtTarget(v float64, unit string) string {
	if unit == "%" {
		return fmt.Sprintf("%.3f%%", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

// TargetTable renders the targets as a markdown table with ✓/✗.
func (r *Report) TargetTable() string {
	var b strings.Builder
	b.WriteString("| target | measured | goal | | from |\n|---|--:|--:|:-:|---|\n")
	for _, t := range r.Targets {
		if !t.Valid {
			fmt.Fprintf(&b, "| %s | – | <= %s | n/a | %s |\n", t.Name, fmtTarget(t.Goal, t.Unit), t.Inputs)
			continue
		}
		mark := "✓"
		if !t.Pass() {
			mark = fmt.Sprintf("✗ (%.0f%% over)", 100*(t.Value-t.Goal)/t.Goal)
		}
		from := t.Inputs
		if len(t.PerRound) > 1 {
			var pr []string
			for _, v := range t.PerRound {
				pr = append(pr, fmtTarget(v, t.Unit))
			}
			from += "; per round: " + strings.Join(pr, ", ")
		}
		fmt.Fprintf(&b, "| %s | %s | <= %s | %s | %s |\n", t.Name, fmtTarget(t.Value, t.Unit), fmtTarget(t.Goal, t.Unit), mark, from)
	}
	return b.String()
}

// MedianTable renders the medians.
func (r *Report) MedianTable() string {
	m := r.Medians
	if m == nil {
		return "no successful round\n"
	}
	size := float64(r.Settings.Size)
	mbps := func(s float64) string {
		if s <= 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f MB/s", size/1e6/s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Medians of %d round(s).\n\n| measurement | time | rate |\n|---|--:|--:|\n", m.Rounds)
	if m.ReadDirectSeconds > 0 {
		fmt.Fprintf(&b, "| read the primary's image once, O_DIRECT | %.2f s | %s |\n", m.ReadDirectSeconds, mbps(m.ReadDirectSeconds))
	}
	if m.ReadDirectQD4Seconds > 0 {
		fmt.Fprintf(&b, "| read the primary's image once, O_DIRECT, 4 requests in flight | %.2f s | %s |\n", m.ReadDirectQD4Seconds, mbps(m.ReadDirectQD4Seconds))
	}
	fmt.Fprintf(&b, "| read the primary's image once, through the page cache | %.2f s | %s |\n", m.ReadBufferedSeconds, mbps(m.ReadBufferedSeconds))
	fmt.Fprintf(&b, "| **read the volume once** (the target's baseline: the fastest of the above) | %.2f s | %s |\n", m.ReadOnceSeconds, mbps(m.ReadOnceSeconds))
	if m.ReadBothSeconds > 0 {
		fmt.Fprintf(&b, "| read both images at once, buffered (context) | %.2f s | %s per image |\n", m.ReadBothSeconds, mbps(m.ReadBothSeconds))
	}
	fmt.Fprintf(&b, "| **resync pass** (engine's elapsed) | %.2f s | %.0f MB/s compared |\n", m.ResyncSeconds, m.CompareMBps)
	fmt.Fprintf(&b, "| resync, wall (primary start → peer UpToDate) | %.2f s | |\n", m.ResyncWallSeconds)
	fmt.Fprintf(&b, "\n| bytes | median | of the volume |\n|---|--:|--:|\n")
	fmt.Fprintf(&b, "| on the wire (proxy, both ways) | %s | %.3f%% |\n", bench.FormatCount(m.WireBytes), 100*m.WireBytes/size)
	fmt.Fprintf(&b, "| chunk data sent (status sent_bytes) | %s | %.3f%% |\n", bench.FormatCount(m.SentBytes), 100*m.SentBytes/size)
	if m.CPUBusy >= 0 {
		fmt.Fprintf(&b, "\nCPU during the resync: the machine's %d CPUs %.0f%% busy (everything running, other users included)", r.Machine.NProc, 100*m.CPUBusy)
		if m.DaemonCPUSeconds >= 0 && m.ResyncWallSeconds > 0 {
			fmt.Fprintf(&b, "; both daemons used %.2f CPU-seconds in %.2f s (%.0f%% of one CPU)", m.DaemonCPUSeconds, m.ResyncWallSeconds, 100*m.DaemonCPUSeconds/m.ResyncWallSeconds)
		}
		b.WriteString(".\n")
	}
	if r.ResyncOverReadBoth > 0 {
		fmt.Fprintf(&b, "Resync time / time to read both images at once: %.2f×.\n", r.ResyncOverReadBoth)
	}
	return b.String()
}

// Table is what the CLI prints: medians, then targets.
func (r *Report) Table() string {
	return r.MedianTable() + "\n" + r.TargetTable()
}

// Met counts the valid targets met, and all targets.
func (r *Report) Met() (met, total int) { return benchutil.Met(r.Targets) }

// Markdown renders NAME.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	rest := fmt.Sprintf(", kernel %s, %s", m.Kernel, m.Go)
	if m.Memory != "" {
		rest = fmt.Sprintf(", %s of RAM", m.Memory) + rest
	}
	benchutil.Head{Title: r.Title, Date: r.Date, Command: r.Command, NProc: m.NProc, CPU: m.CPU,
		Rest: rest, LoadStart: m.LoadStart, LoadEnd: m.LoadEnd}.Write(&b)
	s := r.Settings
	fmt.Fprintf(&b, "- Volume %s; %d of %d chunks of %s (%.2f%%) rewritten with random data on the secondary before each round; %d rounds, medians; page cache %s; seed %d.\n",
		bench.FormatBytes(s.Size), s.ChangedChunks, s.Size/s.ChunkSize, fmtKiB(s.ChunkSize), 100*s.Changed, s.Repeat, s.Cache, s.Seed)
	fmt.Fprintf(&b, "- Disk (`df -PT %s`):\n\n```\n%s\n```\n\n", s.Dir, strings.TrimSpace(m.Disk))
	met, total := r.Met()
	benchutil.WriteResults(&b, met, total, r.TargetTable(), r.MedianTable(), r.Notes)
	b.WriteString("\n## Every round\n\n| round | order | read O_DIRECT | O_DIRECT 4 in flight | read buffered | read both | resync | resync wall | wire bytes | sent bytes | CPU busy | daemons' CPU | note |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	sec := func(m *ReadMeasure) string {
		if m == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f s", m.Seconds)
	}
	for _, rd := range r.Rounds {
		order := "reads, then resync"
		if rd.ResyncFirst {
			order = "resync, then reads"
		}
		rs, wall, wire, sent, cpu, dcpu := "–", "–", "–", "–", "–", "–"
		if x := rd.Resync; x != nil {
			rs, wall = fmt.Sprintf("%.2f s", x.Seconds), fmt.Sprintf("%.2f s", x.WallSeconds)
			wire, sent = bench.FormatCount(float64(x.WireBytes)), bench.FormatCount(float64(x.SentBytes))
			if x.CPUBusy >= 0 {
				cpu = fmt.Sprintf("%.0f%%", 100*x.CPUBusy)
			}
			if x.DaemonCPUSeconds >= 0 {
				dcpu = fmt.Sprintf("%.2f s", x.DaemonCPUSeconds)
			}
		}
		note := strings.ReplaceAll(rd.Error, "|", "\\|")
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rd.Index, order,
			sec(rd.ReadDirect), sec(rd.ReadDirectQD4), sec(rd.ReadBuffered), sec(rd.ReadBoth), rs, wall, wire, sent, cpu, dcpu, note)
	}
	if len(r.Rounds) > 0 && len(r.Rounds[0].Commands) > 0 {
		b.WriteString("\nDaemons (secondary, then primary; WORK is the run's work directory), each round after `twinblock create --existing` of both:\n\n")
		for _, c := range r.Rounds[0].Commands {
			fmt.Fprintf(&b, "- `%s`\n", c)
		}
	}
	fmt.Fprintf(&b, "\nEvery round is also in `%s.json`.\n", r.Name)
	return b.String()
}

// WriteFiles writes NAME.md and NAME.json into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	return benchutil.WriteFiles(dir, r.Name, r, r.Markdown())
}
