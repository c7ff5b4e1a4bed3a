package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"
)

// Server names, in the order each round visits them.
const (
	ServerTwinblock = "twinblock"
	ServerNbdkit    = "nbdkit"
	ServerGoNBD     = "gonbd"
)

// ServerNames lists every server the harness knows, in round order.
var ServerNames = []string{ServerTwinblock, ServerNbdkit, ServerGoNBD}

// Baseline is the server every other one is compared with.
const Baseline = ServerNbdkit

// Options configure a harness run. Zero values take the defaults noted.
type Options struct {
	Servers    []string // subset of ServerNames; empty means all
	Workloads  []string // names from Workloads; empty means all
	Transports []string // "tcp", "unix"; empty means both

	Runtime  time.Duration // measured time per sample; 0 means 10 s
	RampTime time.Duration // unmeasured warm-up before it; 0 means none
	Repeat   int           // samples per cell; 0 means 3
	Size     int64         // volume size and fio region in bytes; 0 means 1 GiB

	Fio           string   // fio binary; "" means "fio"
	Nbdkit        string   // nbdkit binary; "" means "nbdkit"
	Twinblock     string   // twinblock binary; required when twinblock runs
	TwinblockArgs []string // extra `serve` arguments (e.g. profiling)
	StartTimeout  time.Duration

	// Progress gets one line per fio run; nil discards.
	Progress io.Writer
	// Command is the command line recorded in the report.
	Command string
}

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Runtime == 0 {
		c.Runtime = 10 * time.Second
	}
	if c.Repeat == 0 {
		c.Repeat = 3
	}
	if c.Size == 0 {
		c.Size = 1 << 30
	}
	if c.Fio == "" {
		c.Fio = "fio"
	}
	if c.Nbdkit == "" {
		c.Nbdkit = "nbdkit"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = defaultStartTimeout
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	switch {
	case c.Runtime < 0 || c.RampTime < 0:
		return c, fmt.Errorf("%w: runtime %s and ramp time %s must not be negative", ErrOptions, c.Runtime, c.RampTime)
	case c.Repeat < 0:
		return c, fmt.Errorf("%w: repeat %d", ErrOptions, c.Repeat)
	case c.Size < 1<<20 || c.Size%(1<<20) != 0:
		// The 1 MiB sequential workload needs whole blocks.
		return c, fmt.Errorf("%w: size %d: want a positive multiple of 1 MiB", ErrOptions, c.Size)
	}
	if len(c.Servers) == 0 {
		c.Servers = ServerNames
	}
	for _, s := range c.Servers {
		if !slices.Contains(ServerNames, s) {
			return c, fmt.Errorf("%w: server %q (known: twinblock, nbdkit, gonbd)", ErrUnknown, s)
		}
	}
	// Keep round order whatever order the flag gave, and drop repeats.
	var servers []string
	for _, s := range ServerNames {
		if slices.Contains(c.Servers, s) {
			servers = append(servers, s)
		}
	}
	c.Servers = servers
	if slices.Contains(c.Servers, ServerTwinblock) && c.Twinblock == "" {
		return c, fmt.Errorf("%w: twinblock binary not set", ErrOptions)
	}
	if len(c.Workloads) == 0 {
		c.Workloads = workloadNames()
	}
	for _, w := range c.Workloads {
		if _, err := WorkloadByName(w); err != nil {
			return c, err
		}
	}
	if len(c.Transports) == 0 {
		c.Transports = []string{string(TCP), string(Unix)}
	}
	for _, t := range c.Transports {
		if _, err := ParseTransport(t); err != nil {
			return c, err
		}
	}
	return c, nil
}

// prefill writes the whole region of an endpoint once before the first sample.
var prefill = Workload{Name: "prefill", RW: "write", BlockSize: 1 << 20, IODepth: 8}

