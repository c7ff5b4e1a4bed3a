package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Link is what the engine needs from a peer connection. *Conn implements
// it; engine tests can use Pipe (real Conns over net.Pipe) or their own.
type Link interface {
	// Send queues f; nil means queued, not delivered.
	Send(f Frame) error
	// Recv returns the next frame from the peer (never Ping/Pong).
	Recv() (Frame, error)
	// Remote is the peer's Hello from the handshake.
	Remote() Hello
	// RTT is the latest heartbeat round trip (0 before the first).
	RTT() time.Duration
	// Done is closed when the link has failed or been closed; Err says why.
	Done() <-chan struct{}
	Err() error
	Close() error
}

var _ Link = (*Conn)(nil)

// Conn is an established peer link. Send is safe for concurrent use;
// Recv must be called from one goroutine. Two internal goroutines do the
// I/O: a writer that batches queued frames into as few syscalls as
// possible and sends heartbeats, and a reader that verifies frames,
// answers pings and hands everything else to Recv.
type Conn struct {
	opts    ConnOptions
	raw     net.Conn
	bw      *bufio.Writer
	fr      *FrameReader
	enc     EncodeOptions
	local   Hello
	remote  Hello
	agreed  HelloOK
	log     func(msg string, args ...any)
	closeMu sync.Once

	sendq chan outFrame
	// wmu guards bw: the writer goroutine holds it while it writes and
	// flushes; Send writes a frame itself, skipping the hand-off to the
	// writer, when it can take wmu and nothing is queued (pending counts
	// frames in sendq not yet written), so order is kept.
	wmu      sync.Mutex
	pending  atomic.Int64
	ctlq     chan []byte // pongs: small, written before queued data
	recvq    chan Frame
	closeReq chan Goodbye
	done     chan struct{}

	writerDone, readerDone chan struct{}

	mu struct {
		sync.Mutex
		err       error
		closing   bool // Close began: later failures are just its echo
		pingNonce uint64
		pingSent  time.Time
		rtt, srtt time.Duration
	}
	stats struct {
		framesSent, framesRecv     atomic.Uint64
		bytesSent, bytesRecv       atomic.Uint64
		payloadSent, payloadRecv   atomic.Uint64
		compressedSent, bytesSaved atomic.Uint64
		pingsSent, pongsRecv       atomic.Uint64
	}
}

