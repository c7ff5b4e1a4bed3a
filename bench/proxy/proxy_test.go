package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestStartOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Target: "127.0.0.1:1", Latency: -1},
		{Target: "127.0.0.1:1", Bandwidth: -1},
		{Target: "127.0.0.1:1", Jitter: -time.Second},
	} {
		if p, err := Start(o); !errors.Is(err, ErrOptions) {
			if p != nil {
				_ = p.Close()
			}
			t.Errorf("Start(%+v) = %v, want ErrOptions", o, err)
		}
	}
	if _, err := Start(Options{Target: "127.0.0.1:1", Listen: "256.0.0.1:0"}); err == nil {
		t.Error("Start on an impossible listen address succeeded")
	}
	p, err := Start(Options{Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}
}

// Large random payloads cross intact in both directions on several
// connections at once, with latency and jitter, and a half-close travels
// through: the client reads the whole echo and then EOF.
func TestIntegrityBothDirections(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, Options{Target: echo.addr(), Latency: time.Millisecond, Jitter: time.Millisecond})
	const conns, size = 4, 2 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*conns)
	for range conns {
		c := dial(t, p.Addr())
		_ = c.SetDeadline(time.Now().Add(waitBudget))
		payload := make([]byte, size)
		_, _ = rand.Read(payload)
		want := sha256.Sum256(payload)
		wg.Add(2)
		go func() {
			defer wg.Done()
			// Odd-sized writes so chunk boundaries fall anywhere.
			for rest := payload; len(rest) > 0; {
				n := min(len(rest), 7919)
				if _, err := c.Write(rest[:n]); err != nil {
					errs <- err
					return
				}
				rest = rest[n:]
			}
			if err := c.CloseWrite(); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			h := sha256.New()
			n, err := io.Copy(h, c) // until EOF: the half-close came back
			if err != nil {
				errs <- err
				return
			}
			if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
				errs <- errors.New("echo differs from payload")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := p.Stats()
	if st.BytesToTarget != conns*size || st.BytesToClient != conns*size {
		t.Errorf("stats %+v, want %d bytes each way", st, conns*size)
	}
}

// Lower bounds only: a round trip through the proxy takes at least twice
// the one-way latency, also after a live change.
func TestLatencyAdded(t *testing.T) {
	echo := startEcho(t)
	const lat = 20 * time.Millisecond
	p := startProxy(t, Options{Target: echo.addr(), Latency: lat})
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("warm-up")) // the dial is not part of the measure
	start := time.Now()
	roundTrip(t, c, []byte("x"))
	if rtt := time.Since(start); rtt < 2*lat {
		t.Fatalf("round trip %v, want >= %v", rtt, 2*lat)
	}
	p.SetLatency(3 * lat / 2)
	start = time.Now()
	roundTrip(t, c, []byte("y"))
	if rtt := time.Since(start); rtt < 3*lat {
		t.Fatalf("round trip after SetLatency %v, want >= %v", rtt, 3*lat)
	}
}

// Moving N bytes through a capped link takes at least N/rate (lower
// bound only; the exact model is checked under the fake clock).
func TestBandwidthCap(t *testing.T) {
	echo := startEcho(t)
	const rate, size = 1 << 20, 256 << 10
	p := startProxy(t, Options{Target: echo.addr(), Bandwidth: rate})
	c := dial(t, p.Addr())
	payload := make([]byte, size)
	_, _ = rand.Read(payload)
	start := time.Now()
	go func() { _, _ = c.Write(payload) }()
	_ = c.SetReadDeadline(time.Now().Add(waitBudget))
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if el, min := time.Since(start), time.Duration(size)*time.Second/rate; el < min {
		t.Fatalf("%d bytes at %d B/s took %v, want >= %v", size, rate, el, min)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload changed")
	}
}

// Cut resets existing connections on both sides, resets new ones at once
// while cut, and Restore lets new connections through.
func TestCutAndRestore(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, Options{Target: echo.addr(), Latency: time.Millisecond})
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("before"))

	p.Cut()
	expectClosed(t, c)
	eventually(t, "the upstream side to be closed", func() bool { return echo.active.Load() == 0 })
	if st := p.Stats(); st.Mode != ModeCut || st.Aborted != 1 || st.Active != 0 {
		t.Fatalf("after Cut: %+v", st)
	}

	for i := range 3 {
		expectRefused(t, p.Addr())
		if got := p.Stats().Refused; got != int64(i+1) {
			t.Fatalf("Refused = %d after %d attempts", got, i+1)
		}
	}

	p.Restore()
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, []byte("after"))
	if st := p.Stats(); st.Mode != ModeUp || st.Active != 1 {
		t.Fatalf("after Restore: %+v", st)
	}
}

