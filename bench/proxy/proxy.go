package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultListen      = "127.0.0.1:0"
	DefaultQueueBytes  = 4 << 20
	DefaultDialTimeout = 5 * time.Second
)

const (
	// maxChunk is the largest read, hence the largest unit the delay line
	// schedules.
	maxChunk = 64 << 10
	// maxBatch bounds the bytes of due chunks written in one call.
	maxBatch = 256 << 10
	// minPacedChunk is the smallest read when a bandwidth cap is set, so a
	// slow link is not paced one byte at a time.
	minPacedChunk = 1 << 10
	// pacingSlack is how far the reader may run ahead of the modelled wire
	// before it sleeps. Delivery times do not depend on it (they follow
	// the wire model exactly); it only keeps timer overshoot from leaving
	// the wire idle.
	pacingSlack = 2 * time.Millisecond
	// fineWindow is the end of each delivery wait that is timed by a
	// fineTimer rather than a Go timer: more than a Go timer's overshoot,
	// short enough to wait uninterruptibly.
	fineWindow = 2 * time.Millisecond
)

// Options configure a Proxy. Only Target (or Dial) is required.
type Options struct {
	// Listen is the address to listen on (default DefaultListen).
	Listen string
	// Target is the upstream address every accepted connection is
	// forwarded to.
	Target string
	// Latency is the one-way delay added in each direction: a round trip
	// through the proxy gains 2×Latency.
	Latency time.Duration
	// Jitter adds a random extra delay in [0, Jitter] to each chunk. Bytes
	// are never reordered: a chunk is never delivered before an earlier
	// one of the same direction.
	Jitter time.Duration
	// Bandwidth caps each direction of each connection, in bytes per
	// second; 0 means unlimited.
	Bandwidth int64
	// QueueBytes bounds the bytes waiting in one direction's delay line
	// (default DefaultQueueBytes). Without a bandwidth cap it limits that
	// direction to QueueBytes/Latency, so keep it above the
	// bandwidth-delay product.
	QueueBytes int
	// DialTimeout bounds each upstream dial (default DefaultDialTimeout).
	DialTimeout time.Duration
	// Listener, when set, is used instead of listening on Listen; the
	// proxy owns it and closes it in Close. With Dial it lets the proxy
	// run over in-memory connections.
	Listener net.Listener
	// Dial, when set, opens upstream connections instead of a TCP dial to
	// Target.
	Dial func(ctx context.Context, target string) (net.Conn, error)
	// CoarseTimers times deliveries with Go timers only. Set it when the
	// proxy runs under testing/synctest, whose fake clock a kernel timer
	// would not follow. Otherwise, on Linux, the last 2 ms of each
	// delivery wait use a timerfd, because Go timers on an idle runtime
	// fire up to about 1 ms late, which would add to every hop.
	CoarseTimers bool
	// Logger receives connection and fault events (default: discarded).
	Logger *slog.Logger
}

// Mode is the proxy's fault state.
type Mode int32

const (
	// ModeUp forwards bytes with the configured latency and bandwidth.
	ModeUp Mode = iota
	// ModeCut aborts every connection and resets new ones at once.
	ModeCut
	// ModeBlackhole keeps connections open and drops every byte.
	ModeBlackhole
	// ModeStall holds every byte (and new connections) until Restore,
	// then delivers them intact.
	ModeStall
)

var modeNames = [...]string{ModeUp: "up", ModeCut: "cut", ModeBlackhole: "blackhole", ModeStall: "stall"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", int32(m))
}

// MarshalText renders the mode's name (for JSON stats).
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Stats is a snapshot of a proxy's counters. Bytes are counted when they
// are delivered, not when they are read.
type Stats struct {
	Mode      Mode
	Latency   time.Duration
	Jitter    time.Duration
	Bandwidth int64
	// BytesToTarget and BytesToClient are bytes delivered in each
	// direction.
	BytesToTarget int64
	BytesToClient int64
	// BytesDropped are bytes discarded by Blackhole.
	BytesDropped int64
	// Accepted counts every incoming connection, refused ones included.
	Accepted int64
	// Refused counts connections reset at accept because of Cut: each is
	// one reconnect attempt by a client.
	Refused int64
	// Aborted counts established connections reset by Cut, by Restore
	// (after they lost bytes to Blackhole) or by Close.
	Aborted int64
	// DialFailures counts upstream dials that failed; the client
	// connection was reset.
	DialFailures int64
	// Active is the number of connections currently proxied (blackholed
	// ones included).
	Active int
}

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	opts Options
	ln   net.Listener
	log  *slog.Logger

	latency   atomic.Int64
	jitter    atomic.Int64
	bandwidth atomic.Int64
	// mode mirrors mu.mode so the data path can check "up" without the
	// lock; every transition stores it under mu.
	mode atomic.Int32

	ctx    context.Context // cancelled by Close; bounds upstream dials
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	stats struct {
		toTarget, toClient, dropped              atomic.Int64
		accepted, refused, aborted, dialFailures atomic.Int64
	}

	mu struct {
		sync.Mutex
		mode    Mode
		changed chan struct{} // closed and replaced at every mode change
		links   map[*link]struct{}
		closed  bool
	}
}

