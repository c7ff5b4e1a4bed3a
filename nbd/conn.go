package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lingerTimeout bounds how long a closing connection waits for the client
// to close its side after our last reply (see conn.close).
const lingerTimeout = time.Second

// conn is one client connection. One goroutine at a time reads requests
// (see readLoop: the role can move to another goroutine); accepted
// requests run on worker goroutines (one per request in flight, at most
// maxInFlight, reused) or inline on the reader; one writer goroutine
// sends the replies.
type conn struct {
	s   *Server
	nc  net.Conn
	log *slog.Logger
	br  *bufio.Reader
	bw  *bufio.Writer // handshake; then guarded by wmu

	export   atomic.Pointer[Export] // set once transmission starts
	stopping atomic.Bool            // drain: read no new requests
	killOnce sync.Once
	killed   chan struct{} // closed when the connection is torn down at once

	// rc reads the socket's receive queue length (pendingInput); nil when
	// nc has no file descriptor (net.Pipe in tests).
	rc syscall.RawConn

	// Transmission state, fixed once negotiated.
	dev      Device
	cacher   Cacher
	recv     Receiver // nil unless dev is a Receiver
	size     uint64
	readOnly bool

	// free holds the request slots: taking one is acquiring the in-flight
	// semaphore, the writer puts it back once the reply is sent. It is
	// also the request free list, so the hot path allocates no request.
	free    chan *request
	replies chan *request // completed requests, in completion order
	// wmu guards bw: the writer goroutine, a worker replying directly, or
	// the reader replying to a request it ran inline.
	wmu sync.Mutex
	// active counts requests running (on workers or inline) and not yet
	// answered.
	active   atomic.Int64
	work     chan *request // unbuffered: hands a request to an idle worker
	workers  int           // workers started; only the reading role touches it
	inflight sync.WaitGroup
	writeErr atomic.Bool // the writer failed; the stream is dead

	// payload hands a WRITE's payload to recv; reading role only.
	payload payloadReader
	// unflushed: inline runs left replies in bw for a later flush
	// (flushBeforeRead). Belongs to the reading role.
	unflushed bool
	// readDone is closed by whichever goroutine ends the reading.
	readDone chan struct{}
	// inl is the state of inline execution (see runInline).
	inl struct {
		state atomic.Uint32 // inlineIdle, inlineRunning or inlineTaken
		runs  atomic.Uint64 // inline runs started; the guard watches it
		seen  uint64        // runs at the guard's last look; guard only
		// The fields below belong to the goroutine holding the reading
		// role (and to the guard once it has taken that role over).
		typ uint16 // command of the run in progress
		// Per command (0 READ, 1 WRITE): eligible requests still to hand
		// to workers after a slow inline run, and the length of the next
		// such back-off.
		skip    [2]int
		backoff [2]int
	}
}

// Inline execution states.
const (
	inlineIdle    = iota // the reader is reading
	inlineRunning        // the reader runs a request; the guard may take over
	inlineTaken          // the guard moved the reading role to a new goroutine
)

const (
	// An inline run counts as slow when the device took longer than
	// inlineSlow plus inlineSlowPerMiB for each MiB of payload: the device
	// waits for something (a disk, a network round trip) rather than
	// copies memory, a goroutine hand-off is small next to that, and the
	// requests queued behind it would rather have run in parallel. The
	// per-MiB part (4 GiB/s) keeps a memory copy of a large write fast,
	// and the base is generous because on a loaded machine the reader can
	// lose its CPU in the middle of a memory copy.
	inlineSlow       = 200 * time.Microsecond
	inlineSlowPerMiB = 250 * time.Microsecond
	// After a slow inline run, that many requests of the same command go
	// to workers before inline execution is tried again; the back-off
	// doubles at each further slow run, up to inlineMaxBackoff, and goes
	// back to inlineMinBackoff after a fast one.
	inlineMinBackoff = 1 << 10
	inlineMaxBackoff = 1 << 20
	// inlineBurstMax: a READ or WRITE up to this size runs inline even
	// with more requests buffered behind it (when nothing else runs), so
	// a burst from a client at high queue depth is served like an event
	// loop: read, run, queue the reply, and one flush for the burst. Larger
	// requests keep going to workers there, so that reading the next
	// payload overlaps copying this one.
	inlineBurstMax = 64 << 10
)

