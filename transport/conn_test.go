package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// handshakeByHand plays the dialer's side of the handshake on nc with
// nothing behind it, so the test controls what happens afterwards.
func handshakeByHand(t *testing.T, nc net.Conn, h Hello) {
	t.Helper()
	h.MinVersion, h.MaxVersion = 1, 1
	if _, err := nc.Write(encodeOrDie(t, h, EncodeOptions{})); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	fr := NewFrameReader(bufio.NewReader(nc), ReaderOptions{})
	for _, want := range []FrameType{TypeHello, TypeHelloOK} {
		raw, err := fr.ReadFrame()
		if err != nil || raw.Header.Type != want {
			t.Fatalf("by-hand handshake: got %v %v, want %s", raw.Header.Type, err, want)
		}
	}
	if _, err := nc.Write(encodeOrDie(t, HelloOK{Version: 1}, EncodeOptions{})); err != nil {
		t.Fatal(err)
	}
}

func TestHeartbeatTimeoutDetectsSilentPeer(t *testing.T) {
	o := insecureOpts("b", "a", RoleSecondary)
	o.HeartbeatInterval, o.Timeout = 20*time.Millisecond, 300*time.Millisecond
	l, results := startListener(t, ListenOptions{ConnOptions: o})
	nc := rawPeer(t, l.Addr().String(), nil)
	handshakeByHand(t, nc, testHello("a", RolePrimary))
	r := waitResult(t, results)
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The peer's TCP stays up but it never sends again: only the
	// heartbeat timeout can notice.
	_, err := recvWithin(t, r.c)
	if !errors.Is(err, ErrPeerTimeout) {
		t.Fatalf("Recv: %v, want ErrPeerTimeout", err)
	}
	if st := r.c.Stats(); st.PingsSent == 0 {
		t.Fatalf("no pings sent: %+v", st)
	}
	select {
	case <-r.c.Done():
	default:
		t.Fatal("Done not closed after failure")
	}
}

func TestHeartbeatsKeepIdleLinkUp(t *testing.T) {
	a := insecureOpts("a", "b", RolePrimary)
	b := insecureOpts("b", "a", RoleSecondary)
	for _, o := range []*ConnOptions{&a, &b} {
		o.HeartbeatInterval, o.Timeout = 20*time.Millisecond, 750*time.Millisecond
	}
	link, err := Pipe(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	// Idle for several Timeouts: without heartbeats both sides would fail.
	deadline := time.Now().Add(20 * time.Second)
	start := time.Now()
	for time.Since(start) < 2*a.Timeout || link.A.Stats().PongsReceived < 10 || link.B.Stats().PongsReceived < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("pongs: A %d, B %d", link.A.Stats().PongsReceived, link.B.Stats().PongsReceived)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := errors.Join(link.A.Err(), link.B.Err()); err != nil {
		t.Fatalf("idle link failed: %v", err)
	}
	if link.A.RTT() <= 0 || link.B.Stats().SmoothedRTT <= 0 {
		t.Fatalf("RTT not measured: %v %v", link.A.RTT(), link.B.Stats().SmoothedRTT)
	}
}

func TestPipelinedRecordsFromManySendersArriveInSendOrder(t *testing.T) {
	p := getPKI(t)
	l, results := startListener(t, ListenOptions{ConnOptions: tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)})
	ao := tlsOpts(p.ca, p.a, "a", "b", RolePrimary)
	ao.SendQueue = 64 // small: senders must block and resume (back-pressure)
	ca, _, err := dial(t, l.Addr().String(), ao)
	if err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, results)
	if r.err != nil {
		t.Fatal(r.err)
	}
	cb := r.c
	const senders, per = 8, 1250 // 10k records in flight, no stop-and-wait
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(s)}, 512)
			for i := range per {
				rec := Record{Seq: uint64(s)<<32 | uint64(i+1), Kind: KindWrite, Offset: uint64(s) << 20, Length: 512, Data: data}
				if err := ca.Send(rec); err != nil {
					t.Errorf("sender %d: %v", s, err)
					return
				}
			}
		}()
	}
	next := make([]uint64, senders)
	for n := 0; n < senders*per; n++ {
		f, err := recvWithin(t, cb)
		if err != nil {
			t.Fatalf("after %d records: %v", n, err)
		}
		rec := f.(Record)
		s, i := rec.Seq>>32, rec.Seq&0xffffffff
		if i != next[s]+1 {
			t.Fatalf("sender %d: got record %d after %d", s, i, next[s])
		}
		next[s] = i
		if rec.Data[0] != byte(s) || rec.Data[511] != byte(s) || rec.Offset != s<<20 {
			t.Fatalf("sender %d record %d: bad contents", s, i)
		}
	}
	wg.Wait()
	// Cumulative ack back, then a clean close.
	if err := cb.Send(Ack{ReceivedSeq: 10000, DurableSeq: 10000}); err != nil {
		t.Fatal(err)
	}
	if f, err := recvWithin(t, ca); err != nil || f.(Ack).DurableSeq != 10000 {
		t.Fatalf("ack: %v %v", f, err)
	}
	st := ca.Stats()
	if st.FramesSent < senders*per || cb.Stats().FramesReceived < senders*per {
		t.Fatalf("stats: sent %d, received %d", st.FramesSent, cb.Stats().FramesReceived)
	}
}

