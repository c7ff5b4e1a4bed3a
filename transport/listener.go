package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Listener accepts peer links. Handshakes run concurrently (bounded by
// MaxHandshakes), so a slow or hostile client cannot hold up a good one;
// failed handshakes go to OnHandshakeError and never out of Accept.
type Listener struct {
	ln     net.Listener
	opts   ListenOptions
	conns  chan *Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Listen listens on TCP addr ("127.0.0.1:0" picks a port; see Addr).
func Listen(addr string, o ListenOptions) (*Listener, error) {
	if _, err := o.ConnOptions.normalize(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	return NewListener(ln, o)
}

// NewListener serves peer links on an existing listener; it owns ln.
func NewListener(ln net.Listener, o ListenOptions) (*Listener, error) {
	norm, err := o.ConnOptions.normalize()
	if err != nil {
		ln.Close()
		return nil, err
	}
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = 16
	}
	if o.OnHandshakeError == nil {
		logger := norm.Logger
		o.OnHandshakeError = func(remote net.Addr, err error) {
			logger.Warn("transport: peer handshake failed", "remote", remote.String(), "err", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{ln: ln, opts: o, conns: make(chan *Conn), ctx: ctx, cancel: cancel}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next connection that completed its handshake; the
// peer's Hello is c.Remote(). It fails only with ctx's error or ErrClosed.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, ErrClosed
	}
}

// Close stops listening, aborts handshakes in progress and waits for them.
// Conns already returned by Accept are not affected.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.ln.Close()
	})
	l.wg.Wait()
	return nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	sem := make(chan struct{}, l.opts.MaxHandshakes)
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, don't spin.
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-l.ctx.Done():
				return
			}
		}
		select {
		case sem <- struct{}{}:
		case <-l.ctx.Done():
			nc.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-sem }()
			c, _, err := Handshake(l.ctx, nc, l.opts)
			if err != nil {
				l.opts.OnHandshakeError(nc.RemoteAddr(), err)
				return
			}
			select {
			case l.conns <- c:
			case <-l.ctx.Done():
				c.CloseWithReason(ReasonShutdown, "listener closed")
			}
		}()
	}
}