// request is one transmission request on its way through a conn.
type request struct {
	c    *conn
	hdr  requestHeader
	buf  *[]byte // WRITE payload or READ data
	code uint32  // NBD error code of the reply
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		s:      s,
		nc:     nc,
		log:    s.log.With("remote", remoteAddr(nc)),
		br:     bufio.NewReaderSize(nc, 64<<10),
		bw:     bufio.NewWriterSize(nc, 64<<10),
		killed: make(chan struct{}),
	}
}

func remoteAddr(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// stop asks the connection to drain: the reader stops at the next request
// boundary it cannot serve from what it has already buffered.
func (c *conn) stop() {
	c.stopping.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
}

// kill tears the connection down without waiting for anything.
func (c *conn) kill() {
	c.killOnce.Do(func() {
		close(c.killed)
		c.nc.Close()
	})
}

func (c *conn) isKilled() bool {
	select {
	case <-c.killed:
		return true
	default:
		return false
	}
}

// serve runs the session and closes the connection.
func (c *conn) serve() {
	c.log.Debug("nbd: connection opened")
	_ = c.nc.SetDeadline(time.Now().Add(c.s.hsTimeout))
	n, err := c.handshake()
	if err != nil {
		switch {
		case errors.Is(err, errAbort):
			c.log.Debug("nbd: client ended negotiation")
		case c.stopping.Load() || c.isKilled():
			c.log.Debug("nbd: connection closed during negotiation by shutdown")
		case errors.Is(err, io.EOF):
			c.log.Debug("nbd: client hung up during negotiation")
		default:
			c.s.stats.protocolErrors.Add(1)
			c.log.Warn("nbd: handshake failed", "err", err)
		}
		c.nc.Close()
		return
	}
	// Clear the handshake deadline, then look at stopping: stop() sets the
	// flag before its deadline, so one of the two always catches it.
	_ = c.nc.SetDeadline(time.Time{})
	c.export.Store(n.export)
	if c.stopping.Load() || !c.s.exportPresent(n.export) {
		c.stop()
	}
	c.log.Info("nbd: client connected", "export", n.export.Name, "size", n.size, "read_only", n.export.ReadOnly)
	c.transmit(n)
	c.close()
	c.log.Info("nbd: connection closed", "export", n.export.Name)
}

// close ends a transmission whose replies have all been written. A TCP
// close with unread data in the receive queue sends RST, and an RST makes
// the client's kernel drop replies it has not yet read. So half-close
// first (the client sees our replies, then EOF), then wait briefly for
// the client to close its side.
func (c *conn) close() {
	defer c.nc.Close()
	if c.isKilled() || c.writeErr.Load() {
		return
	}
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, c.nc)
}

func (s *Server) exportPresent(e *Export) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.exports[e.Name] == e
}

// transmit runs the transmission phase until the client disconnects, the
// stream breaks, or the connection is stopped; then it waits for every
// request in flight to be answered.
func (c *conn) transmit(n negotiated) {
	c.dev = n.export.Device
	c.cacher, _ = n.export.Device.(Cacher)
	c.recv, _ = n.export.Device.(Receiver)
	c.size = n.size
	c.readOnly = n.export.ReadOnly
	if sc, ok := c.nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}

	c.free = make(chan *request, c.s.maxInFlight)
	for range c.s.maxInFlight {
		c.free <- &request{c: c}
	}
	c.replies = make(chan *request, c.s.maxInFlight)
	c.work = make(chan *request)
	c.readDone = make(chan struct{})
	writerDone := make(chan struct{})
	go c.writeLoop(writerDone)
	c.s.startGuard()

	if c.readLoop() {
		close(c.readDone)
	}
	<-c.readDone

	c.inflight.Wait()
	close(c.work)
	close(c.replies)
	<-writerDone
	// Replies that inline runs left for a flush the reading never made.
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