func TestCompressionReducesBytesOnTheWire(t *testing.T) {
	data := bytes.Repeat([]byte("a block of a guest filesystem, mostly text and zeroes\n"), 1200) // ~64 KiB
	for _, codec := range []Codec{CodecS2, CodecZstd, CodecNone} {
		t.Run(codec.String(), func(t *testing.T) {
			a := insecureOpts("a", "b", RolePrimary)
			b := insecureOpts("b", "a", RoleSecondary)
			if codec == CodecNone {
				a.NoCompression = true
			} else {
				a.Codecs, b.Codecs = []Codec{codec}, []Codec{codec}
			}
			link, err := Pipe(context.Background(), a, b)
			if err != nil {
				t.Fatal(err)
			}
			defer link.Close()
			const n = 50
			go func() {
				for i := range n {
					link.A.Send(ChunkData{ID: uint64(i), Offset: uint64(i) * 65536, Length: uint32(len(data)), Data: data})
				}
			}()
			for i := range n {
				f, err := recvWithin(t, link.B)
				if err != nil {
					t.Fatal(err)
				}
				if c := f.(ChunkData); c.ID != uint64(i) || !bytes.Equal(c.Data, data) {
					t.Fatalf("chunk %d corrupted", i)
				}
			}
			st := link.A.Stats()
			payload := uint64(n * (len(data) + 24))
			if st.PayloadBytesSent < payload {
				t.Fatalf("payload bytes sent %d < %d", st.PayloadBytesSent, payload)
			}
			if codec == CodecNone {
				if st.BytesSaved != 0 || st.BytesSent < payload {
					t.Fatalf("no compression: %+v", st)
				}
				return
			}
			if st.CompressedFramesSent < n || st.BytesSaved == 0 || st.BytesSent > payload/4 {
				t.Fatalf("%s: wire %d bytes for %d payload bytes (%+v)", codec, st.BytesSent, payload, st)
			}
			if rs := link.B.Stats(); rs.BytesReceived > payload/4 || rs.PayloadBytesReceived < payload {
				t.Fatalf("receiver: %+v", rs)
			}
		})
	}
}

func TestGoodbyeAfterQueuedFrames(t *testing.T) {
	link, err := Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	const n = 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := link.A.Send(Record{Seq: uint64(i + 1), Kind: KindTrim, Length: 4096}); err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		}
		link.A.CloseWithReason(ReasonShutdown, "node stopping")
	}()
	for i := range n {
		f, err := recvWithin(t, link.B)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if f.(Record).Seq != uint64(i+1) {
			t.Fatalf("record %d: seq %d", i, f.(Record).Seq)
		}
	}
	_, err = recvWithin(t, link.B)
	var ge *GoodbyeError
	if !errors.As(err, &ge) || !errors.Is(err, ErrPeerClosed) || ge.Reason != ReasonShutdown || ge.Text != "node stopping" {
		t.Fatalf("after goodbye: %v", err)
	}
	<-done
	if err := link.A.Send(Ack{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := link.A.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("recv after close: %v", err)
	}
}

