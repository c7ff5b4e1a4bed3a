package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memDevice is an in-memory Device that records what it was asked to do.
type memDevice struct {
	mu      sync.RWMutex
	data    []byte
	flushes atomic.Int64
	fuas    atomic.Int64 // operations that arrived with fua
	noHoles atomic.Int64 // WriteZeroes with noHole
	caches  atomic.Int64
	trims   atomic.Int64
}

func newMemDevice(size int) *memDevice { return &memDevice{data: make([]byte, size)} }

func (m *memDevice) Size() uint64 { return uint64(len(m.data)) }

func (m *memDevice) ReadAt(p []byte, off uint64) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	copy(p, m.data[off:])
	return nil
}

func (m *memDevice) WriteAt(p []byte, off uint64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	if fua {
		m.fuas.Add(1)
	}
	return nil
}

func (m *memDevice) zero(off uint64, length uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+uint64(length)])
}

func (m *memDevice) Trim(off uint64, length uint32, fua bool) error {
	m.zero(off, length)
	m.trims.Add(1)
	if fua {
		m.fuas.Add(1)
	}
	return nil
}

func (m *memDevice) WriteZeroes(off uint64, length uint32, noHole, fua bool) error {
	m.zero(off, length)
	if noHole {
		m.noHoles.Add(1)
	}
	if fua {
		m.fuas.Add(1)
	}
	return nil
}

func (m *memDevice) Flush() error {
	m.flushes.Add(1)
	return nil
}

func (m *memDevice) Cache(off uint64, length uint32) error {
	m.caches.Add(1)
	return nil
}

// faultDevice fails every operation with err while err is set.
type faultDevice struct {
	*memDevice
	mu  sync.Mutex
	err error
}

func (f *faultDevice) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *faultDevice) fault() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *faultDevice) ReadAt(p []byte, off uint64) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.ReadAt(p, off)
}

func (f *faultDevice) WriteAt(p []byte, off uint64, fua bool) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.WriteAt(p, off, fua)
}

func (f *faultDevice) Trim(off uint64, length uint32, fua bool) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.Trim(off, length, fua)
}

func (f *faultDevice) WriteZeroes(off uint64, length uint32, noHole, fua bool) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.WriteZeroes(off, length, noHole, fua)
}

func (f *faultDevice) Flush() error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.Flush()
}

func (f *faultDevice) Cache(off uint64, length uint32) error {
	if err := f.fault(); err != nil {
		return err
	}
	return f.memDevice.Cache(off, length)
}

// gateDevice holds every READ and WRITE until the test opens the gate for
// its offset, so a test decides the completion order.
type gateDevice struct {
	*memDevice
	arrived chan uint64
	cur     atomic.Int32
	maxSeen atomic.Int32

	mu    sync.Mutex
	gates map[uint64]chan struct{}
}

func newGateDevice(size int) *gateDevice {
	return &gateDevice{memDevice: newMemDevice(size), arrived: make(chan uint64, 1024), gates: map[uint64]chan struct{}{}}
}

func (g *gateDevice) gate(off uint64) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.gates[off]
	if !ok {
		ch = make(chan struct{})
		g.gates[off] = ch
	}
	return ch
}

func (g *gateDevice) release(off uint64) { close(g.gate(off)) }

