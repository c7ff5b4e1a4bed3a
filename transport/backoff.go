package transport

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Backoff computes reconnect delays: exponential from Min to Max with
// random jitter so that both nodes (and many volumes) don't redial in
// lockstep. Zero fields take defaults. Not safe for concurrent use.
type Backoff struct {
	Min    time.Duration // first delay (default 100 ms)
	Max    time.Duration // cap (default 30 s)
	Factor float64       // growth per attempt (default 2)
	// Jitter in [0, 1]: each delay is drawn uniformly from
	// [d*(1-Jitter), d] (default 0.3).
	Jitter float64
	// Rand returns a float in [0, 1); tests make it deterministic
	// (default math/rand/v2).
	Rand func() float64

	attempt int
}

// Next returns the delay before the next attempt and advances.
func (b *Backoff) Next() time.Duration {
	lo, hi, factor, jitter := b.Min, b.Max, b.Factor, b.Jitter
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	if hi < lo {
		hi = lo
	}
	if factor < 1 {
		factor = 2
	}
	if jitter <= 0 || jitter > 1 {
		jitter = 0.3
	}
	d := float64(lo)
	for i := 0; i < b.attempt && d < float64(hi); i++ {
		d *= factor
	}
	d = min(d, float64(hi))
	b.attempt++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	d -= d * jitter * r()
	return time.Duration(d)
}

// Reset starts over at Min; call it after a successful connection.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempt is the number of delays handed out since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Wait sleeps Next() or until ctx is done.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Redialer keeps dialing the peer until a link is up or ctx is done.
type Redialer struct {
	Options DialOptions
	Backoff Backoff
	// OnError is told about each failed attempt and the wait before the next.
	OnError func(attempt int, err error, wait time.Duration)
	// Dial replaces transport.Dial (tests).
	Dial func(ctx context.Context, o DialOptions) (*Conn, Hello, error)
}

// Connect dials with backoff until success (the backoff is then reset,
// so the next outage starts from Min again) or ctx is done. Invalid
// options fail at once: retrying cannot fix them.
func (r *Redialer) Connect(ctx context.Context) (*Conn, Hello, error) {
	dial := r.Dial
	if dial == nil {
		dial = Dial
	}
	for {
		c, h, err := dial(ctx, r.Options)
		if err == nil {
			r.Backoff.Reset()
			return c, h, nil
		}
		if errors.Is(err, ErrOptions) {
			return nil, Hello{}, err
		}
		if ctx.Err() != nil {
			return nil, Hello{}, ctx.Err()
		}
		attempt := r.Backoff.Attempt() + 1
		wait := r.Backoff.Next()
		if r.OnError != nil {
			r.OnError(attempt, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, Hello{}, ctx.Err()
		}
	}
}