func TestCutAndAbortLookLikeNetworkFailure(t *testing.T) {
	link, err := Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	link.Cut()
	for _, c := range []*Conn{link.A, link.B} {
		if _, err := recvWithin(t, c); !errors.Is(err, ErrConnLost) {
			t.Fatalf("after cut: %v, want ErrConnLost", err)
		}
	}
	link.Close()

	link, err = Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	link.A.Abort()
	if _, err := recvWithin(t, link.B); !errors.Is(err, ErrConnLost) {
		t.Fatalf("peer of aborted conn: %v, want ErrConnLost", err)
	}
	if !errors.Is(link.A.Err(), ErrClosed) {
		t.Fatalf("aborted conn: %v", link.A.Err())
	}
	link.Close()
}

func TestSendRejectsTransportFramesAndInvalidFrames(t *testing.T) {
	link, err := Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	for _, f := range []Frame{Ping{}, Pong{}, Goodbye{}, testHello("a", RolePrimary), HelloOK{Version: 1}, Refuse{}} {
		if err := link.A.Send(f); !errors.Is(err, ErrOptions) {
			t.Errorf("Send(%s): %v, want ErrOptions", f.Type(), err)
		}
	}
	if err := link.A.Send(Record{Seq: 1, Kind: KindWrite, Length: 3}); !errors.Is(err, ErrBadFrame) {
		t.Errorf("invalid record: %v", err)
	}
	// The link survives a refused Send.
	if err := link.A.Send(Ack{ReceivedSeq: 1}); err != nil {
		t.Fatal(err)
	}
	if f, err := recvWithin(t, link.B); err != nil || f.(Ack).ReceivedSeq != 1 {
		t.Fatalf("%v %v", f, err)
	}
}

func TestBackPressureBlocksSend(t *testing.T) {
	a := insecureOpts("a", "b", RolePrimary)
	b := insecureOpts("b", "a", RoleSecondary)
	a.SendQueue, b.RecvQueue = 4, 4
	a.Timeout, b.Timeout = time.Minute, time.Minute // the stall must not trip the heartbeat timeout
	link, err := Pipe(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	// B never calls Recv: B's queue fills, its reader stops, the pipe
	// stops, A's queue fills, and Send must block rather than buffer.
	data := make([]byte, 64<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var sent int
	for {
		err := link.A.SendContext(ctx, ChunkData{ID: 1, Length: uint32(len(data)), Data: data})
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("after %d sends: %v", sent, err)
			}
			break
		}
		sent++
		if sent > 10000 {
			t.Fatal("Send never blocked: no back-pressure")
		}
	}
	// Draining B releases everything that was queued.
	for range sent {
		if _, err := recvWithin(t, link.B); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConcurrentSendRecvClose(t *testing.T) {
	link, err := Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var sentOK atomic.Int64
	for s := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				c := link.A
				if s%2 == 1 {
					c = link.B
				}
				err := c.Send(Record{Seq: uint64(i + 1), Kind: KindZero, Length: 4096})
				if err != nil {
					if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrPeerClosed) && !errors.Is(err, ErrConnLost) {
						t.Errorf("send: %v", err)
					}
					return
				}
				sentOK.Add(1)
				_ = c.Stats()
				_ = c.RTT()
			}
		}()
	}
	for _, c := range []*Conn{link.A, link.B} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := c.Recv(); err != nil {
					return
				}
			}
		}()
	}
	for sentOK.Load() < 2000 {
		time.Sleep(time.Millisecond)
	}
	go link.A.Close()
	link.A.Close() // concurrent, idempotent
	link.B.Close()
	wg.Wait()
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5, Rand: func() float64 { return 0 }}
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("attempt %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.Reset()
	if got := b.Next(); got != 10*time.Millisecond {
		t.Fatalf("after reset: %v", got)
	}
	b.Rand = func() float64 { return 0.999 }
	if got := b.Next(); got < 10*time.Millisecond || got > 11*time.Millisecond {
		t.Fatalf("full jitter on 20ms with 0.5: %v, want about 10ms", got)
	}
}