func (g *gateDevice) wait(off uint64) {
	n := g.cur.Add(1)
	for {
		m := g.maxSeen.Load()
		if n <= m || g.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	g.arrived <- off
	<-g.gate(off)
	g.cur.Add(-1)
}

func (g *gateDevice) ReadAt(p []byte, off uint64) error {
	g.wait(off)
	return g.memDevice.ReadAt(p, off)
}

func (g *gateDevice) WriteAt(p []byte, off uint64, fua bool) error {
	g.wait(off)
	return g.memDevice.WriteAt(p, off, fua)
}

// awaitArrivals waits until n operations have reached the device and
// returns their offsets.
func (g *gateDevice) awaitArrivals(t *testing.T, n int) []uint64 {
	t.Helper()
	offs := make([]uint64, 0, n)
	for len(offs) < n {
		select {
		case off := <-g.arrived:
			offs = append(offs, off)
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d requests reached the device", len(offs), n)
		}
	}
	return offs
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("NBD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quietLogger()
}

func newTestServer(t testing.TB, opts ServerOptions, exports ...*Export) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s := NewServer(opts)
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// listen starts s on a loopback TCP port or a unix socket in a temp dir
// and returns the network and address to dial.
func listen(t testing.TB, s *Server, network string) (string, string) {
	t.Helper()
	var ln net.Listener
	var err error
	switch network {
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	case "unix":
		ln, err = net.Listen("unix", filepath.Join(t.TempDir(), "nbd.sock"))
	default:
		t.Fatalf("unknown network %q", network)
	}
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return network, ln.Addr().String()
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a client of s over the given transport: "pipe"
// (net.Pipe into ServeConn), "tcp" or "unix".
func connect(t testing.TB, s *Server, transport string, opts ClientOptions) *Client {
	t.Helper()
	var c *Client
	var err error
	switch transport {
	case "pipe":
		cs, ss := net.Pipe()
		go s.ServeConn(ss)
		c, err = NewClient(testCtx(t), cs, opts)
		if err != nil {
			cs.Close()
		}
	default:
		network, addr := listen(t, s, transport)
		c, err = Dial(testCtx(t), network, addr, opts)
	}
	if err != nil {
		t.Fatalf("connect over %s: %v", transport, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var transports = []string{"pipe", "tcp", "unix"}

// rawConn speaks the handshake by hand, for tests of the option haggling.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, s *Server) *rawConn {
	t.Helper()
	cs, ss := net.Pipe()
	go s.ServeConn(ss)
	t.Cleanup(func() { cs.Close() })
	_ = cs.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, c: cs, br: bufio.NewReader(cs)}
}

// greet reads the server greeting, checks it and sends clientFlags.
func (r *rawConn) greet(clientFlags uint32) {
	r.t.Helper()
	var g [18]byte
	if _, err := io.ReadFull(r.br, g[:]); err != nil {
		r.t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		r.t.Fatalf("bad greeting % x", g)
	}
	if hf := binary.BigEndian.Uint16(g[16:]); hf != flagFixedNewstyle|flagNoZeroes {
		r.t.Fatalf("handshake flags %#x", hf)
	}
	r.write(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) sendOpt(opt uint32, data []byte) {
	r.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	r.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (r *rawConn) reply() optReply {
	r.t.Helper()
	var h [20]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		r.t.Fatalf("reading option reply: %v", err)
	}
	if binary.BigEndian.Uint64(h[:]) != optReplyMagic {
		r.t.Fatalf("bad reply magic % x", h)
	}
	rep := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	rep.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	if _, err := io.ReadFull(r.br, rep.data); err != nil {
		r.t.Fatalf("reading option reply data: %v", err)
	}
	return rep
}

func (r *rawConn) expectReply(opt, typ uint32) optReply {
	r.t.Helper()
	rep := r.reply()
	if rep.opt != opt || rep.typ != typ {
		r.t.Fatalf("reply (opt %d, type %#x, %q), want (opt %d, type %#x)", rep.opt, rep.typ, rep.data, opt, typ)
	}
	return rep
}

// expectClosed checks that the server hangs up without sending more.
func (r *rawConn) expectClosed() {
	r.t.Helper()
	b, err := io.ReadAll(r.br)
	if err != nil && !errors.Is(err, io.ErrClosedPipe) {
		r.t.Fatalf("expected a clean close, got %v", err)
	}
	if len(b) != 0 {
		r.t.Fatalf("expected close, got % x", b)
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// goExport sends NBD_OPT_GO and reads replies up to the ACK, returning
// the info replies by type.
func (r *rawConn) goExport(opt uint32, name string, infos ...uint16) map[uint16][]byte {
	r.t.Helper()
	r.sendOpt(opt, infoData(name, infos...))
	got := map[uint16][]byte{}
	for {
		rep := r.reply()
		switch rep.typ {
		case repAck:
			return got
		case repInfo:
			got[binary.BigEndian.Uint16(rep.data)] = rep.data[2:]
		default:
			r.t.Fatalf("reply type %#x (%q) to option %d", rep.typ, rep.data, opt)
		}
	}
}

// fakeConn is a net.Conn whose input is a fixed byte string and whose
// output is discarded: the fuzz targets drive ServeConn with it.
type fakeConn struct {
	r      *bytes.Reader
	mu     sync.Mutex
	closed bool
	out    int
}

func (f *fakeConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	return f.r.Read(p)
}

func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	f.out += len(p)
	return len(p), nil
}

func (f *fakeConn) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

func (f *fakeConn) LocalAddr() net.Addr                { return fakeAddr{} }
func (f *fakeConn) RemoteAddr() net.Addr               { return fakeAddr{} }
func (f *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }
