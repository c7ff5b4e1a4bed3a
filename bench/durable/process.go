package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is one long-running child (a twinblock daemon or proxy) with the
// tail of its output kept for error messages.
type process struct {
	name   string
	argv   []string
	cmd    *exec.Cmd
	output tailBuffer
	done   chan struct{} // closed once the process has exited
	err    error         // Wait's result; read only after done
}

// startProcess starts argv. The child runs in its own process group (a
// terminal Ctrl-C reaches only the harness, which stops children in
// order) and gets SIGKILL if the harness dies (Pdeathsig survives the
// exec that taskset does), so an interrupted run leaves nothing behind.
func startProcess(name string, argv []string) (*process, error) {
	p := &process{name: name, argv: argv, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = &p.output
	p.cmd.Stderr = &p.output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %s: %s: %w", ErrStart, name, quoteArgs(argv), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended, with its last output.
func (p *process) exitError() error {
	return fmt.Errorf("%w: %s exited (%v): %s; output: %s", ErrStart, p.name, p.err, quoteArgs(p.argv), oneLine(p.output.String()))
}

// stopGrace is how long a child may take to exit after SIGTERM: a daemon
// answers what is in flight, checkpoints and flushes its volume first.
const stopGrace = 15 * time.Second

// stop sends SIGTERM and, if the process has not exited after grace,
// SIGKILL. Safe on nil and on a process that already exited.
func (p *process) stop(grace time.Duration) error {
	if p == nil || p.exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("durable: %s did not exit within %s of SIGTERM; killed", p.name, grace)
}

// runCommand runs a short command (twinblock create, certs, status, df)
// under timeout and returns its standard output.
func runCommand(ctx context.Context, timeout time.Duration, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timeout %s)", ctx.Err(), timeout)
		}
		return out, fmt.Errorf("%w: %s: %w: %s", ErrCommand, quoteArgs(argv), err, oneLine(stderr.String()))
	}
	return out, nil
}

// probeNBD connects to a unix socket and reads the NBD greeting, so a
// socket file left behind by an earlier daemon does not pass for a server.
func probeNBD(ctx context.Context, socket string) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 8)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading NBD greeting: %w", err)
	}
	if string(buf) != "NBDMAGIC" {
		return fmt.Errorf("not an NBD server: greeting %q", buf)
	}
	return nil
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
			if p.exited() {
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
				out += fmt.Sprintf("; %s output: %s", p.name, oneLine(p.output.String()))
			}
			return fmt.Errorf("%w: %s: %w (last: %v)%s", ErrStart, what, why, last, out)
		case <-tick.C:
		}
	}
}

// freeTCPAddr asks the kernel for a free loopback port. Another process
// could take it before the daemon binds it; the daemon then fails to start
// and says so, which is acceptable for a benchmark.
func freeTCPAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tailBuffer keeps the last 8 KiB written to it: enough of a child's
// output to explain a failure, bounded however chatty the child is. Safe
// for concurrent use (exec's copying goroutine writes while poll reads).
type tailBuffer struct {
	mu struct {
		sync.Mutex
		buf []byte
	}
}

const tailMax = 8 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.buf = append(t.mu.buf, p...)
	if len(t.mu.buf) > tailMax {
		t.mu.buf = append(t.mu.buf[:0], t.mu.buf[len(t.mu.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.mu.buf)
}
