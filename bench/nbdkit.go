package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// NbdkitOptions describe nbdkit memory-plugin baselines.
type NbdkitOptions struct {
	Binary       string // "" means "nbdkit" on PATH
	Size         int64  // bytes of the memory disk
	Dir          string // where the unix socket goes
	StartTimeout time.Duration
}

// NbdkitServer runs two `nbdkit memory` processes, one on a loopback TCP
// port and one on a unix socket: nbdkit serves one kind of listener per
// process. Each has its own memory, so each is pre-filled on its own.
// nbdkit ignores the export name.
type NbdkitServer struct {
	opts     NbdkitOptions
	ep       endpoints
	tcp, uds *Process
	cmdlines []string
}

// NewNbdkitServer prepares a launcher; nothing starts until Start.
func NewNbdkitServer(o NbdkitOptions) *NbdkitServer {
	if o.Binary == "" {
		o.Binary = "nbdkit"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = defaultStartTimeout
	}
	return &NbdkitServer{opts: o}
}

func (s *NbdkitServer) Name() string { return "nbdkit" }

// CommandLines are the nbdkit commands Start ran.
func (s *NbdkitServer) CommandLines() []string { return s.cmdlines }

func (s *NbdkitServer) Start(ctx context.Context) error {
	addr, err := FreeTCPAddr()
	if err != nil {
		return fmt.Errorf("%w: nbdkit: %w", ErrServerStart, err)
	}
	s.ep = endpoints{tcpAddr: addr, socketPath: filepath.Join(s.opts.Dir, "nbdkit.sock"), export: "vol0"}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: nbdkit: %w", ErrServerStart, err)
	}
	// --exit-with-parent: nbdkit dies with the harness even if the harness
	// is killed before it can stop it.
	common := []string{"--foreground", "--exit-with-parent"}
	plugin := []string{"memory", "size=" + strconv.FormatInt(s.opts.Size, 10)}
	tcpArgs := append(append(append([]string{}, common...), "-p", port, "-i", host), plugin...)
	udsArgs := append(append(append([]string{}, common...), "-U", s.ep.socketPath), plugin...)
	s.cmdlines = []string{quoteArgs(s.opts.Binary, tcpArgs), quoteArgs(s.opts.Binary, udsArgs)}

	if s.tcp, err = startProcess("nbdkit (tcp)", s.opts.Binary, tcpArgs...); err != nil {
		return err
	}
	if s.uds, err = startProcess("nbdkit (unix)", s.opts.Binary, udsArgs...); err != nil {
		s.Stop()
		return err
	}
	if err := waitReady(ctx, s.tcp, s.opts.StartTimeout, [][2]string{{"tcp", addr}}); err != nil {
		s.Stop()
		return err
	}
	if err := waitReady(ctx, s.uds, s.opts.StartTimeout, [][2]string{{"unix", s.ep.socketPath}}); err != nil {
		s.Stop()
		return err
	}
	return nil
}

func (s *NbdkitServer) URI(t Transport) string { return s.ep.uri(t) }

func (s *NbdkitServer) Check() error {
	for _, p := range []*Process{s.tcp, s.uds} {
		if p == nil {
			return fmt.Errorf("%w: nbdkit: not started", ErrServerExited)
		}
		if p.Exited() {
			return p.exitError(ErrServerExited)
		}
	}
	return nil
}

func (s *NbdkitServer) Stop() error {
	return errors.Join(s.tcp.stop(5*time.Second), s.uds.stop(5*time.Second))
}
