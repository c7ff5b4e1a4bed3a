package durable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twinblock/twinblock/bench"
	"github.com/twinblock/twinblock/bench/benchutil"
)

// process is one long-running child (a twinblock daemon or proxy): the
// shared bench.Process plus its command line, for errors and the report.
type process struct {
	*bench.Process
	argv []string
}

// startProcess starts argv with bench.StartProcess: the child runs in its
// own process group (a terminal Ctrl-C reaches only the harness, which
// stops children in order) and gets SIGKILL if the harness dies
// (Pdeathsig survives the exec that taskset does), so an interrupted run
// leaves nothing behind.
func startProcess(name string, argv []string) (*process, error) {
	bp, err := bench.StartProcess(name, argv)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %w", ErrStart, name, quoteArgs(argv), err)
	}
	return &process{Process: bp, argv: argv}, nil
}

// exitError describes how the process ended, with its last output.
func (p *process) exitError() error {
	return fmt.Errorf("%w: %s exited (%v): %s; output: %s", ErrStart, p.Name, p.Err(), quoteArgs(p.argv), bench.OneLine(p.Output.String()))
}

// stopGrace is how long a child may take to exit after SIGTERM: a daemon
// answers what is in flight, checkpoints and flushes its volume first.
const stopGrace = 15 * time.Second

// stop sends SIGTERM and, if the process has not exited after grace,
// SIGKILL. Safe on nil and on a process that already exited.
func (p *process) stop(grace time.Duration) error {
	if p == nil || !p.Stop(grace) {
		return nil
	}
	return fmt.Errorf("durable: %s did not exit within %s of SIGTERM; killed", p.Name, grace)
}

// runCommand runs a short command (twinblock create, certs, status, df)
// under timeout and returns its standard output.
func runCommand(ctx context.Context, timeout time.Duration, argv ...string) ([]byte, error) {
	return benchutil.Command{Argv: argv, Timeout: timeout, Err: ErrCommand, Quote: quoteArgs}.Output(ctx)
}

// poll calls try every interval until it returns nil, one of procs exits,
// timeout passes or ctx ends. The error names what was awaited and quotes
// try's last error.
func poll(ctx context.Context, what string, timeout time.Duration, procs []*process, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range procs {
			if p.Exited() {
				return p.exitError()
			}
		}
		last := try(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			why := ctx.Err()
			if errors.Is(why, context.DeadlineExceeded) {
				why = fmt.Errorf("not ready after %s", timeout)
			}
			out := ""
			for _, p := range procs {
				out += fmt.Sprintf("; %s output: %s", p.Name, bench.OneLine(p.Output.String()))
			}
			return fmt.Errorf("%w: %s: %w (last: %v)%s", ErrStart, what, why, last, out)
		case <-tick.C:
		}
	}
}
