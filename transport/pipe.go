package transport

import (
	"context"
	"errors"
	"net"
)

// PipeLink is an in-memory peer link for engine tests: two real Conns with
// the same framing, handshake and heartbeats as over TCP, minus TLS.
type PipeLink struct {
	A, B       *Conn // A dialed, B accepted
	rawA, rawB net.Conn
}

// Pipe connects a (dialer) and b (listener) over net.Pipe. Both options
// are used as given except that Insecure is forced on.
func Pipe(ctx context.Context, a, b ConnOptions) (*PipeLink, error) {
	a.Insecure, b.Insecure = true, true
	ra, rb := net.Pipe()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, _, err := Handshake(ctx, rb, ListenOptions{ConnOptions: b})
		ch <- res{c, err}
	}()
	ca, _, errA := DialConn(ctx, ra, a)
	if errA != nil {
		rb.Close() // unblock the listener side
	}
	r := <-ch
	if err := errors.Join(errA, r.err); err != nil {
		if ca != nil {
			ca.Abort()
		}
		if r.c != nil {
			r.c.Abort()
		}
		return nil, err
	}
	return &PipeLink{A: ca, B: r.c, rawA: ra, rawB: rb}, nil
}

// Cut breaks the link as a network failure would: both Conns fail with
// ErrConnLost, no Goodbye.
func (p *PipeLink) Cut() {
	p.rawA.Close()
	p.rawB.Close()
}

// Close closes both Conns cleanly.
func (p *PipeLink) Close() {
	p.A.Close()
	p.B.Close()
}