// Run starts the servers, runs every (workload, transport, server) cell
// Repeat times and returns the report. Rounds are the outer loop and
// servers the inner one (A, B, C, A, B, C, …), so slow drift of a noisy
// machine lands on every server alike. A failed sample is recorded and the
// run goes on; Run then returns the report together with an error wrapping
// ErrSamples. A server that fails to start ends the run with an error
// wrapping ErrServerStart. When ctx is cancelled during the measurements,
// Run returns the partial report (medians of the samples so far) with
// ctx's error. Everything started is stopped before Run returns.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(o.Fio); err != nil {
		return nil, fmt.Errorf("%w: fio: %w (Debian: apt-get install fio)", ErrOptions, err)
	}
	dir, err := os.MkdirTemp("", "tbbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	rep = &Report{
		Date:    time.Now().UTC(),
		Command: o.Command,
		Machine: machineInfo(ctx, o),
		Settings: Settings{
			Runtime: o.Runtime, RampTime: o.RampTime, Repeat: o.Repeat, Size: o.Size,
			Servers: o.Servers, Workloads: o.Workloads, Transports: o.Transports,
		},
	}

	var servers []Server
	defer func() {
		// Stop in reverse start order; a server that will not stop is
		// worth a line in the progress output, not a lost report.
		for i := len(servers) - 1; i >= 0; i-- {
			if serr := servers[i].Stop(); serr != nil {
				fmt.Fprintf(o.Progress, "stopping %s: %v\n", servers[i].Name(), serr)
			}
		}
	}()
	for _, name := range o.Servers {
		s, info := newServer(name, o, dir)
		fmt.Fprintf(o.Progress, "starting %s\n", name)
		if err := s.Start(ctx); err != nil {
			s.Stop()
			return nil, err
		}
		servers = append(servers, s)
		rep.Servers = append(rep.Servers, info(s))
	}

	type key struct{ w, t, s string }
	cells := map[key]*Cell{}
	for _, w := range o.Workloads {
		for _, t := range o.Transports {
			for _, s := range o.Servers {
				c := &Cell{Workload: w, Transport: Transport(t), Server: s}
				cells[key{w, t, s}] = c
				rep.Cells = append(rep.Cells, c)
			}
		}
	}
	// Write the whole region of every endpoint once before measuring. Reads
	// then return data rather than holes (which a sparse server answers
	// without touching memory), and every write sample overwrites
	// allocated memory on every server alike: without this, nbdkit's
	// separate unix-socket process would pay first-touch allocation that
	// the shared disk of twinblock and go-nbd already paid over TCP.
	for _, s := range servers {
		for _, t := range o.Transports {
			fmt.Fprintf(o.Progress, "prefilling %s over %s (%s)\n", s.Name(), t, fmtBytes(o.Size))
			job := FioJob{Fio: o.Fio, URI: s.URI(Transport(t)), Size: o.Size, Dir: dir, Workload: prefill}
			if _, err := job.Run(ctx); err != nil {
				if cerr := s.Check(); cerr != nil {
					err = fmt.Errorf("%w (fio: %w)", cerr, err)
				}
				return nil, fmt.Errorf("prefilling %s over %s: %w", s.Name(), t, err)
			}
		}
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf(
		"Before the first sample, fio wrote the whole %s region of every server over every transport once (1 MiB sequential writes, queue depth 8): reads return data rather than holes, and every write overwrites memory the server has already allocated.",
		fmtBytes(o.Size)))

	total := o.Repeat * len(rep.Cells)
	n := 0
	failed := 0
	for round := 1; round <= o.Repeat; round++ {
		for _, wname := range o.Workloads {
			w, _ := WorkloadByName(wname)
			for _, t := range o.Transports {
				for _, s := range servers {
					if err := ctx.Err(); err != nil {
						return rep.finish(), err
					}
					n++
					c := cells[key{wname, t, s.Name()}]
					smp := Sample{Round: round, Start: time.Now().UTC()}
					res, err := runSample(ctx, o, s, Transport(t), w, dir)
					if err != nil {
						if ctx.Err() != nil {
							return rep.finish(), ctx.Err()
						}
						failed++
						smp.Error = err.Error()
						fmt.Fprintf(o.Progress, "[%d/%d] round %d %s %s %s: FAILED: %v\n", n, total, round, wname, t, s.Name(), err)
					} else {
						smp.Result = &res
						fmt.Fprintf(o.Progress, "[%d/%d] round %d %s %s %s: %.0f IOPS %.1f MB/s p50 %s p99 %s\n",
							n, total, round, wname, t, s.Name(), res.IOPS, res.MBps, FormatLatency(res.P50), FormatLatency(res.P99))
					}
					c.Samples = append(c.Samples, smp)
				}
			}
		}
	}
	rep.finish()
	if failed > 0 {
		return rep, fmt.Errorf("%w: %d of %d", ErrSamples, failed, total)
	}
	return rep, nil
}

// finish computes the medians of every cell from the samples so far.
func (r *Report) finish() *Report {
	for _, c := range r.Cells {
		c.computeMedian()
	}
	r.Machine.LoadEnd = LoadAvg()
	return r
}

// runSample runs one fio sample.
func runSample(ctx context.Context, o Options, s Server, t Transport, w Workload, dir string) (Result, error) {
	if err := s.Check(); err != nil {
		return Result{}, err
	}
	job := FioJob{Fio: o.Fio, URI: s.URI(t), Size: o.Size, Dir: dir, Workload: w, Runtime: o.Runtime, RampTime: o.RampTime}
	res, err := job.Run(ctx)
	if err != nil {
		// Say whether the server died under the load: that is the
		// interesting part, not fio's "connection reset".
		if cerr := s.Check(); cerr != nil {
			return Result{}, fmt.Errorf("%w (fio: %w)", cerr, err)
		}
		return Result{}, err
	}
	return res, nil
}

// newServer builds the launcher for name and a function describing it
// once started.
func newServer(name string, o Options, dir string) (Server, func(Server) ServerInfo) {
	switch name {
	case ServerTwinblock:
		s := NewTwinblockServer(TwinblockOptions{Binary: o.Twinblock, Size: o.Size, Dir: dir, StartTimeout: o.StartTimeout, ExtraArgs: o.TwinblockArgs})
		return s, func(Server) ServerInfo {
			return ServerInfo{Name: name, Description: "twinblock serve, mem backend, TCP and unix socket in one process", Commands: []string{s.CommandLine()}}
		}
	case ServerNbdkit:
		s := NewNbdkitServer(NbdkitOptions{Binary: o.Nbdkit, Size: o.Size, Dir: dir, StartTimeout: o.StartTimeout})
		return s, func(Server) ServerInfo {
			return ServerInfo{Name: name, Description: "nbdkit memory plugin, default threads; one process for TCP and one for the unix socket", Commands: s.CommandLines()}
		}
	default:
		s := NewGoNBDServer(GoNBDOptions{Size: o.Size, Dir: dir})
		return s, func(Server) ServerInfo {
			return ServerInfo{Name: name, Description: "go-nbd " + goNBDVersion() + " server.Handle + backend.NewMemoryBackend, in the harness process, SupportsMultiConn, one goroutine per connection"}
		}
	}
}
