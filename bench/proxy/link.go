package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is one proxied connection: a client and its upstream, with a
// reader and a deliverer per direction joined by a delay line.
type link struct {
	p        *Proxy
	client   net.Conn
	upstream net.Conn // nil for a connection swallowed by Blackhole
	// lossy is set once a byte of this link was dropped; such a link is
	// aborted when Blackhole ends.
	lossy atomic.Bool
	done  chan struct{} // closed by abort or shutdown
	once  sync.Once
}

// abort ends the link with a reset on both sides. It does not block, so
// setMode and Close can call it under the proxy's lock.
func (l *link) abort() {
	l.once.Do(func() {
		close(l.done)
		reset(l.client)
		reset(l.upstream)
	})
}

// shutdown ends the link with an orderly close on both sides.
func (l *link) shutdown() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		if l.upstream != nil {
			_ = l.upstream.Close()
		}
	})
}

// direction is one half of a link.
type direction struct {
	src, dst net.Conn
	q        *delayLine
	bytes    *atomic.Int64 // delivered-bytes counter of the proxy
}

// run forwards both directions until both have delivered their EOF or the
// link is aborted.
func (l *link) run() {
	p := l.p
	dirs := [2]direction{
		{src: l.client, dst: l.upstream, q: newDelayLine(p.opts.QueueBytes), bytes: &p.stats.toTarget},
		{src: l.upstream, dst: l.client, q: newDelayLine(p.opts.QueueBytes), bytes: &p.stats.toClient},
	}
	var wg sync.WaitGroup
	for i := range dirs {
		d := &dirs[i]
		wg.Add(2)
		go func() { defer wg.Done(); l.readLoop(d) }()
		go func() { defer wg.Done(); l.deliverLoop(d) }()
	}
	wg.Wait()
	l.shutdown()
}

// admit decides what happens to n bytes (or an end marker) the link is
// about to queue or deliver: forward them (after waiting out a Stall),
// or drop them (Blackhole). alive is false once the link is over.
func (l *link) admit(n int) (forward, alive bool) {
	p := l.p
	for {
		if Mode(p.mode.Load()) == ModeUp {
			return true, true
		}
		mode, changed := p.modeState()
		switch mode {
		case ModeUp:
			return true, true
		case ModeBlackhole:
			if p.drop(l, n) {
				return false, true
			}
		case ModeStall:
			select {
			case <-changed:
			case <-l.done:
				return false, false
			}
		default: // ModeCut: setMode has aborted this link already.
			return false, false
		}
	}
}

// readLoop reads src, stamps each chunk with its delivery time and queues
// it. Reading never waits for delivery, so any number of chunks are in
// flight at once, as on a real wire; only a full delay line or the
// bandwidth pacing hold the reader back, which is the backpressure a
// real sender sees.
func (l *link) readLoop(d *direction) {
	p := l.p
	buf := make([]byte, maxChunk)
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()
	// wireFree is when the modelled wire has finished sending what was
	// queued so far; last is the latest delivery time handed out, which
	// jitter or a lowered latency must never undercut.
	var wireFree, last time.Time
	for {
		size := maxChunk
		if rate := p.bandwidth.Load(); rate > 0 {
			// About 5 ms of data per chunk keeps the pacing smooth.
			size = int(min(max(rate/200, minPacedChunk), maxChunk))
		}
		n, err := d.src.Read(buf[:size])
		if n > 0 {
			fwd, alive := l.admit(n)
			if !alive {
				return
			}
			if fwd {
				now := time.Now()
				sent := now
				rate := p.bandwidth.Load()
				if rate > 0 {
					start := later(now, wireFree)
					wireFree = start.Add(time.Duration(int64(n) * int64(time.Second) / rate))
					sent = wireFree
				}
				at := later(sent.Add(p.delay()), last)
				last = at
				data := make([]byte, n)
				copy(data, buf[:n])
				if !d.q.push(chunk{data: data, at: at}, l.done) {
					return
				}
				if rate > 0 && !l.sleepUntil(pace, wireFree.Add(-pacingSlack)) {
					return
				}
			}
		}
		if err != nil {
			select {
			case <-l.done: // our own abort or shutdown closed src
				return
			default:
			}
			kind := chunkEOF
			if !errors.Is(err, io.EOF) {
				kind = chunkReset
			}
			fwd, alive := l.admit(0)
			if fwd && alive {
				// The FIN or RST travels the wire too, behind the data.
				at := later(later(time.Now(), wireFree).Add(p.delay()), last)
				d.q.push(chunk{kind: kind, at: at}, l.done)
			}
			return
		}
	}
}

