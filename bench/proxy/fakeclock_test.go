package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run the proxy over net.Pipe inside a synctest bubble, where
// time is fake and advances only when every goroutine is blocked. The
// timing model can then be checked exactly, with no dependence on the
// machine's speed.

type memRig struct {
	p        *Proxy
	front    *memListener // the proxy listens here
	back     *memListener // the echo server listens here
	waitEcho func()
}

func startMemRig(t *testing.T, opts Options) *memRig {
	r := &memRig{front: newMemListener(), back: newMemListener()}
	r.waitEcho = memEcho(r.back)
	opts.Listener, opts.Dial, opts.Target = r.front, r.back.dial, "echo"
	opts.CoarseTimers = true // kernel timers do not follow the fake clock
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.p = p
	return r
}

func (r *memRig) dial(t *testing.T) net.Conn {
	c, err := r.front.dial(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stop closes everything; synctest.Test then checks that no goroutine of
// the bubble is left.
func (r *memRig) stop(t *testing.T) {
	if err := r.p.Close(); err != nil {
		t.Error(err)
	}
	_ = r.back.Close()
	r.waitEcho()
}

// With 10 ms each way, 100 messages sent back to back all come back one
// round trip after they were sent: the delay line pipelines them. A proxy
// that slept before forwarding each chunk would need about 100×10 ms.
func TestPipeliningFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lat, msgs, size = 10 * time.Millisecond, 100, 16
		r := startMemRig(t, Options{Latency: lat})
		defer r.stop(t)
		c := r.dial(t)
		defer c.Close()
		start := time.Now()
		go func() {
			for i := range msgs {
				msg := make([]byte, size)
				binary.BigEndian.PutUint64(msg, uint64(i))
				if _, err := c.Write(msg); err != nil {
					return
				}
			}
		}()
		var first time.Duration
		buf := make([]byte, size)
		for i := range msgs {
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint64(buf); got != uint64(i) {
				t.Fatalf("message %d came back as %d", i, got)
			}
			if i == 0 {
				first = time.Since(start)
			}
		}
		all := time.Since(start)
		if first != 2*lat {
			t.Errorf("first echo after %v, want exactly %v", first, 2*lat)
		}
		serialized := msgs * 2 * lat
		if all >= serialized/2 || all != 2*lat {
			t.Errorf("%d messages took %v; want %v (serialized would be %v)", msgs, all, 2*lat, serialized)
		}
	})
}

// Jitter varies delays but never reorders bytes.
func TestJitterKeepsOrderFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMemRig(t, Options{Latency: time.Millisecond, Jitter: 5 * time.Millisecond})
		defer r.stop(t)
		c := r.dial(t)
		defer c.Close()
		var want bytes.Buffer
		for i := range 300 {
			fmt.Fprintf(&want, "msg-%04d;", i)
		}
		go func() {
			for _, m := range bytes.SplitAfter(want.Bytes(), []byte(";")) {
				if _, err := c.Write(m); err != nil {
					return
				}
				time.Sleep(time.Millisecond / 4) // spread reads over the jitter window
			}
		}()
		got := make([]byte, want.Len())
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("stream reordered:\n got %.80q\nwant %.80q", got, want.Bytes())
		}
	})
}

// The bandwidth model is exact: N bytes each way at R bytes/s with
// latency L come back after N/R + L + L + (last chunk's serialization on
// the way back); a live SetBandwidth(0) removes the cap.
func TestBandwidthFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate, size, lat = 100_000, 50_000, 5 * time.Millisecond
		r := startMemRig(t, Options{Latency: lat, Bandwidth: rate})
		defer r.stop(t)
		c := r.dial(t)
		defer c.Close()
		payload := bytes.Repeat([]byte("0123456789"), size/10)
		transfer := func() time.Duration {
			start := time.Now()
			go func() { _, _ = c.Write(payload) }()
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload changed")
			}
			return time.Since(start)
		}
		wire := time.Duration(size) * time.Second / rate // 500 ms
		// On the way back the echo's last chunk (at most minPacedChunk
		// bytes at this rate) still has to cross the wire.
		lo := wire + 2*lat
		hi := lo + time.Duration(minPacedChunk)*time.Second/rate
		if el := transfer(); el < lo || el > hi {
			t.Errorf("capped transfer took %v, want %v..%v", el, lo, hi)
		}
		r.p.SetBandwidth(0)
		if el := transfer(); el != 2*lat {
			t.Errorf("uncapped transfer took %v, want %v", el, 2*lat)
		}
	})
}

// Bytes already queued when the latency drops keep their order: later
// bytes are never delivered before them.
func TestLatencyDropKeepsOrderFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMemRig(t, Options{Latency: 50 * time.Millisecond})
		defer r.stop(t)
		c := r.dial(t)
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte("first;")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // "first;" is queued at the old latency
		r.p.SetLatency(time.Millisecond)
		if _, err := c.Write([]byte("second;")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("first;second;"))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != "first;second;" {
			t.Fatalf("got %q", got)
		}
		// "first;" goes out at 50 ms and comes back at 51 ms at the new
		// latency; "second;" was held behind it.
		if el := time.Since(start); el != 51*time.Millisecond {
			t.Fatalf("took %v, want 51ms", el)
		}
	})
}

// Stall holds queued bytes for as long as it lasts and loses none.
func TestStallFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startMemRig(t, Options{Latency: 10 * time.Millisecond})
		defer r.stop(t)
		c := r.dial(t)
		defer c.Close()
		start := time.Now()
		if _, err := c.Write([]byte("held")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // "held" is queued before the stall
		r.p.Stall()
		go func() {
			time.Sleep(time.Second)
			r.p.Restore()
		}()
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
			t.Fatalf("read %q, %v", got, err)
		}
		// Due at 10 ms, held until 1 s, back 10 ms later.
		if el := time.Since(start); el != time.Second+10*time.Millisecond {
			t.Fatalf("took %v, want 1.01s", el)
		}
	})
}