// Start listens and begins proxying in the background.
func Start(opts Options) (*Proxy, error) {
	if opts.Target == "" && opts.Dial == nil {
		return nil, fmt.Errorf("%w: no Target", ErrOptions)
	}
	if opts.Latency < 0 || opts.Jitter < 0 || opts.Bandwidth < 0 || opts.QueueBytes < 0 || opts.DialTimeout < 0 {
		return nil, fmt.Errorf("%w: negative Latency, Jitter, Bandwidth, QueueBytes or DialTimeout", ErrOptions)
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.QueueBytes == 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", opts.Listen); err != nil {
			return nil, fmt.Errorf("proxy: listen %s: %w", opts.Listen, err)
		}
	}
	p := &Proxy{opts: opts, ln: ln, done: make(chan struct{})}
	p.log = log.With("proxy", ln.Addr().String(), "target", opts.Target)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.latency.Store(int64(opts.Latency))
	p.jitter.Store(int64(opts.Jitter))
	p.bandwidth.Store(opts.Bandwidth)
	p.mu.changed = make(chan struct{})
	p.mu.links = make(map[*link]struct{})
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency changes the one-way delay for bytes read from now on; bytes
// already queued keep their delivery time (and order).
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(max(d, 0))) }

// SetJitter changes the random extra delay for bytes read from now on.
func (p *Proxy) SetJitter(d time.Duration) { p.jitter.Store(int64(max(d, 0))) }

// SetBandwidth changes the per-direction cap (bytes/s, 0 = unlimited).
func (p *Proxy) SetBandwidth(bps int64) { p.bandwidth.Store(max(bps, 0)) }

// Mode is the current fault state.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// Cut partitions the link the loud way: every proxied connection is
// aborted with a TCP reset at once, and until Restore every new
// connection is accepted and reset immediately (counted in
// Stats.Refused). Reconnect attempts therefore fail fast, as after a
// router has given up on a dead route, which drives a client's backoff
// loop instead of parking it in a connect or handshake timeout.
func (p *Proxy) Cut() { p.setMode(ModeCut) }

// Blackhole partitions the link silently: connections stay open and every
// byte in either direction is dropped (Stats.BytesDropped), so only
// timeouts (heartbeats) can notice. New connections are accepted and
// their bytes dropped too; no upstream connection is made for them.
// A connection that lost bytes cannot carry on (its stream has a hole),
// so leaving Blackhole aborts it; connections that stayed idle survive.
func (p *Proxy) Blackhole() { p.setMode(ModeBlackhole) }

// Stall partitions the link the way a short outage looks to TCP: nothing
// is delivered, the senders' buffers fill up and writes block, new
// connections are accepted but held, and on Restore everything resumes
// intact, as after retransmission.
func (p *Proxy) Stall() { p.setMode(ModeStall) }

// Restore heals the link: new connections are proxied again, stalled
// bytes and connections resume, and blackholed connections that lost
// bytes are aborted.
func (p *Proxy) Restore() { p.setMode(ModeUp) }

func (p *Proxy) setMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed || p.mu.mode == m {
		return
	}
	// Aborting under the lock orders it before the new mode is visible:
	// no lossy connection can deliver a byte after the hole in its stream,
	// and drop (which also takes the lock) cannot mark another one
	// lossy after this scan.
	n := 0
	for l := range p.mu.links {
		if m == ModeCut || (m != ModeBlackhole && l.lossy.Load()) {
			// Forget it now, so Stats.Active is right as soon as Cut
			// or Restore returns; its goroutines finish on their own.
			delete(p.mu.links, l)
			l.abort()
			n++
		}
	}
	p.stats.aborted.Add(int64(n))
	p.log.Info("proxy mode", "from", p.mu.mode, "to", m, "aborted", n)
	p.mu.mode = m
	p.mode.Store(int32(m))
	close(p.mu.changed)
	p.mu.changed = make(chan struct{})
}

// modeState returns the mode and a channel closed at the next change.
func (p *Proxy) modeState() (Mode, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.mode, p.mu.changed
}

