package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// TwinblockOptions describe a `twinblock serve` child process.
type TwinblockOptions struct {
	Binary       string // the twinblock binary (the CLI passes os.Executable())
	Export       string // volume and export name; "" means "vol0"
	Size         int64  // bytes of the mem volume
	Dir          string // where the unix socket goes
	StartTimeout time.Duration
	// ExtraArgs are appended to the serve command line, e.g. a profiling
	// flag, so a slow row can be investigated with the same harness.
	ExtraArgs []string
}

// TwinblockServer runs the real binary with a mem backend, listening on a
// loopback TCP port and a unix socket.
type TwinblockServer struct {
	opts TwinblockOptions
	ep   endpoints
	p    *Process
	args []string
}

// NewTwinblockServer prepares a launcher; nothing starts until Start.
func NewTwinblockServer(o TwinblockOptions) *TwinblockServer {
	if o.Export == "" {
		o.Export = "vol0"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = defaultStartTimeout
	}
	return &TwinblockServer{opts: o}
}

func (s *TwinblockServer) Name() string { return "twinblock" }

// CommandLine is the serve command Start ran (empty before Start).
func (s *TwinblockServer) CommandLine() string {
	if s.args == nil {
		return ""
	}
	return quoteArgs(s.opts.Binary, s.args)
}

func (s *TwinblockServer) Start(ctx context.Context) error {
	if s.opts.Binary == "" {
		return fmt.Errorf("%w: twinblock: no binary", ErrServerStart)
	}
	addr, err := FreeTCPAddr()
	if err != nil {
		return fmt.Errorf("%w: twinblock: %w", ErrServerStart, err)
	}
	s.ep = endpoints{tcpAddr: addr, socketPath: filepath.Join(s.opts.Dir, "twinblock.sock"), export: s.opts.Export}
	s.args = append([]string{
		"serve",
		// Warnings only: the harness keeps the output for error messages,
		// and per-connection info logs would be work nbdkit does not do.
		"--log-level", "warn",
		"--name", s.opts.Export,
		"--backend", "mem",
		"--size", strconv.FormatInt(s.opts.Size, 10),
		"--listen", addr,
		"--socket", s.ep.socketPath,
	}, s.opts.ExtraArgs...)
	p, err := startProcess("twinblock", s.opts.Binary, s.args...)
	if err != nil {
		return err
	}
	s.p = p
	if err := waitReady(ctx, p, s.opts.StartTimeout, [][2]string{{"tcp", addr}, {"unix", s.ep.socketPath}}); err != nil {
		p.stop(time.Second)
		return fmt.Errorf("%w (command: %s)", err, s.CommandLine())
	}
	return nil
}

func (s *TwinblockServer) URI(t Transport) string { return s.ep.uri(t) }

func (s *TwinblockServer) Check() error {
	if s.p == nil {
		return fmt.Errorf("%w: twinblock: not started", ErrServerExited)
	}
	if s.p.Exited() {
		return s.p.exitError(ErrServerExited)
	}
	return nil
}

// Stop sends SIGTERM (serve drains and exits) and kills after 10 s.
func (s *TwinblockServer) Stop() error {
	return s.p.stop(10 * time.Second)
}