// Blackhole drops bytes without closing anything; on Restore the
// connections that lost bytes are aborted and idle ones carry on.
func TestBlackhole(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, Options{Target: echo.addr()})
	busy, idle := dial(t, p.Addr()), dial(t, p.Addr())
	roundTrip(t, busy, []byte("ping"))
	roundTrip(t, idle, []byte("ping"))
	// The delivered-bytes counters move just after the write the client
	// has already read from.
	eventually(t, "the pings to be counted", func() bool { st := p.Stats(); return st.BytesToTarget == 8 && st.BytesToClient == 8 })
	before := p.Stats()

	p.Blackhole()
	msg := bytes.Repeat([]byte("z"), 1000)
	if _, err := busy.Write(msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bytes to be dropped", func() bool { return p.Stats().BytesDropped == 1000 })
	expectSilent(t, busy)
	// A connection opened during the blackhole is accepted and swallowed.
	late := dial(t, p.Addr())
	if _, err := late.Write(msg[:10]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the late bytes to be dropped", func() bool { return p.Stats().BytesDropped == 1010 })
	expectSilent(t, late)
	st := p.Stats()
	if st.BytesToTarget != before.BytesToTarget || st.BytesToClient != before.BytesToClient || st.Active != 3 {
		t.Fatalf("during Blackhole: %+v, before %+v", st, before)
	}
	if echo.active.Load() != 2 {
		t.Fatalf("upstream connections = %d, want 2 (none dialled for the late one)", echo.active.Load())
	}

	p.Restore()
	expectClosed(t, busy)
	expectClosed(t, late)
	roundTrip(t, idle, []byte("still here"))
	roundTrip(t, dial(t, p.Addr()), []byte("new"))
}

// Stall holds bytes and new connections, and Restore delivers all of it
// intact.
func TestStall(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, Options{Target: echo.addr()})
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("ping"))

	p.Stall()
	payload := make([]byte, 1<<20) // more than the socket buffers: the writer blocks
	_, _ = rand.Read(payload)
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(payload); wrote <- err }()
	late := dial(t, p.Addr())
	if _, err := late.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	expectSilent(t, c)
	expectSilent(t, late)
	if echo.active.Load() != 1 {
		t.Fatalf("upstream connections = %d during Stall, want 1", echo.active.Load())
	}

	p.Restore()
	_ = c.SetReadDeadline(time.Now().Add(waitBudget))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("stalled payload changed")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	_ = late.SetReadDeadline(time.Now().Add(waitBudget))
	lb := make([]byte, 4)
	if _, err := io.ReadFull(late, lb); err != nil || string(lb) != "late" {
		t.Fatalf("late connection read %q, %v", lb, err)
	}
	if st := p.Stats(); st.BytesDropped != 0 || st.Aborted != 0 {
		t.Fatalf("Stall lost something: %+v", st)
	}
}

// A reset from the client reaches the server as a reset, and a failed
// upstream dial resets the client.
func TestResetAndDialFailure(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, Options{Target: echo.addr()})
	c := dial(t, p.Addr())
	roundTrip(t, c, []byte("ping"))
	_ = c.SetLinger(0)
	_ = c.Close()
	select {
	case err := <-echo.errs:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server saw %v, want a reset", err)
		}
	case <-time.After(waitBudget):
		t.Fatal("server never saw the reset")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	q := startProxy(t, Options{Target: dead})
	expectRefused(t, q.Addr())
	eventually(t, "the dial failure to be counted", func() bool { return q.Stats().DialFailures == 1 })
}

// Close aborts everything (in every mode a connection can be in) and
// leaves no goroutine behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		echo := startEcho(t)
		p, err := Start(Options{Target: echo.addr(), Latency: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		for range 3 {
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			roundTrip(t, c, []byte("ping"))
			// Leave data in flight in the delay lines.
			_, _ = c.Write(bytes.Repeat([]byte("d"), 64<<10))
		}
		p.Blackhole()
		h, err := net.Dial("tcp", p.Addr()) // swallowed
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, h)
		p.Stall()
		s, err := net.Dial("tcp", p.Addr()) // held before dialling
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, s)
		eventually(t, "5 accepted connections", func() bool { return p.Stats().Accepted == 5 })
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			drainUntilClosed(t, c)
			_ = c.Close()
		}
		echo.close()
	}()
	const slack = 2
	eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+slack })
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{ModeUp: "up", ModeCut: "cut", ModeBlackhole: "blackhole", ModeStall: "stall", Mode(9): "mode(9)"} {
		if m.String() != want {
			t.Errorf("%d: %q, want %q", m, m.String(), want)
		}
	}
}
