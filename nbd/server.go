package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server errors.
var (
	ErrServerClosed  = errors.New("nbd: server closed")
	ErrExportExists  = errors.New("nbd: export already exists")
	ErrInvalidExport = errors.New("nbd: invalid export")
	ErrUnknownExport = errors.New("nbd: unknown export")
)

// Export is one named device the server offers.
type Export struct {
	// Name is what clients ask for (nbd://host/NAME). At most 4096 bytes,
	// no NUL. The empty name is allowed and is then the explicit default.
	Name string
	// Description is shown by clients such as nbdinfo; optional.
	Description string
	// Device does the I/O.
	Device Device
	// ReadOnly exports advertise NBD_FLAG_READ_ONLY and answer
	// WRITE/TRIM/WRITE_ZEROES with EPERM.
	ReadOnly bool
}

// ServerOptions configures a Server. The zero value is usable.
type ServerOptions struct {
	// Logger receives connection and protocol events; nil means
	// slog.Default().
	Logger *slog.Logger
	// MaxInFlight bounds the requests handled at once on one connection
	// (default 128). When that many are in flight the server stops reading
	// from the connection until one is answered: back-pressure, not an
	// unbounded queue. At most 4096.
	MaxInFlight int
	// MaxBlockSize is the largest READ or WRITE payload accepted and the
	// maximum advertised in NBD_INFO_BLOCK_SIZE (default 32 MiB; values
	// are clamped to [4096, 256 MiB]).
	MaxBlockSize uint32
	// HandshakeTimeout bounds the option haggling of one connection
	// (default 30 s) so that idle half-open connections do not pile up.
	HandshakeTimeout time.Duration
}

// Stats are cumulative counters of a Server, cheap to read at any time.
type Stats struct {
	ConnectionsOpen  int64 // connections currently open
	ConnectionsTotal uint64
	Requests         uint64 // transmission requests answered (DISC excluded)
	Reads            uint64
	Writes           uint64 // WRITE only
	BytesRead        uint64 // payload bytes sent to clients
	BytesWritten     uint64 // payload bytes received and written
	Errors           uint64 // requests answered with a nonzero error code
	ProtocolErrors   uint64 // connections closed because of a broken stream or handshake
}

type stats struct {
	connectionsOpen  atomic.Int64
	connectionsTotal atomic.Uint64
	requests         atomic.Uint64
	reads            atomic.Uint64
	writes           atomic.Uint64
	bytesRead        atomic.Uint64
	bytesWritten     atomic.Uint64
	errors           atomic.Uint64
	protocolErrors   atomic.Uint64
}

// Server serves exports over NBD (fixed newstyle handshake, simple
// replies, many requests in flight per connection). See the package
// documentation for the protocol subset and the draining rules.
type Server struct {
	log          *slog.Logger
	maxInFlight  int
	maxBlockSize uint32
	hsTimeout    time.Duration
	// inlineSlow is the base of the slow-inline-run threshold (conn.go);
	// a field so that tests can make every run count as slow.
	inlineSlow time.Duration

	stats stats
	conns sync.WaitGroup // every ServeConn that registered

	mu struct {
		sync.Mutex
		exports   map[string]*Export
		listeners map[net.Listener]struct{}
		conns     map[*conn]struct{}
		shutdown  bool
		guarding  bool // guardLoop is running
	}
}

// NewServer returns a Server with no exports.
func NewServer(opts ServerOptions) *Server {
	s := &Server{
		log:          opts.Logger,
		maxInFlight:  opts.MaxInFlight,
		maxBlockSize: opts.MaxBlockSize,
		hsTimeout:    opts.HandshakeTimeout,
		inlineSlow:   inlineSlow,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = 128
	}
	s.maxInFlight = min(s.maxInFlight, 4096) // request slots are preallocated
	if s.maxBlockSize == 0 {
		s.maxBlockSize = DefaultMaxBlockSize
	}
	s.maxBlockSize = min(max(s.maxBlockSize, PreferredBlockSize), 1<<maxBufShift)
	if s.hsTimeout <= 0 {
		s.hsTimeout = 30 * time.Second
	}
	s.mu.exports = make(map[string]*Export)
	s.mu.listeners = make(map[net.Listener]struct{})
	s.mu.conns = make(map[*conn]struct{})
	return s
}