// deliverLoop writes each queued chunk to dst at its delivery time, in
// order.
func (l *link) deliverLoop(d *direction) {
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	var fine *fineTimer // made on first use: links without latency need none
	// slip is a moving average of how late the fine timer wakes us.
	var slip time.Duration
	defer func() { fine.close() }()
	for {
		c, ok := d.q.pop(l.done)
		if !ok {
			return
		}
		if l.p.opts.CoarseTimers {
			if !l.sleepUntil(wait, c.at) {
				return
			}
		} else if time.Until(c.at) > 0 {
			// Go timer (interruptible) for the bulk of the wait, then a
			// precise one for the last stretch, which Go's would overshoot.
			if !l.sleepUntil(wait, c.at.Add(-fineWindow)) {
				return
			}
			if fine == nil {
				fine = newFineTimer()
			}
			// Even a timerfd wakes us late: the thread (on a VM, the
			// virtual CPU) was asleep. Aim early by the recent slip, so
			// deliveries land on time on average.
			target := c.at.Add(-slip)
			fine.sleep(time.Until(target))
			if late := time.Since(target); late >= 0 && late < fineWindow {
				slip += (late - slip) / 8
			}
		}
		// Chunks that fell due meanwhile go out in the same write: fewer
		// system calls and wake-ups when a burst of requests is in flight.
		bufs, n := net.Buffers{c.data}, len(c.data)
		if c.kind == chunkData {
			now := time.Now()
			for n < maxBatch {
				next, ok := d.q.popDue(now, maxBatch-n)
				if !ok {
					break
				}
				bufs = append(bufs, next.data)
				n += len(next.data)
			}
		}
		fwd, alive := l.admit(n)
		if !alive {
			return
		}
		if !fwd {
			continue
		}
		switch c.kind {
		case chunkData:
			if _, err := bufs.WriteTo(d.dst); err != nil {
				l.abort()
				return
			}
			d.bytes.Add(int64(n))
		case chunkEOF:
			cw, ok := d.dst.(interface{ CloseWrite() error })
			if !ok {
				// No half-close on this kind of connection: close it all.
				l.shutdown()
				return
			}
			if err := cw.CloseWrite(); err != nil {
				l.abort()
			}
			return
		case chunkReset:
			l.abort()
			return
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// sleepUntil waits for t on timer; false if the link ended first.
func (l *link) sleepUntil(timer *time.Timer, t time.Time) bool {
	dur := time.Until(t)
	if dur <= 0 {
		return true
	}
	timer.Reset(dur)
	select {
	case <-timer.C:
		return true
	case <-l.done:
		return false
	}
}

type chunkKind uint8

const (
	chunkData chunkKind = iota
	chunkEOF
	chunkReset
)

// chunk is what one read produced, due for delivery at at.
type chunk struct {
	data []byte
	at   time.Time
	kind chunkKind
}

// delayLine is a FIFO of chunks bounded in bytes, for one producer and one
// consumer.
type delayLine struct {
	limit int
	ready chan struct{} // signalled after a push
	space chan struct{} // signalled after a pop
	mu    struct {
		sync.Mutex
		q     []chunk
		bytes int
	}
}

func newDelayLine(limit int) *delayLine {
	return &delayLine{limit: limit, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// push appends c, waiting while the line is full; a chunk larger than the
// limit is admitted into an empty line. False if done closed first.
func (q *delayLine) push(c chunk, done <-chan struct{}) bool {
	for {
		q.mu.Lock()
		if q.mu.bytes == 0 || q.mu.bytes+len(c.data) <= q.limit {
			q.mu.q = append(q.mu.q, c)
			q.mu.bytes += len(c.data)
			q.mu.Unlock()
			signal(q.ready)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-done:
			return false
		}
	}
}

// pop removes the oldest chunk, waiting while the line is empty. False if
// done closed first.
func (q *delayLine) pop(done <-chan struct{}) (chunk, bool) {
	for {
		q.mu.Lock()
		if len(q.mu.q) > 0 {
			c := q.mu.q[0]
			q.mu.q[0] = chunk{}
			q.mu.q = q.mu.q[1:]
			q.mu.bytes -= len(c.data)
			q.mu.Unlock()
			signal(q.space)
			return c, true
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-done:
			return chunk{}, false
		}
	}
}

// popDue removes the oldest chunk if it is data, due at or before now and
// at most max bytes; it never waits.
func (q *delayLine) popDue(now time.Time, max int) (chunk, bool) {
	q.mu.Lock()
	if len(q.mu.q) == 0 {
		q.mu.Unlock()
		return chunk{}, false
	}
	c := q.mu.q[0]
	if c.kind != chunkData || c.at.After(now) || len(c.data) > max {
		q.mu.Unlock()
		return chunk{}, false
	}
	q.mu.q[0] = chunk{}
	q.mu.q = q.mu.q[1:]
	q.mu.bytes -= len(c.data)
	q.mu.Unlock()
	signal(q.space)
	return c, true
}

// signal wakes the other side without blocking; one pending wake-up is
// enough because the waiter re-checks the queue.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
