package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/pojntfx/go-nbd/pkg/backend"
	"github.com/pojntfx/go-nbd/pkg/server"
)

// GoNBDOptions describe the go-nbd baseline.
type GoNBDOptions struct {
	Export string // "" means "vol0"
	Size   int64  // bytes of the in-memory disk
	Dir    string // where the unix socket goes
}

// GoNBDServer is go-nbd v0.3.2's stock server with its memory backend,
// run in this process: one goroutine per connection calling server.Handle,
// which answers one request at a time. Both listeners share one disk.
type GoNBDServer struct {
	opts GoNBDOptions
	ep   endpoints
	wg   sync.WaitGroup
	mu   struct {
		sync.Mutex
		lns     []net.Listener
		conns   map[net.Conn]struct{}
		stopped bool
		err     error // first accept error after Start
	}
}

// NewGoNBDServer prepares the server; nothing listens until Start.
func NewGoNBDServer(o GoNBDOptions) *GoNBDServer {
	if o.Export == "" {
		o.Export = "vol0"
	}
	return &GoNBDServer{opts: o}
}

func (s *GoNBDServer) Name() string { return "gonbd" }

func (s *GoNBDServer) Start(ctx context.Context) error {
	if s.opts.Size <= 0 {
		return fmt.Errorf("%w: gonbd: size %d", ErrServerStart, s.opts.Size)
	}
	// The runtime maps zeroed pages lazily, so the gigabyte costs memory only
	// as it is written, like nbdkit's sparse memory plugin.
	exports := []*server.Export{{
		Name:    s.opts.Export,
		Backend: backend.NewMemoryBackend(make([]byte, s.opts.Size)),
	}}
	opts := server.Options{SupportsMultiConn: true}

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("%w: gonbd: %w", ErrServerStart, err)
	}
	sock := filepath.Join(s.opts.Dir, "gonbd.sock")
	os.Remove(sock)
	uds, err := net.Listen("unix", sock)
	if err != nil {
		tcp.Close()
		return fmt.Errorf("%w: gonbd: %w", ErrServerStart, err)
	}
	s.ep = endpoints{tcpAddr: tcp.Addr().String(), socketPath: sock, export: s.opts.Export}
	s.mu.Lock()
	s.mu.lns = []net.Listener{tcp, uds}
	s.mu.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()
	for _, ln := range []net.Listener{tcp, uds} {
		s.wg.Add(1)
		go s.accept(ln, exports, opts)
	}
	return waitReady(ctx, nil, defaultStartTimeout, [][2]string{{"tcp", s.ep.tcpAddr}, {"unix", sock}})
}

func (s *GoNBDServer) accept(ln net.Listener, exports []*server.Export, opts server.Options) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			if !s.mu.stopped && s.mu.err == nil {
				s.mu.err = err
			}
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		if s.mu.stopped {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.mu.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Handle fills in defaults in the Options it is given, so each
			// connection gets its own copy. Its error is the client going
			// away or a protocol error; either way the connection is done
			// and fio reports the rest.
			o := opts
			server.Handle(c, exports, &o)
			c.Close()
			s.mu.Lock()
			delete(s.mu.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *GoNBDServer) URI(t Transport) string { return s.ep.uri(t) }

func (s *GoNBDServer) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.lns == nil {
		return fmt.Errorf("%w: gonbd: not started", ErrServerExited)
	}
	if s.mu.err != nil {
		return fmt.Errorf("%w: gonbd: accept: %w", ErrServerExited, s.mu.err)
	}
	return nil
}

// Stop closes the listeners and every connection, then waits for the
// handler goroutines.
func (s *GoNBDServer) Stop() error {
	s.mu.Lock()
	if s.mu.stopped {
		s.mu.Unlock()
		return nil
	}
	s.mu.stopped = true
	var errs []error
	for _, ln := range s.mu.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range s.mu.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}