// AddExport makes e available to new connections. The server keeps the
// pointer; do not modify *e afterwards.
func (s *Server) AddExport(e *Export) error {
	if e == nil || e.Device == nil {
		return fmt.Errorf("%w: no device", ErrInvalidExport)
	}
	if len(e.Name) > maxStringLength || strings.IndexByte(e.Name, 0) >= 0 {
		return fmt.Errorf("%w: name %q", ErrInvalidExport, e.Name)
	}
	if len(e.Description) > maxStringLength || strings.IndexByte(e.Description, 0) >= 0 {
		return fmt.Errorf("%w: description of export %q", ErrInvalidExport, e.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.exports[e.Name]; ok {
		return fmt.Errorf("%w: %q", ErrExportExists, e.Name)
	}
	s.mu.exports[e.Name] = e
	return nil
}

// RemoveExport withdraws an export: new connections cannot select it, and
// connections already using it are drained (no new requests are read,
// requests in flight are answered, then the connection closes). It does
// not wait for the drain.
func (s *Server) RemoveExport(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.mu.exports[name]
	if !ok {
		return
	}
	delete(s.mu.exports, name)
	for c := range s.mu.conns {
		if c.export.Load() == e {
			c.stop()
		}
	}
}

// lookupExport finds the export a client asked for. The empty name selects
// the export named "" if there is one, else the only export if there is
// exactly one.
func (s *Server) lookupExport(name string) *Export {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.mu.exports[name]; ok {
		return e
	}
	if name == "" && len(s.mu.exports) == 1 {
		for _, e := range s.mu.exports {
			return e
		}
	}
	return nil
}

// exportList returns the exports sorted by name, for NBD_OPT_LIST.
func (s *Server) exportList() []*Export {
	s.mu.Lock()
	list := make([]*Export, 0, len(s.mu.exports))
	for _, e := range s.mu.exports {
		list = append(list, e)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.shutdown
}

// Serve accepts connections on ln until Shutdown (then it returns
// ErrServerClosed) or until Accept fails for good. It may run for several
// listeners at once (TCP and unix sockets).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.mu.shutdown {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.mu.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of file descriptors and the like: wait and retry
				// rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept failed, retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		go s.ServeConn(nc)
	}
}

// ServeConn runs the whole NBD session on nc (handshake and transmission)
// and closes nc before returning.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.mu.shutdown {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.mu.conns[c] = struct{}{}
	s.conns.Add(1)
	s.mu.Unlock()
	s.stats.connectionsOpen.Add(1)
	s.stats.connectionsTotal.Add(1)
	defer func() {
		s.stats.connectionsOpen.Add(-1)
		s.mu.Lock()
		delete(s.mu.conns, c)
		s.mu.Unlock()
		s.conns.Done()
	}()
	c.serve()
}

// Shutdown stops accepting connections, stops reading new requests on
// every connection, lets the requests in flight finish and be answered,
// and closes the connections. Requests the server had already received
// but not started are answered with ESHUTDOWN. If ctx ends first, the
// remaining connections are closed at once and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.mu.shutdown = true
	for ln := range s.mu.listeners {
		ln.Close()
	}
	for c := range s.mu.conns {
		c.stop()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.mu.conns {
			c.kill()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// The guard looks at the connections every guardTick while some run
// requests inline, and backs off to guardIdleTick while none does, so an
// idle daemon wakes up rarely. An inline run still going at two looks is
// moved off the reading goroutine (conn.runInline), so a device that
// blocks delays the requests pipelined behind it by a tick or two at most
// (and, after such a run, a connection does not run requests inline for a
// while).
const (
	guardTick     = time.Millisecond
	guardIdleTick = 32 * time.Millisecond
)

// startGuard starts guardLoop unless it is running.
func (s *Server) startGuard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.mu.guarding {
		s.mu.guarding = true
		go s.guardLoop()
	}
}

// guardLoop watches inline runs (see conn.runInline) until the server has
// no connection left.
func (s *Server) guardLoop() {
	d := guardTick
	for {
		time.Sleep(d)
		busy := false
		s.mu.Lock()
		if len(s.mu.conns) == 0 {
			s.mu.guarding = false
			s.mu.Unlock()
			return
		}
		for c := range s.mu.conns {
			if c.guardCheck() {
				busy = true
			}
		}
		s.mu.Unlock()
		if busy {
			d = guardTick
		} else {
			d = min(2*d, guardIdleTick)
		}
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		ConnectionsOpen:  s.stats.connectionsOpen.Load(),
		ConnectionsTotal: s.stats.connectionsTotal.Load(),
		Requests:         s.stats.requests.Load(),
		Reads:            s.stats.reads.Load(),
		Writes:           s.stats.writes.Load(),
		BytesRead:        s.stats.bytesRead.Load(),
		BytesWritten:     s.stats.bytesWritten.Load(),
		Errors:           s.stats.errors.Load(),
		ProtocolErrors:   s.stats.protocolErrors.Load(),
	}
}

// transmissionFlags are the flags advertised for e. Never zero: libnbd
// refuses a zero flags word, and HAS_FLAGS is always set anyway.
func transmissionFlags(e *Export) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagCanMultiConn | FlagSendCache
	if e.ReadOnly {
		return f | FlagReadOnly
	}
	return f | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
}