// readLoop reads and dispatches requests until it must stop (it then
// returns true, and the caller closes readDone) or until the reading role
// has moved to another goroutine (see runInline; it returns false).
func (c *conn) readLoop() bool {
	var hb [requestHeaderSize]byte
	for {
		var req *request
		select {
		case req = <-c.free:
		case <-c.killed:
			return true
		}
		c.flushBeforeRead(requestHeaderSize)
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			c.free <- req
			c.readFailed(err, "reading request header")
			return true
		}
		h := decodeRequestHeader(hb[:])
		if h.magic != requestMagic {
			c.free <- req
			c.s.stats.protocolErrors.Add(1)
			c.log.Warn("nbd: bad request magic, closing connection", "magic", h.magic)
			return true
		}
		if h.typ == CmdDisc {
			c.free <- req
			c.log.Debug("nbd: client sent NBD_CMD_DISC, draining")
			return true
		}

		code := c.check(h)
		if code == CodeOK && c.stopping.Load() {
			code = CodeShutdown
		}
		if h.typ == CmdWrite {
			c.flushBeforeRead(int(h.length))
			if code == CodeOK && c.recv != nil && h.flags&CmdFlagFUA == 0 {
				handled, ok := c.receive(req, h)
				if !ok {
					return true
				}
				if handled {
					continue
				}
			}
			if code == CodeOK {
				req.buf = getBuf(int(h.length))
				if _, err := io.ReadFull(c.br, *req.buf); err != nil {
					putBuf(req.buf)
					req.buf = nil
					c.free <- req
					c.readFailed(err, "reading write payload")
					return true
				}
			} else if _, err := io.CopyN(io.Discard, c.br, int64(h.length)); err != nil {
				// A refused write still carries its payload: skip it so
				// the next header is where we expect it.
				c.free <- req
				c.readFailed(err, "skipping payload of refused write")
				return true
			}
		}

		req.hdr = h
		req.code = code
		c.inflight.Add(1)
		if code != CodeOK {
			c.log.Debug("nbd: request refused", "type", h.typ, "flags", h.flags, "offset", h.offset, "length", h.length, "code", code)
			c.replies <- req
			c.inflight.Done()
			continue
		}
		if c.active.Add(1) == 1 && c.inlineEligible(h.typ, h.length) {
			if !c.runInline(req) {
				return false
			}
			continue
		}
		select {
		case c.work <- req: // an idle worker took it
		default:
			if c.workers < c.s.maxInFlight {
				// Every worker is busy: start another. In a steady state
				// no goroutine is created per request.
				c.workers++
				go c.worker(req)
			} else {
				// As many workers as slots, and we hold a slot: at least
				// one worker is done with its request and about to wait.
				c.work <- req
			}
		}
	}
}

// payloadReader gives a Receiver the payload of one WRITE: at most n more
// bytes of br. It keeps the first read error, so the server knows
// afterwards whether the stream is still in step.
type payloadReader struct {
	br  *bufio.Reader
	n   int64
	err error
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	k, err := p.br.Read(b)
	p.n -= int64(k)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the stream ended inside the payload
	}
	if err != nil {
		p.err = err
	}
	return k, err
}

// receive offers the accepted WRITE h, whose payload has not been read
// yet, to the device's Receiver, which runs on this (the reading)
// goroutine like an inline run. It reports whether the device handled the
// request (then it is answered, or queued for an answer) and whether the
// stream is still usable; if not, the caller stops reading.
func (c *conn) receive(req *request, h requestHeader) (handled, ok bool) {
	c.payload = payloadReader{br: c.br, n: int64(h.length)}
	req.hdr = h
	req.code = CodeOK
	c.inflight.Add(1)
	c.active.Add(1)
	handled, err := c.recv.ReceiveWrite(&c.payload, h.offset, h.length)
	if !handled && c.payload.n == int64(h.length) && c.payload.err == nil {
		c.active.Add(-1)
		c.inflight.Done()
		return false, true
	}
	if c.payload.err == nil && c.payload.n > 0 {
		// The device stopped early (an error of its own, or it declined
		// after reading): skip the rest so the next header is in place.
		if err == nil {
			err = fmt.Errorf("device took %d of %d payload bytes", int64(h.length)-c.payload.n, h.length)
		}
		_, c.payload.err = io.CopyN(io.Discard, c.br, c.payload.n)
	}
	if c.payload.err != nil {
		c.active.Add(-1)
		c.inflight.Done()
		c.free <- req
		c.readFailed(c.payload.err, "reading write payload")
		return true, false
	}
	if err == nil {
		c.s.stats.bytesWritten.Add(uint64(h.length))
	}
	req.setErr(err)
	c.unflushed = !req.finishReply(c.br.Buffered() == 0)
	return true, true
}