type outFrame struct {
	buf   *[]byte
	raw   int // payload bytes before compression
	saved int
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

func putBuf(bp *[]byte) {
	// Huge buffers (32 MiB ChunkData) would pin memory in the pool.
	if cap(*bp) <= 1<<20 {
		*bp = (*bp)[:0]
		bufPool.Put(bp)
	}
}

func newConn(h *hs, local, remote Hello, agreed HelloOK) *Conn {
	o := h.opts
	c := &Conn{
		opts:   o,
		raw:    h.raw,
		bw:     h.bw,
		fr:     h.fr,
		local:  local,
		remote: remote,
		agreed: agreed,
		enc: EncodeOptions{
			Version:     uint8(agreed.Version),
			Codec:       agreed.Codec,
			CompressMin: o.CompressMin,
			MaxPayload:  o.MaxPayload,
			Gate:        new(CompressGate),
		},
		sendq:      make(chan outFrame, o.SendQueue),
		ctlq:       make(chan []byte, 16),
		recvq:      make(chan Frame, o.RecvQueue),
		closeReq:   make(chan Goodbye, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.log = func(msg string, args ...any) {
		o.Logger.Info(msg, append([]any{"peer", remote.NodeID, "volume", local.VolumeName, "addr", h.raw.RemoteAddr().String()}, args...)...)
	}
	c.fr.setVersion(uint8(agreed.Version))
	// From here on every socket operation gets its own deadline (see
	// deadlineIO); the handshake's overall deadline was cleared.
	h.dio.timeout = o.Timeout
	go c.writeLoop()
	go c.readLoop()
	return c
}

// Local returns the Hello this side sent.
func (c *Conn) Local() Hello { return c.local }

// Remote returns the peer's Hello.
func (c *Conn) Remote() Hello { return c.remote }

// Codec is the compression codec agreed for frames this side sends.
func (c *Conn) Codec() Codec { return c.agreed.Codec }

// Version is the agreed protocol version.
func (c *Conn) Version() uint16 { return c.agreed.Version }

// RemoteAddr is the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// Done is closed once the Conn failed or was closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the Conn ended, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// Send encodes f (copying its data: the caller may reuse its buffers when
// Send returns) and queues it. Frames are written in the order they enter
// the queue, so frames sent by one goroutine keep their order. Send blocks
// while the queue is full. nil means queued, not delivered: if the link
// fails later, queued frames are lost and the engine resends from its
// journal after reconnecting.
func (c *Conn) Send(f Frame) error { return c.SendContext(context.Background(), f) }

// SendContext is Send with a context bounding the wait for queue space.
func (c *Conn) SendContext(ctx context.Context, f Frame) error {
	switch f.(type) {
	case Hello, HelloOK, Refuse, Ping, Pong, Goodbye:
		return fmt.Errorf("%w: %s is sent by the transport itself (use Close/CloseWithReason for Goodbye)", ErrOptions, f.Type())
	}
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	bp := bufPool.Get().(*[]byte)
	b, saved, err := AppendFrame((*bp)[:0], f, c.enc)
	if err != nil {
		putBuf(bp)
		return err
	}
	*bp = b
	of := outFrame{buf: bp, raw: len(b) - HeaderSize + saved, saved: saved}
	if !c.opts.NoDirectWrite && ctx.Done() == nil && c.pending.Load() == 0 && c.wmu.TryLock() {
		// The writer is idle and nothing is queued: write it here (one
		// syscall, no goroutine wake-up on the latency path).
		if c.pending.Load() == 0 {
			ok := c.writeOut(of) && c.flush()
			c.wmu.Unlock()
			if !ok {
				return c.Err()
			}
			return nil
		}
		c.wmu.Unlock()
	}
	c.pending.Add(1)
	select {
	case c.sendq <- of:
		return nil
	case <-c.done:
		c.pending.Add(-1)
		putBuf(bp)
		return c.Err()
	case <-ctx.Done():
		c.pending.Add(-1)
		putBuf(bp)
		return ctx.Err()
	}
}

func (c *Conn) flush() bool {
	if err := c.bw.Flush(); err != nil {
		c.fail(c.classify(err))
		return false
	}
	return true
}

// Recv returns the next frame. Frames that arrived before the link failed
// are still returned; after them Recv returns the reason: ErrPeerTimeout,
// ErrConnLost, a *GoodbyeError (ErrPeerClosed), ErrBadFrame or ErrClosed.
// Byte slices in the frame are owned by the caller.
func (c *Conn) Recv() (Frame, error) {
	f, ok := <-c.recvq
	if !ok {
		return nil, c.Err()
	}
	return f, nil
}

// Close says Goodbye (after the frames already queued), waits a bounded
// time for it to leave, and closes the connection. Idempotent.
func (c *Conn) Close() error { return c.CloseWithReason(ReasonNone, "") }

// CloseWithReason is Close with a reason the peer's Recv reports.
func (c *Conn) CloseWithReason(reason Reason, text string) error {
	c.closeMu.Do(func() {
		c.mu.Lock()
		c.mu.closing = true
		c.mu.Unlock()
		c.closeReq <- Goodbye{Reason: reason, Text: truncText(text)}
		t := time.NewTimer(min(c.opts.Timeout, 2*time.Second))
		select {
		case <-c.writerDone:
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
		c.fail(ErrClosed)
	})
	<-c.writerDone
	<-c.readerDone
	return nil
}

// Abort drops the connection at once, without Goodbye: to the peer it
// looks like a network failure (ErrConnLost).
func (c *Conn) Abort() {
	c.closeMu.Do(func() { c.fail(ErrClosed) })
	<-c.writerDone
	<-c.readerDone
}

// fail records the first error and tears the connection down.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.mu.err != nil {
		c.mu.Unlock()
		return
	}
	if c.mu.closing {
		// The peer reacting to our Goodbye (EOF) is not a failure.
		err = ErrClosed
	}
	c.mu.err = err
	c.mu.Unlock()
	close(c.done)
	// Close the raw connection, not the TLS one: tls.Conn.Close would
	// try to send close_notify and could block on a stuck peer.
	c.raw.Close()
	if !errors.Is(err, ErrClosed) {
		c.log("transport: peer link failed", "err", err)
	}
}

// classify maps an I/O error of the running link to our sentinels.
func (c *Conn) classify(err error) error {
	switch {
	case errors.Is(err, ErrBadFrame):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: no progress for %v", ErrPeerTimeout, c.opts.Timeout)
	}
	return fmt.Errorf("%w: %w", ErrConnLost, err)
}

func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	tick := time.NewTicker(c.opts.HeartbeatInterval)
	defer tick.Stop()
	var nonce uint64
	for {
		select {
		case <-c.done:
			return
		case g := <-c.closeReq:
			c.wmu.Lock()
			c.writeGoodbye(g)
			c.wmu.Unlock()
			return
		case b := <-c.ctlq:
			c.wmu.Lock()
			if !c.writeCtl(b) {
				c.wmu.Unlock()
				return
			}
		case of := <-c.sendq:
			c.wmu.Lock()
			ok := c.writeOut(of)
			c.pending.Add(-1)
			if !ok {
				c.wmu.Unlock()
				return
			}
		case <-tick.C:
			nonce++
			now := time.Now()
			c.mu.Lock()
			c.mu.pingNonce, c.mu.pingSent = nonce, now
			c.mu.Unlock()
			b, _, _ := AppendFrame(nil, Ping{Nonce: nonce, SentNano: now.UnixNano()}, c.enc)
			c.stats.pingsSent.Add(1)
			c.wmu.Lock()
			if !c.writeCtl(b) {
				c.wmu.Unlock()
				return
			}
		}
		// Batch: keep writing while frames are queued, flush (one
		// syscall for the whole batch) only when the queues are empty.
		ok := c.drainAndFlush()
		c.wmu.Unlock()
		if !ok {
			return
		}
	}
}

func (c *Conn) drainAndFlush() bool {
	for {
		select {
		case b := <-c.ctlq:
			if !c.writeCtl(b) {
				return false
			}
			continue
		default:
		}
		select {
		case of := <-c.sendq:
			ok := c.writeOut(of)
			c.pending.Add(-1)
			if !ok {
				return false
			}
		default:
			return c.flush()
		}
	}
}

func (c *Conn) writeCtl(b []byte) bool {
	if _, err := c.bw.Write(b); err != nil {
		c.fail(c.classify(err))
		return false
	}
	c.stats.framesSent.Add(1)
	c.stats.bytesSent.Add(uint64(len(b)))
	c.stats.payloadSent.Add(uint64(len(b) - HeaderSize))
	return true
}

func (c *Conn) writeOut(of outFrame) bool {
	_, err := c.bw.Write(*of.buf)
	n := len(*of.buf)
	putBuf(of.buf)
	if err != nil {
		c.fail(c.classify(err))
		return false
	}
	c.stats.framesSent.Add(1)
	c.stats.bytesSent.Add(uint64(n))
	c.stats.payloadSent.Add(uint64(of.raw))
	if of.saved > 0 {
		c.stats.compressedSent.Add(1)
		c.stats.bytesSaved.Add(uint64(of.saved))
	}
	return true
}

// writeGoodbye flushes what is queued now, then the Goodbye.
func (c *Conn) writeGoodbye(g Goodbye) {
	for n := len(c.sendq); n > 0; n-- {
		ok := c.writeOut(<-c.sendq)
		c.pending.Add(-1)
		if !ok {
			return
		}
	}
	b, _, err := AppendFrame(nil, g, c.enc)
	if err != nil {
		return
	}
	if c.writeCtl(b) {
		if err := c.bw.Flush(); err != nil {
			c.fail(c.classify(err))
		}
	}
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	defer close(c.recvq)
	for {
		raw, err := c.fr.ReadFrame()
		if err != nil {
			c.fail(c.classify(err))
			return
		}
		c.stats.framesRecv.Add(1)
		c.stats.bytesRecv.Add(uint64(HeaderSize + raw.Header.WireLen))
		c.stats.payloadRecv.Add(uint64(raw.Header.RawLen))
		f, err := raw.Decode()
		if err != nil {
			c.fail(err)
			return
		}
		switch v := f.(type) {
		case Ping:
			b, _, _ := AppendFrame(nil, Pong(v), c.enc)
			select {
			case c.ctlq <- b:
			default: // writer is swamped; the peer will ping again
			}
		case Pong:
			c.stats.pongsRecv.Add(1)
			c.onPong(v)
		case Goodbye:
			c.fail(&GoodbyeError{Reason: v.Reason, Text: v.Text})
			return
		case Hello, HelloOK, Refuse:
			c.fail(badFrame("unexpected %s after the handshake", f.Type()))
			return
		default:
			select {
			case c.recvq <- f:
			case <-c.done:
				return
			}
		}
	}
}

func (c *Conn) onPong(p Pong) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Only the latest ping is timed, with the monotonic clock; a late pong
	// for an older ping is ignored rather than misattributed.
	if p.Nonce != c.mu.pingNonce || c.mu.pingSent.IsZero() {
		return
	}
	rtt := time.Since(c.mu.pingSent)
	c.mu.rtt = rtt
	if c.mu.srtt == 0 {
		c.mu.srtt = rtt
	} else {
		c.mu.srtt = (7*c.mu.srtt + rtt) / 8
	}
}

