package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkPipelined sends 4 KiB request/echo pairs with 32 in flight over
// a 5 ms round trip. A proxy that pipelines reaches about 32/5ms = 6400
// ops/s ("x_ideal" near 1); one that delays chunk after chunk reaches a
// small fraction of it. The baseline in the same run is the echo server
// without the proxy.
func BenchmarkPipelined(b *testing.B) {
	const inflight, size, rtt = 32, 4 << 10, 5 * time.Millisecond
	run := func(b *testing.B, addr string, ideal float64) {
		c := dial(b, addr)
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		slots := make(chan struct{}, inflight)
		go func() {
			msg := make([]byte, size)
			for range b.N {
				slots <- struct{}{}
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, size)
		start := time.Now()
		b.ResetTimer()
		for range b.N {
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			<-slots
		}
		el := time.Since(start)
		ops := float64(b.N) / el.Seconds()
		b.ReportMetric(ops, "ops/s")
		if ideal > 0 {
			b.ReportMetric(ops/ideal, "x_ideal")
		}
	}
	echo := startEcho(b)
	b.Run("direct", func(b *testing.B) { run(b, echo.addr(), 0) })
	b.Run("proxy-5ms-rtt", func(b *testing.B) {
		p := startProxy(b, Options{Target: echo.addr(), Latency: rtt / 2})
		run(b, p.Addr(), inflight/rtt.Seconds())
	})
}

// BenchmarkThroughput moves bulk data one way through the proxy with no
// shaping, to show the proxy's own ceiling.
func BenchmarkThroughput(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	p := startProxy(b, Options{Target: ln.Addr().String()})
	c := dial(b, p.Addr())
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripOverhead sends one 64-byte message at a time through a
// proxy adding 2.5 ms each way and reports how much longer than 5 ms the
// round trip takes ("us_over", the proxy's own cost on top of the delay
// it was asked for), next to the same echo without the proxy.
func BenchmarkRoundTripOverhead(b *testing.B) {
	const rtt = 5 * time.Millisecond
	run := func(b *testing.B, addr string, want time.Duration) {
		c := dial(b, addr)
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		msg := make([]byte, 64)
		var total time.Duration
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, msg); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
		}
		b.ReportMetric(float64((total/time.Duration(b.N) - want).Microseconds()), "us_over")
	}
	echo := startEcho(b)
	b.Run("direct", func(b *testing.B) { run(b, echo.addr(), 0) })
	b.Run("proxy-5ms-rtt", func(b *testing.B) {
		p := startProxy(b, Options{Target: echo.addr(), Latency: rtt / 2})
		run(b, p.Addr(), rtt)
	})
}