func TestRedialerRetriesUntilPeerAppears(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens yet: the first attempts are refused
	var attempts atomic.Int32
	var mu sync.Mutex
	var started *Listener
	rd := &Redialer{
		Options: DialOptions{Addr: addr, ConnOptions: insecureOpts("a", "b", RolePrimary)},
		Backoff: Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		OnError: func(n int, err error, wait time.Duration) {
			if !errors.Is(err, ErrHandshake) {
				t.Errorf("attempt %d: %v", n, err)
			}
			if attempts.Add(1) == 3 {
				// The peer comes up after the third failure.
				nl, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("re-listen %s: %v", addr, err)
					return
				}
				l, err := NewListener(nl, ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				started = l
				mu.Unlock()
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, h, err := rd.Connect(ctx)
	mu.Lock()
	if started != nil {
		defer started.Close()
	}
	mu.Unlock()
	if err != nil {
		t.Fatalf("after %d attempts: %v", attempts.Load(), err)
	}
	defer c.Abort()
	if h.NodeID != "b" || attempts.Load() < 3 || rd.Backoff.Attempt() != 0 {
		t.Fatalf("peer %q after %d attempts, backoff attempt %d", h.NodeID, attempts.Load(), rd.Backoff.Attempt())
	}
	// Invalid options are not retried.
	bad := &Redialer{Options: DialOptions{Addr: addr, ConnOptions: ConnOptions{Hello: testHello("a", RolePrimary)}}}
	if _, _, err := bad.Connect(ctx); !errors.Is(err, ErrOptions) {
		t.Fatalf("bad options: %v", err)
	}
	// ctx ends the loop.
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	fail := &Redialer{Dial: func(context.Context, DialOptions) (*Conn, Hello, error) {
		return nil, Hello{}, fmt.Errorf("%w: nope", ErrHandshake)
	}}
	if _, _, err := fail.Connect(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestListenerCloseAbortsPendingHandshakes(t *testing.T) {
	o := insecureOpts("b", "a", RoleSecondary)
	o.HandshakeTimeout = time.Hour
	var failures atomic.Int32
	l, err := Listen("127.0.0.1:0", ListenOptions{ConnOptions: o, OnHandshakeError: func(net.Addr, error) { failures.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	nc := rawPeer(t, l.Addr().String(), nil) // never speaks
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited for an hour-long handshake")
	}
	expectClosed(t, nc)
	if _, err := l.Accept(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// countConn counts Write calls: one per syscall on a real socket.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func TestWriterBatchesManyFramesPerWrite(t *testing.T) {
	ra, rb := net.Pipe()
	cra := &countConn{Conn: ra}
	bo := insecureOpts("b", "a", RoleSecondary)
	bo.RecvQueue = 1 // B's reader stalls until the test starts receiving
	ch := make(chan hsResult, 1)
	go func() {
		c, _, err := Handshake(context.Background(), rb, ListenOptions{ConnOptions: bo})
		ch <- hsResult{c, err}
	}()
	ao := insecureOpts("a", "b", RolePrimary)
	ao.SendQueue = 4096
	ao.NoDirectWrite = true // the writer's batching is under test
	ca, _, err := DialConn(context.Background(), cra, ao)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Abort()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Abort()
	before := cra.writes.Load()
	const n = 2000
	for i := range n {
		if err := ca.Send(Ack{ReceivedSeq: uint64(i + 1), DurableSeq: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		f, err := recvWithin(t, r.c)
		if err != nil || f.(Ack).ReceivedSeq != uint64(i+1) {
			t.Fatalf("ack %d: %v %v", i, f, err)
		}
	}
	// Pings may add a write or two; stop-and-write would be ~2000.
	if w := cra.writes.Load() - before; w > n/20 {
		t.Fatalf("%d frames took %d writes: not batched", n, w)
	}
}

// Frames written directly by Send (writer idle) and frames queued for the
// writer never overtake each other: every sender's frames arrive in its
// order, whatever mix of paths they took.
func TestDirectWriteKeepsOrder(t *testing.T) {
	link, err := Pipe(context.Background(), insecureOpts("a", "b", RolePrimary), insecureOpts("b", "a", RoleSecondary))
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	const senders, n = 4, 400
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := link.A.Send(Ack{ReceivedSeq: uint64(g)<<32 | uint64(i+1)}); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // let the writer go idle: direct writes
				}
			}
		}()
	}
	next := make([]uint64, senders)
	for range senders * n {
		f, err := recvWithin(t, link.B)
		if err != nil {
			t.Fatal(err)
		}
		v := f.(Ack).ReceivedSeq
		g, i := v>>32, v&(1<<32-1)
		if i != next[g]+1 {
			t.Fatalf("sender %d: frame %d after %d", g, i, next[g])
		}
		next[g] = i
	}
	wg.Wait()
}