// inlineEligible reports whether the request just read may run on the
// reading goroutine. The caller holds the reading role and has counted the
// request in active, and nothing else is running (active is 1).
//
// Handing a request to a worker costs a goroutine wake-up, and often a
// thread wake-up, which is most of the server's share of a round trip. So
// a READ or WRITE runs inline when it is alone (nothing more in the read
// buffer: any size), or small (inlineBurstMax) with more buffered behind
// it; its reply then goes into the write buffer directly. Larger requests
// with more at hand go to workers, which run them in parallel. After a
// slow inline run that kept requests waiting (see runInline), requests of
// that command go to workers for a while (skip), so that a replicated
// device, whose writes wait for a network round trip, keeps its waits
// overlapping. FLUSH, TRIM and WRITE_ZEROES never run inline: they are
// rarer and often slow.
func (c *conn) inlineEligible(typ uint16, length uint32) bool {
	if typ != CmdRead && typ != CmdWrite {
		return false
	}
	k := inlineKind(typ)
	if c.inl.skip[k] > 0 {
		c.inl.skip[k]--
		return false
	}
	return c.br.Buffered() == 0 || length <= inlineBurstMax
}

// inlineKind indexes skip and backoff: 0 for READ, 1 for WRITE.
func inlineKind(typ uint16) int {
	if typ == CmdWrite {
		return 1
	}
	return 0
}

// slowInline starts a back-off after a slow inline run of command typ.
func (c *conn) slowInline(typ uint16) {
	k := inlineKind(typ)
	b := min(max(2*c.inl.backoff[k], inlineMinBackoff), inlineMaxBackoff)
	c.inl.backoff[k] = b
	c.inl.skip[k] = b
}

// runInline runs r on the reading goroutine and reports whether this
// goroutine still holds the reading role.
//
// While r runs, nobody reads the connection. A device that blocks for a
// long time (a replicated write waiting for its peer, a test device that
// waits for a later request) must not stall the requests behind it, so
// the server's guard (Server.guardLoop) watches inline runs and, when one
// is still going after a tick, moves the reading role to a new goroutine:
// it swaps the state from inlineRunning to inlineTaken and starts
// readLoop. The runner finds out with a compare-and-swap once the device
// returns; if it lost the role it replies like a worker and leaves.
func (c *conn) runInline(r *request) bool {
	c.inl.typ = r.hdr.typ
	c.inl.runs.Add(1)
	c.inl.state.Store(inlineRunning)
	start := time.Now()
	r.exec()
	slow := time.Since(start) > c.s.inlineSlow+time.Duration(r.hdr.length)*inlineSlowPerMiB>>20
	if !c.inl.state.CompareAndSwap(inlineRunning, inlineIdle) {
		r.finish() // like a worker
		return false
	}
	// A slow run cost the requests queued behind it; with nothing queued
	// (the reply is not out yet, so a queue-depth-1 client cannot have
	// sent anything), it cost nobody, and inline stays the cheaper path:
	// a journaled or replicated device at queue depth 1 keeps it.
	if slow && c.pendingInput() {
		c.slowInline(r.hdr.typ)
	} else if !slow {
		c.inl.backoff[inlineKind(r.hdr.typ)] = 0
	}
	// More requests already read from the socket: their replies join this
	// one in the write buffer, and one flush sends them all (see
	// flushBeforeRead).
	c.unflushed = !r.finishReply(c.br.Buffered() == 0)
	return true
}

// flushBeforeRead sends replies that inline runs left in the write buffer
// before the reading role may block on the socket for the next n bytes:
// the client may be waiting for them before it sends more. Only the
// reading role calls it.
func (c *conn) flushBeforeRead(n int) {
	if !c.unflushed || c.br.Buffered() >= n {
		return
	}
	c.unflushed = false
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

// pendingInput reports whether the client has sent bytes we have not read:
// buffered, or in the socket's receive queue. When it cannot tell (not a
// socket), it says yes.
func (c *conn) pendingInput() bool {
	if c.br.Buffered() > 0 || c.rc == nil {
		return true
	}
	n, err := 0, error(nil)
	if cerr := c.rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); cerr != nil || err != nil {
		return true
	}
	return n > 0
}

