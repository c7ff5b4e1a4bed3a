package durable

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"time"
)

// RTTOptions shape a loopback ping-pong.
type RTTOptions struct {
	// Rounds is how many measured round trips (default 20000).
	Rounds int
	// Warmup round trips are made first and not measured (default 1000).
	Warmup int
	// Size is the message size in bytes (default 64).
	Size int
	// Timeout bounds the whole measurement (default 30 s).
	Timeout time.Duration
}

// LoopbackRTT measures the TCP round trip on 127.0.0.1: a client sends
// Size bytes, an echo server sends them back, one message in flight, on
// one connection with Nagle off (Go's default). It is the network part of
// the floor under a replicated write on a loopback pair. Rate is round
// trips per second; P50/P99 are the round-trip percentiles.
func LoopbackRTT(ctx context.Context, o RTTOptions) (Measure, error) {
	if o.Rounds <= 0 {
		o.Rounds = 20000
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	} else if o.Warmup == 0 {
		o.Warmup = 1000
	}
	if o.Size <= 0 {
		o.Size = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Measure{}, fmt.Errorf("durable: rtt: %w", err)
	}
	defer ln.Close()
	deadline := time.Now().Add(o.Timeout)
	echoDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoDone <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		buf := make([]byte, o.Size)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				echoDone <- err
				return
			}
			if _, err := c.Write(buf); err != nil {
				echoDone <- err
				return
			}
		}
	}()
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return Measure{}, fmt.Errorf("durable: rtt: %w", err)
	}
	// Closing the connection when ctx ends unblocks the loop below.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(deadline)
	msg := make([]byte, o.Size)
	in := make([]byte, o.Size)
	lat := make([]time.Duration, 0, o.Rounds)
	var measuredFrom time.Time
	for i := range o.Warmup + o.Rounds {
		if i == o.Warmup {
			measuredFrom = time.Now()
		}
		t := time.Now()
		if _, err := c.Write(msg); err != nil {
			c.Close()
			return Measure{}, fmt.Errorf("durable: rtt: %w", errors.Join(err, ctx.Err()))
		}
		if _, err := io.ReadFull(c, in); err != nil {
			c.Close()
			return Measure{}, fmt.Errorf("durable: rtt: %w", errors.Join(err, ctx.Err()))
		}
		if i >= o.Warmup {
			lat = append(lat, time.Since(t))
		}
	}
	elapsed := time.Since(measuredFrom)
	c.Close()
	if err := <-echoDone; err != nil {
		return Measure{}, fmt.Errorf("durable: rtt echo: %w", err)
	}
	p50, p99 := percentiles(lat)
	return Measure{Rate: float64(len(lat)) / elapsed.Seconds(), P50: p50, P99: p99}, nil
}

// percentiles returns the 50th and 99th percentile of lat (nearest rank);
// lat is sorted in place.
func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p * float64(len(lat))))
		return lat[min(max(i-1, 0), len(lat)-1)]
	}
	return rank(0.50), rank(0.99)
}
