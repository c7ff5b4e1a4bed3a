package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Transport is how fio reaches a server.
type Transport string

const (
	TCP  Transport = "tcp"  // nbd://127.0.0.1:PORT/EXPORT
	Unix Transport = "unix" // nbd+unix:///EXPORT?socket=PATH
)

// Transports lists every transport, in report order.
var Transports = []Transport{TCP, Unix}

// ParseTransport checks a transport name.
func ParseTransport(s string) (Transport, error) {
	for _, t := range Transports {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("%w: transport %q (known: tcp, unix)", ErrUnknown, s)
}

// Server is an NBD server under test.
//
// Contract: Start returns once the server answers the NBD greeting on every
// transport, or with an error wrapping ErrServerStart (never a hang: it is
// bounded by the launcher's start timeout and by ctx). After a successful
// Start, URI gives fio's URI for a transport and Check reports
// ErrServerExited if the server has gone away. Stop releases everything
// Start acquired, is safe to call after a failed Start, and may be called
// more than once.
type Server interface {
	Name() string
	Start(ctx context.Context) error
	URI(t Transport) string
	Check() error
	Stop() error
}

// Endpoints are the two addresses of one server.
type endpoints struct {
	tcpAddr    string // host:port
	socketPath string
	export     string
}

func (e endpoints) uri(t Transport) string {
	switch t {
	case TCP:
		return "nbd://" + e.tcpAddr + "/" + url.PathEscape(e.export)
	case Unix:
		return "nbd+unix:///" + url.PathEscape(e.export) + "?socket=" + e.socketPath
	}
	return ""
}

// freeTCPAddr asks the kernel for a free loopback port. Another process
// could take it before the server binds it; the server then fails to start
// and the launcher reports that clearly, which is acceptable for a bench.
func freeTCPAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// defaultStartTimeout bounds how long a launcher waits for a server to
// answer when its options do not say.
const defaultStartTimeout = 30 * time.Second

// nbdGreeting is what every newstyle NBD server sends first.
const nbdGreeting = "NBDMAGIC"

// probeNBD connects and reads the NBD greeting, so a port that merely
// accepts (a stale listener, another service) does not pass for a server.
func probeNBD(ctx context.Context, network, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len(nbdGreeting))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading NBD greeting: %w", err)
	}
	if string(buf) != nbdGreeting {
		return fmt.Errorf("not an NBD server: greeting %q", buf)
	}
	return nil
}

// process is one child server process with its stderr kept for errors.
type process struct {
	name   string
	cmd    *exec.Cmd
	stderr tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result; read only after done
}

// startProcess starts bin. The child gets SIGKILL if this process dies
// (Pdeathsig), so an interrupted harness leaves no server behind. It runs
// in its own process group so that a Ctrl-C at the terminal reaches only
// the harness, which then stops its servers in order.
func startProcess(name, bin string, args ...string) (*process, error) {
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = &p.stderr
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrServerStart, name, err)
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
func (p *process) exitError(sentinel error) error {
	return fmt.Errorf("%w: %s: %v; output: %s", sentinel, p.name, p.err, oneLine(p.stderr.String()))
}

// stop asks the process to end with SIGTERM (twinblock drains, nbdkit
// exits), and kills it if it has not after grace.
func (p *process) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	if p.exited() {
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
	return fmt.Errorf("%s: did not exit within %s of SIGTERM; killed", p.name, grace)
}

// waitReady polls until every (network, addr) pair answers the NBD
// greeting, the process exits, timeout passes or ctx ends.
func waitReady(ctx context.Context, p *process, timeout time.Duration, addrs [][2]string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p != nil && p.exited() {
			return p.exitError(ErrServerStart)
		}
		last = nil
		for _, a := range addrs {
			if err := probeNBD(ctx, a[0], a[1]); err != nil {
				last = fmt.Errorf("%s %s: %w", a[0], a[1], err)
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			out := ""
			if p != nil {
				out = "; output: " + oneLine(p.stderr.String())
			}
			why := "not accepting"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = fmt.Sprintf("not accepting after %s", timeout)
			}
			return fmt.Errorf("%w: %s: %s (%v)%s", ErrServerStart, nameOf(p), why, last, out)
		case <-tick.C:
		}
	}
}

func nameOf(p *process) string {
	if p == nil {
		return "server"
	}
	return p.name
}

// quoteArgs renders a command line for error messages and the report.
func quoteArgs(bin string, args []string) string {
	parts := []string{bin}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