// takeOver moves the reading role away from a goroutine running a request
// inline (see runInline). Called by the server's guard.
func (c *conn) takeOver() {
	if !c.inl.state.CompareAndSwap(inlineRunning, inlineTaken) {
		return
	}
	// The runner no longer touches these fields once it lost the role,
	// and the go statement orders these writes before the new reader's.
	c.slowInline(c.inl.typ)
	c.log.Debug("nbd: inline request is slow, another goroutine reads on")
	go func() {
		if c.readLoop() {
			close(c.readDone)
		}
	}()
}

// guardCheck takes the reading role away from an inline run that was
// already going at the guard's previous look, and reports whether the
// connection ran anything inline since then. Only the guard calls it.
func (c *conn) guardCheck() bool {
	// State first: a run counted after our look at runs cannot then look
	// like the run we saw last time.
	running := c.inl.state.Load() == inlineRunning
	runs := c.inl.runs.Load()
	if running && runs == c.inl.seen {
		c.takeOver()
	}
	busy := running || runs != c.inl.seen
	c.inl.seen = runs
	return busy
}

// worker runs requests until the connection ends.
func (c *conn) worker(r *request) {
	for {
		r.exec()
		r.finish()
		var ok bool
		if r, ok = <-c.work; !ok {
			return
		}
	}
}

// readFailed logs why reading stopped, at a level that says whose fault
// it was.
func (c *conn) readFailed(err error, what string) {
	switch {
	case c.isKilled() || c.writeErr.Load():
		c.log.Debug("nbd: stopped reading", "err", err)
	case c.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("nbd: stopped reading for shutdown")
	case errors.Is(err, io.EOF):
		c.log.Debug("nbd: client closed the connection without NBD_CMD_DISC")
	default:
		c.s.stats.protocolErrors.Add(1)
		c.log.Warn("nbd: broken request stream, closing connection", "while", what, "err", err)
	}
}

// check validates a request against the export and the protocol and
// returns the error code to answer it with, or CodeOK to run it.
func (c *conn) check(h requestHeader) uint32 {
	var allowed uint16
	switch h.typ {
	case CmdRead, CmdFlush, CmdCache:
	case CmdWrite, CmdTrim:
		if c.readOnly {
			return CodePerm
		}
	case CmdWriteZeroes:
		if c.readOnly {
			return CodePerm
		}
		allowed = CmdFlagNoHole | CmdFlagFastZero
	default:
		return CodeInvalid // BLOCK_STATUS, RESIZE and unknown commands
	}
	if !c.readOnly {
		// SEND_FUA is advertised: FUA is valid on every command.
		allowed |= CmdFlagFUA
	}
	if h.flags&^allowed != 0 {
		return CodeInvalid // DF without structured replies, unknown bits
	}
	if h.typ == CmdFlush {
		if h.offset != 0 || h.length != 0 {
			return CodeInvalid
		}
		return CodeOK
	}
	if h.length == 0 {
		return CodeInvalid
	}
	if (h.typ == CmdRead || h.typ == CmdWrite) && h.length > c.s.maxBlockSize {
		return CodeInvalid
	}
	if h.offset > c.size || uint64(h.length) > c.size-h.offset {
		if h.typ == CmdWrite || h.typ == CmdWriteZeroes {
			return CodeNoSpace // proto.md: writes beyond the end get ENOSPC
		}
		return CodeInvalid
	}
	if h.typ == CmdWriteZeroes && h.flags&CmdFlagFastZero != 0 {
		// We do not advertise SEND_FAST_ZERO; ENOTSUP is the flag's own
		// "cannot do it fast" answer, so a client falls back cleanly.
		return CodeNotSupported
	}
	return CodeOK
}