// drop accounts n bytes of l as blackholed, if the proxy is still in
// ModeBlackhole; false means the mode changed and the caller must look
// again.
func (p *Proxy) drop(l *link, n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.mode != ModeBlackhole {
		return false
	}
	l.lossy.Store(true)
	p.stats.dropped.Add(int64(n))
	return true
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	mode, active := p.mu.mode, len(p.mu.links)
	p.mu.Unlock()
	return Stats{
		Mode:          mode,
		Latency:       time.Duration(p.latency.Load()),
		Jitter:        time.Duration(p.jitter.Load()),
		Bandwidth:     p.bandwidth.Load(),
		BytesToTarget: p.stats.toTarget.Load(),
		BytesToClient: p.stats.toClient.Load(),
		BytesDropped:  p.stats.dropped.Load(),
		Accepted:      p.stats.accepted.Load(),
		Refused:       p.stats.refused.Load(),
		Aborted:       p.stats.aborted.Load(),
		DialFailures:  p.stats.dialFailures.Load(),
		Active:        active,
	}
}

// Close stops listening, aborts every connection and returns once every
// goroutine of the proxy has exited. A second Close returns ErrClosed.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.mu.closed = true
	for l := range p.mu.links {
		delete(p.mu.links, l)
		l.abort()
		p.stats.aborted.Add(1)
	}
	p.mu.Unlock()
	close(p.done)
	p.cancel()
	err := p.ln.Close()
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("proxy: close listener: %w", err)
	}
	return nil
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, do not spin.
			p.log.Warn("proxy accept", "err", err)
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.stats.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dispatches one accepted connection according to the mode.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	for {
		mode, changed := p.modeState()
		switch mode {
		case ModeStall:
			// Hold the connection like a SYN retransmitted until the
			// route comes back.
			select {
			case <-changed:
				continue
			case <-p.done:
				reset(client)
				return
			}
		case ModeCut:
			p.refuse(client)
			return
		case ModeBlackhole:
			p.hole(client)
			return
		}
		break
	}
	up, err := p.dial()
	if err != nil {
		p.stats.dialFailures.Add(1)
		p.log.Warn("proxy dial", "client", client.RemoteAddr().String(), "err", err)
		reset(client)
		return
	}
	l := &link{p: p, client: client, upstream: up, done: make(chan struct{})}
	if err := p.register(l, false); err != nil {
		if errors.Is(err, errRegisterCut) {
			p.stats.refused.Add(1)
		}
		l.abort()
		return
	}
	p.log.Debug("proxy connection", "client", client.RemoteAddr().String())
	l.run()
	p.unregister(l)
}

func (p *Proxy) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.opts.DialTimeout)
	defer cancel()
	if p.opts.Dial != nil {
		return p.opts.Dial(ctx, p.opts.Target)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", p.opts.Target)
}

func (p *Proxy) refuse(client net.Conn) {
	p.stats.refused.Add(1)
	reset(client)
}

// hole swallows a connection accepted during Blackhole: no upstream, every
// byte dropped, aborted when the mode changes.
func (p *Proxy) hole(client net.Conn) {
	l := &link{p: p, client: client, done: make(chan struct{})}
	l.lossy.Store(true)
	if err := p.register(l, true); err != nil {
		if errors.Is(err, errRegisterCut) {
			p.stats.refused.Add(1)
		}
		// Blackhole ended meanwhile: the client sees a reset and retries.
		l.abort()
		return
	}
	buf := make([]byte, maxChunk)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			p.drop(l, n)
		}
		if err != nil {
			break
		}
	}
	l.abort()
	p.unregister(l)
}

var (
	errRegisterClosed = errors.New("proxy closed")
	errRegisterCut    = errors.New("link cut")
	errRegisterMode   = errors.New("blackhole ended")
)

// register adds l to the links that mode changes and Close act on. It
// fails if the proxy is closed or cut, or (for a hole) no longer in
// Blackhole: the check and the insertion are atomic with setMode.
func (p *Proxy) register(l *link, hole bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.mu.closed:
		return errRegisterClosed
	case p.mu.mode == ModeCut:
		return errRegisterCut
	case hole && p.mu.mode != ModeBlackhole:
		return errRegisterMode
	}
	p.mu.links[l] = struct{}{}
	return nil
}

func (p *Proxy) unregister(l *link) {
	p.mu.Lock()
	delete(p.mu.links, l)
	p.mu.Unlock()
}

// delay is the latency for a chunk read now.
func (p *Proxy) delay() time.Duration {
	d := time.Duration(p.latency.Load())
	if j := p.jitter.Load(); j > 0 {
		d += time.Duration(rand.Int64N(j + 1))
	}
	return d
}

// reset closes c with a TCP RST where possible (SO_LINGER 0), which is
// what a peer sees when a connection is aborted rather than closed.
func reset(c net.Conn) {
	if c == nil {
		return
	}
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}