// RTT returns the latest heartbeat round-trip time (0 before the first pong).
func (c *Conn) RTT() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.rtt
}

// Stats are a Conn's counters. Sent counts are taken when the frame went
// into the socket buffer; bytes are on-the-wire (headers included),
// payload bytes are before compression / after decompression.
type Stats struct {
	FramesSent, FramesReceived             uint64
	BytesSent, BytesReceived               uint64
	PayloadBytesSent, PayloadBytesReceived uint64
	CompressedFramesSent                   uint64
	BytesSaved                             uint64 // payload bytes compression saved on sent frames
	PingsSent, PongsReceived               uint64
	RTT, SmoothedRTT                       time.Duration
}

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	rtt, srtt := c.mu.rtt, c.mu.srtt
	c.mu.Unlock()
	s := &c.stats
	return Stats{
		FramesSent: s.framesSent.Load(), FramesReceived: s.framesRecv.Load(),
		BytesSent: s.bytesSent.Load(), BytesReceived: s.bytesRecv.Load(),
		PayloadBytesSent: s.payloadSent.Load(), PayloadBytesReceived: s.payloadRecv.Load(),
		CompressedFramesSent: s.compressedSent.Load(), BytesSaved: s.bytesSaved.Load(),
		PingsSent: s.pingsSent.Load(), PongsReceived: s.pongsRecv.Load(),
		RTT: rtt, SmoothedRTT: srtt,
	}
}

// Pending is the number of received frames waiting for Recv.
func (c *Conn) Pending() int { return len(c.recvq) }
