package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// This file holds the child-process and fio plumbing that the NBD harness
// and bench/durable share: both start long-running daemons, run fio under
// a timeout and decode fio's percentile maps. Errors from these helpers
// carry no sentinel of their own; each caller wraps them with its
// package's sentinel (ErrServerStart, ErrFioFailed, durable.ErrCommand...).

// ChildProcAttr puts a child in its own process group, so that a terminal
// Ctrl-C reaches only the harness (which then stops its children in
// order, or kills fio through its context rather than letting it report a
// short run as a good sample), and gives it SIGKILL if the harness dies
// (Pdeathsig survives the exec that taskset does), so an interrupted run
// leaves nothing behind. Each call returns a new value, as exec.Cmd
// wants its own.
func ChildProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Process is one long-running child (a server under test, a daemon, a
// proxy) with the tail of its output kept for error messages.
//
// Contract: Exited, Done, Output and Stop may be called from any
// goroutine; Err only after Done is closed. Stop is safe on a nil
// *Process and on one that has already exited.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	// Output is the tail of the child's stdout and stderr.
	Output TailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result; read only after done
}

// StartProcess starts argv[0] with the arguments argv[1:] in its own
// process group, with Pdeathsig (see ChildProcAttr). The error is exec's,
// unwrapped: the caller adds its sentinel and what it started.
func StartProcess(name string, argv []string) (*Process, error) {
	p := &Process{Name: name, done: make(chan struct{})}
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Stdout = &p.Output
	p.Cmd.Stderr = &p.Output
	p.Cmd.SysProcAttr = ChildProcAttr()
	if err := p.Cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is Wait's result; call it only after Done is closed.
func (p *Process) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and, if the process has not exited after grace,
// SIGKILL; it returns once the process has exited. killed reports that
// SIGKILL was needed, which callers turn into an error in their words.
func (p *Process) Stop(grace time.Duration) (killed bool) {
	if p == nil || p.Exited() {
		return false
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(grace):
	}
	p.Cmd.Process.Kill()
	<-p.done
	return true
}

// FioExec is one fio process whose JSON output goes to a temporary file.
type FioExec struct {
	// Argv is the whole command line (binary first, possibly behind
	// taskset) given the path of the output file.
	Argv func(out string) []string
	// Timeout bounds the process; it is killed when Timeout passes or ctx
	// ends.
	Timeout time.Duration
	// Dir is where the output file goes; "" means os.TempDir().
	Dir string
}

// RunFio runs fio in its own process group (see ChildProcAttr) under
// x.Timeout and returns what it wrote to its output file. When fio fails
// the error wraps the cause (ctx's error with " (timeout T)" when the
// timeout or ctx ended it) and quotes, on one line, the tail of fio's
// stdout and stderr and the messages fio wrote into the output file
// before its JSON document.
func RunFio(ctx context.Context, x FioExec) ([]byte, error) {
	f, err := os.CreateTemp(x.Dir, "fio-*.json")
	if err != nil {
		return nil, err
	}
	out := f.Name()
	f.Close()
	defer os.Remove(out)

	ctx, cancel := context.WithTimeout(ctx, x.Timeout)
	defer cancel()
	argv := x.Argv(out)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var tail TailBuffer
	cmd.Stdout = &tail
	cmd.Stderr = &tail
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = ChildProcAttr()
	runErr := cmd.Run()
	data, _ := os.ReadFile(out)
	if runErr != nil {
		// With --output set, fio writes its own errors into the output
		// file, before the JSON document (or instead of it).
		msg := tail.String() + "\n" + fioPreamble(data)
		if ctx.Err() != nil {
			runErr = fmt.Errorf("%w (timeout %s)", ctx.Err(), x.Timeout)
		}
		return nil, fmt.Errorf("%w: %s", runErr, OneLine(msg))
	}
	return data, nil
}

// fioPreamble returns the text fio wrote before its JSON document (its
// error messages land there when --output is a file): all of data when
// there is no document.
func fioPreamble(data []byte) string {
	i := bytes.IndexByte(data, '{')
	if i < 0 {
		return string(data)
	}
	return string(data[:i])
}

// FiniteNonNeg reports whether f is a usable counter: not negative, not
// infinite, not NaN.
func FiniteNonNeg(f float64) bool { return f >= 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }

// FioPercentile finds the entry for pct in one of fio's percentile maps
// (clat_ns.percentile, lat_ns.percentile), whose keys fio writes as
// "99.000000". The error ("p99 = -1", "no p99 (...)") carries no sentinel:
// the caller wraps it with its own and says which latency it was.
func FioPercentile(m map[string]float64, pct float64) (time.Duration, error) {
	for k, v := range m {
		p, err := strconv.ParseFloat(k, 64)
		if err != nil || p != pct {
			continue
		}
		// Bounded well below overflow, so that callers may add two
		// percentiles (write + fdatasync) safely: no real latency is
		// decades long.
		if !FiniteNonNeg(v) || v > math.MaxInt64/4 {
			return 0, fmt.Errorf("p%g = %g", pct, v)
		}
		return time.Duration(v), nil
	}
	return 0, fmt.Errorf("no p%g (run fio with --percentile_list=50:99)", pct)
}

// TailBuffer keeps the last 8 KiB written to it: enough of a child's
// output to explain a failure, bounded however chatty the child is. It is
// safe for concurrent use: exec's copying goroutine writes while a
// launcher that gives up on a server reads.
type TailBuffer struct {
	mu struct {
		sync.Mutex
		buf []byte
	}
}

const tailMax = 8 << 10

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.buf = append(t.mu.buf, p...)
	if len(t.mu.buf) > tailMax {
		t.mu.buf = append(t.mu.buf[:0], t.mu.buf[len(t.mu.buf)-tailMax:]...)
	}
	return len(p), nil
}

// String returns what the buffer holds.
func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.mu.buf)
}

// OneLine shortens a multi-line message for an error string: whitespace
// runs become one space, only the last 600 bytes are kept, and an empty
// message reads "(no output)".
func OneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