// exec executes a validated request on the device.
func (r *request) exec() {
	c := r.c
	h := &r.hdr
	fua := h.flags&CmdFlagFUA != 0
	var err error
	switch h.typ {
	case CmdRead:
		r.buf = getBuf(int(h.length))
		err = c.dev.ReadAt(*r.buf, h.offset)
	case CmdWrite:
		err = c.dev.WriteAt(*r.buf, h.offset, fua)
		putBuf(r.buf)
		r.buf = nil
		if err == nil {
			c.s.stats.bytesWritten.Add(uint64(h.length))
		}
	case CmdFlush:
		err = c.dev.Flush()
	case CmdTrim:
		err = c.dev.Trim(h.offset, h.length, fua)
	case CmdWriteZeroes:
		err = c.dev.WriteZeroes(h.offset, h.length, h.flags&CmdFlagNoHole != 0, fua)
	case CmdCache:
		if c.cacher != nil {
			err = c.cacher.Cache(h.offset, h.length)
		}
	}
	r.setErr(err)
}

// setErr sets the reply code for the device's error, if any, and logs it.
func (r *request) setErr(err error) {
	if err == nil {
		return
	}
	h := &r.hdr
	r.code = errorCode(err)
	r.c.log.Debug("nbd: device error", "type", h.typ, "offset", h.offset, "length", h.length, "code", r.code, "err", err)
}

// finish sends or queues the reply of an executed request and ends its
// count in inflight.
func (r *request) finish() { r.finishReply(true) }

// finishReply is finish for the reading role, which may leave the reply
// in the write buffer (flush false) when it knows more requests follow.
// It reports whether nothing of this reply waits in the write buffer for
// a flush by the caller (it was flushed, or it went to the writer, which
// flushes).
func (r *request) finishReply(flush bool) bool {
	c := r.c
	// Fast path: the only request in flight, and the writer idle. Writing
	// the reply here saves a goroutine hand-off per request, which is most
	// of a queue-depth-1 round trip. With other requests in flight the
	// reply goes to the writer, so replies keep sharing syscalls.
	if c.active.Add(-1) == 0 && len(c.replies) == 0 && c.wmu.TryLock() {
		var hb [replyHeaderSize]byte
		c.sendLocked(r, hb[:], flush)
		c.wmu.Unlock()
		c.inflight.Done()
		return flush
	}
	c.replies <- r
	c.inflight.Done()
	return true
}

// sendLocked writes r's reply (flushing if asked), handles a write error,
// and returns r's slot. The caller holds wmu.
func (c *conn) sendLocked(r *request, hb []byte, flush bool) {
	st := &c.s.stats
	// Count before replying, so a client that saw the reply sees it
	// counted.
	st.requests.Add(1)
	if r.code != CodeOK {
		st.errors.Add(1)
	} else if r.hdr.typ == CmdRead {
		st.reads.Add(1)
		st.bytesRead.Add(uint64(r.hdr.length))
	} else if r.hdr.typ == CmdWrite {
		st.writes.Add(1)
	}
	if !c.writeErr.Load() {
		encodeSimpleReply(hb, r.code, r.hdr.handle)
		_, err := c.bw.Write(hb)
		if err == nil && r.code == CodeOK && r.hdr.typ == CmdRead {
			_, err = c.bw.Write(*r.buf)
		}
		if err != nil {
			c.writeFailed(err)
		}
	}
	putBuf(r.buf)
	r.buf = nil
	c.free <- r
	if flush {
		c.flushLocked()
	}
}

// flushLocked sends what bw holds. The caller holds wmu.
func (c *conn) flushLocked() {
	if c.writeErr.Load() {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.writeFailed(err)
	}
}

// writeFailed marks the stream dead after a failed reply write. The
// client is gone: stop the reader too, keep draining so that every
// request slot and buffer comes back. The caller holds wmu.
func (c *conn) writeFailed(err error) {
	if !c.isKilled() {
		c.log.Warn("nbd: writing reply failed, closing connection", "err", err)
	}
	c.writeErr.Store(true)
	c.nc.Close()
}

// writeLoop sends replies in completion order. It flushes only when no
// further reply is queued, so under load several replies share a syscall.
func (c *conn) writeLoop(done chan<- struct{}) {
	defer close(done)
	var hb [replyHeaderSize]byte
	for r := range c.replies {
		c.wmu.Lock()
		flush := false
		if len(c.replies) == 0 {
			// Give workers that are about to finish one chance to
			// queue their replies, so that they share the write.
			runtime.Gosched()
			flush = len(c.replies) == 0
		}
		c.sendLocked(r, hb[:], flush)
		c.wmu.Unlock()
	}
}
