package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
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

// FreeTCPAddr asks the kernel for a free loopback port. Another process
// could take it before the server binds it; the server then fails to start
// and the launcher reports that clearly, which is acceptable for a bench.
func FreeTCPAddr() (string, error) {
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

// ProbeNBD connects to addr over network ("tcp" or "unix") and reads the
// NBD greeting, so a port that merely accepts (a stale listener, another
// service) or a socket file left behind by an earlier server does not pass
// for a server. It is bounded: 1 s to connect, 2 s to read.
func ProbeNBD(ctx context.Context, network, addr string) error {
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

// startProcess starts bin as a server under test (see StartProcess): a
// terminal Ctrl-C reaches only the harness, which then stops its servers
// in order, and an interrupted harness leaves no server behind.
func startProcess(name, bin string, args ...string) (*Process, error) {
	p, err := StartProcess(name, append([]string{bin}, args...))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrServerStart, name, err)
	}
	return p, nil
}

// exitError describes how the process ended, with its last output.
func (p *Process) exitError(sentinel error) error {
	return fmt.Errorf("%w: %s: %v; output: %s", sentinel, p.Name, p.err, OneLine(p.Output.String()))
}

// stop asks the process to end with SIGTERM (twinblock drains, nbdkit
// exits), and kills it if it has not after grace. Safe on nil.
func (p *Process) stop(grace time.Duration) error {
	if p.Stop(grace) {
		return fmt.Errorf("%s: did not exit within %s of SIGTERM; killed", p.Name, grace)
	}
	return nil
}

// waitReady polls until every (network, addr) pair answers the NBD
// greeting, the process exits, timeout passes or ctx ends.
func waitReady(ctx context.Context, p *Process, timeout time.Duration, addrs [][2]string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p != nil && p.Exited() {
			return p.exitError(ErrServerStart)
		}
		last = nil
		for _, a := range addrs {
			if err := ProbeNBD(ctx, a[0], a[1]); err != nil {
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
				out = "; output: " + OneLine(p.Output.String())
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

func nameOf(p *Process) string {
	if p == nil {
		return "server"
	}
	return p.Name
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
