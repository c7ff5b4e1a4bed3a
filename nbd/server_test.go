package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

const testSize = 1 << 20

func TestReadWriteAllCommands(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			dev := newMemDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Description: "test volume", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})

			if c.Size() != testSize {
				t.Fatalf("size %d", c.Size())
			}
			want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn | FlagSendCache
			if c.Flags() != want {
				t.Fatalf("flags %#x, want %#x", c.Flags(), want)
			}
			if bs := c.BlockSizes(); bs != (BlockSizes{1, 4096, 32 << 20}) {
				t.Fatalf("block sizes %+v", bs)
			}

			data := make([]byte, 64<<10)
			for i := range data {
				data[i] = byte(i*7 + 3)
			}
			if err := c.WriteAt(data, 4096, false); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteAt(data[:512], 200000, true); err != nil {
				t.Fatal(err)
			}
			if dev.fuas.Load() != 1 {
				t.Fatalf("device saw %d FUA writes, want 1", dev.fuas.Load())
			}
			got := make([]byte, len(data))
			if err := c.ReadAt(got, 4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("read back differs")
			}
			// Unaligned, odd-sized I/O is fine: minimum block size is 1.
			if err := c.ReadAt(got[:3], 4097); err != nil || !bytes.Equal(got[:3], data[1:4]) {
				t.Fatalf("unaligned read: %v % x", err, got[:3])
			}
			if err := c.Flush(); err != nil || dev.flushes.Load() != 1 {
				t.Fatalf("flush: %v, %d flushes", err, dev.flushes.Load())
			}
			if err := c.Trim(4096, 4096, true); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteZeroes(8192, 4096, true, false); err != nil {
				t.Fatal(err)
			}
			if dev.noHoles.Load() != 1 || dev.fuas.Load() != 2 || dev.trims.Load() != 1 {
				t.Fatalf("noHole %d, fua %d, trims %d", dev.noHoles.Load(), dev.fuas.Load(), dev.trims.Load())
			}
			if err := c.ReadAt(got[:8192], 4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:8192], make([]byte, 8192)) {
				t.Fatal("trimmed and zeroed range does not read as zeroes")
			}
			if err := c.Cache(0, 65536); err != nil || dev.caches.Load() != 1 {
				t.Fatalf("cache: %v, %d", err, dev.caches.Load())
			}
			// The last byte of the export is reachable.
			if err := c.WriteAt([]byte{0xee}, testSize-1, false); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if st.Writes != 3 || st.Reads != 3 || st.BytesWritten != uint64(len(data)+512+1) || st.Errors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// failingErr is an error that maps to no sentinel: EIO.
var failingErr = errors.New("disk on fire")

func TestRequestErrorsKeepConnection(t *testing.T) {
	dev := newMemDevice(testSize)
	s := newTestServer(t, ServerOptions{MaxBlockSize: 64 << 10}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})

	marker := []byte("still in sync")
	if err := c.WriteAt(marker, 512, false); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  Request
		want uint32
	}{
		{"unknown command", Request{Type: 99, Offset: 0, Length: 512}, CodeInvalid},
		{"block status not negotiated", Request{Type: CmdBlockStatus, Length: 512}, CodeInvalid},
		{"resize", Request{Type: CmdResize}, CodeInvalid},
		{"unknown flag", Request{Type: CmdRead, Flags: 1 << 15, Length: 512}, CodeInvalid},
		{"DF without structured replies", Request{Type: CmdRead, Flags: CmdFlagDF, Length: 512}, CodeInvalid},
		{"NO_HOLE on write", Request{Type: CmdWrite, Flags: CmdFlagNoHole, Length: 4, Payload: []byte("abcd")}, CodeInvalid},
		{"zero-length read", Request{Type: CmdRead}, CodeInvalid},
		{"zero-length write", Request{Type: CmdWrite}, CodeInvalid},
		{"zero-length trim", Request{Type: CmdTrim}, CodeInvalid},
		{"zero-length write zeroes", Request{Type: CmdWriteZeroes}, CodeInvalid},
		{"zero-length cache", Request{Type: CmdCache}, CodeInvalid},
		{"flush with offset", Request{Type: CmdFlush, Offset: 4096}, CodeInvalid},
		{"flush with length", Request{Type: CmdFlush, Length: 4096}, CodeInvalid},
		{"read past end", Request{Type: CmdRead, Offset: testSize - 100, Length: 512}, CodeInvalid},
		{"read at end", Request{Type: CmdRead, Offset: testSize, Length: 1}, CodeInvalid},
		{"read offset overflow", Request{Type: CmdRead, Offset: math.MaxUint64 - 10, Length: 512}, CodeInvalid},
		{"read huge length", Request{Type: CmdRead, Length: math.MaxUint32}, CodeInvalid},
		{"read over max block size", Request{Type: CmdRead, Length: 64<<10 + 1}, CodeInvalid},
		{"write past end", Request{Type: CmdWrite, Offset: testSize - 2, Length: 4, Payload: []byte("wxyz")}, CodeNoSpace},
		{"write over max block size", Request{Type: CmdWrite, Length: 64<<10 + 1, Payload: make([]byte, 64<<10+1)}, CodeInvalid},
		{"write zeroes past end", Request{Type: CmdWriteZeroes, Offset: testSize, Length: 4096}, CodeNoSpace},
		{"trim past end", Request{Type: CmdTrim, Offset: testSize - 1, Length: 2}, CodeInvalid},
		{"cache past end", Request{Type: CmdCache, Offset: testSize, Length: 2}, CodeInvalid},
		{"fast zero not offered", Request{Type: CmdWriteZeroes, Flags: CmdFlagFastZero, Length: 4096}, CodeNotSupported},
		// Valid oddities.
		{"FUA on flush", Request{Type: CmdFlush, Flags: CmdFlagFUA}, CodeOK},
		{"FUA on read", Request{Type: CmdRead, Flags: CmdFlagFUA, Length: 16}, CodeOK},
		{"trim beyond max block size", Request{Type: CmdTrim, Offset: 128 << 10, Length: 256 << 10}, CodeOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, err := c.Do(tc.req)
			if err != nil {
				t.Fatalf("connection failed: %v", err)
			}
			if code != tc.want {
				t.Fatalf("code %s (%d), want %s", codeName(code), code, codeName(tc.want))
			}
			checkInSync(t, c, marker)
		})
	}
	if got := s.Stats().ProtocolErrors; got != 0 {
		t.Fatalf("%d protocol errors", got)
	}
	if !bytes.Equal(dev.data[testSize-2:], []byte{0, 0}) {
		t.Fatal("refused write past the end changed the device")
	}
}

// checkInSync proves the connection is alive and the stream in step: a
// normal read after the bad request returns the marker written at 512.
func checkInSync(t *testing.T, c *Client, marker []byte) {
	t.Helper()
	got := make([]byte, len(marker))
	if err := c.ReadAt(got, 512); err != nil {
		t.Fatalf("follow-up read failed: %v", err)
	}
	if !bytes.Equal(got, marker) {
		t.Fatalf("follow-up read got %q", got)
	}
}

func TestHugeWriteLengthIsDiscardedWithoutAllocation(t *testing.T) {
	dev := newMemDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	marker := []byte("marker")
	if err := c.WriteAt(marker, 512, false); err != nil {
		t.Fatal(err)
	}
	// 64 MiB: over the 32 MiB maximum and past the 1 MiB export.
	payload := make([]byte, 64<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	code, _, err := c.Do(Request{Type: CmdWrite, Length: uint32(len(payload)), Payload: payload})
	runtime.ReadMemStats(&after)
	if err != nil || code != CodeInvalid {
		t.Fatalf("code %d, err %v", code, err)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 8<<20 {
		t.Fatalf("refusing a 64 MiB write allocated %d bytes", grown)
	}
	checkInSync(t, c, marker)
}

func TestDeviceErrorsMapToCodes(t *testing.T) {
	dev := &faultDevice{memDevice: newMemDevice(testSize)}
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	marker := []byte("marker")
	if err := c.WriteAt(marker, 512, false); err != nil {
		t.Fatal(err)
	}
	errs := []struct {
		err      error
		code     uint32
		sentinel error
	}{
		{fmt.Errorf("bad: %w", ErrInvalid), CodeInvalid, ErrInvalid},
		{fmt.Errorf("full: %w", ErrNoSpace), CodeNoSpace, ErrNoSpace},
		{fmt.Errorf("demoted: %w", ErrPerm), CodePerm, ErrPerm},
		{fmt.Errorf("nope: %w", ErrNotSupported), CodeNotSupported, ErrNotSupported},
		{fmt.Errorf("stopping: %w", ErrShutdown), CodeShutdown, ErrShutdown},
		{failingErr, CodeIO, nil},
	}
	ops := map[string]func() error{
		"read":   func() error { return c.ReadAt(make([]byte, 4096), 0) },
		"write":  func() error { return c.WriteAt(make([]byte, 4096), 8192, true) },
		"flush":  c.Flush,
		"trim":   func() error { return c.Trim(0, 4096, false) },
		"zeroes": func() error { return c.WriteZeroes(0, 4096, false, false) },
		"cache":  func() error { return c.Cache(0, 4096) },
	}
	for _, e := range errs {
		for name, op := range ops {
			t.Run(fmt.Sprintf("%s/%s", name, codeName(e.code)), func(t *testing.T) {
				dev.setErr(e.err)
				err := op()
				dev.setErr(nil)
				var ne *Error
				if !errors.As(err, &ne) || ne.Code != e.code {
					t.Fatalf("got %v, want code %d", err, e.code)
				}
				if e.sentinel != nil && !errors.Is(err, e.sentinel) {
					t.Fatalf("errors.Is(%v, %v) is false", err, e.sentinel)
				}
				checkInSync(t, c, marker)
			})
		}
	}
}

func TestReadOnlyExport(t *testing.T) {
	dev := newMemDevice(testSize)
	copy(dev.data[512:], "read only data")
	s := newTestServer(t, ServerOptions{}, &Export{Name: "ro", Device: dev, ReadOnly: true})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "ro"})
	want := FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn | FlagSendCache
	if c.Flags() != want {
		t.Fatalf("flags %#x, want %#x", c.Flags(), want)
	}
	marker := []byte("read only data")
	for _, tc := range []struct {
		name string
		req  Request
		want uint32
	}{
		{"write", Request{Type: CmdWrite, Length: 4, Payload: []byte("evil")}, CodePerm},
		{"write with FUA", Request{Type: CmdWrite, Flags: CmdFlagFUA, Offset: 512, Length: 4, Payload: []byte("evil")}, CodePerm},
		{"trim", Request{Type: CmdTrim, Offset: 512, Length: 4096}, CodePerm},
		{"write zeroes", Request{Type: CmdWriteZeroes, Offset: 512, Length: 4096}, CodePerm},
		{"FUA not offered", Request{Type: CmdRead, Flags: CmdFlagFUA, Length: 16}, CodeInvalid},
		{"flush", Request{Type: CmdFlush}, CodeOK},
		{"cache", Request{Type: CmdCache, Length: 4096}, CodeOK},
	} {
		code, _, err := c.Do(tc.req)
		if err != nil || code != tc.want {
			t.Fatalf("%s: code %d err %v, want %d", tc.name, code, err, tc.want)
		}
		checkInSync(t, c, marker)
	}
	if err := c.WriteAt([]byte("x"), 0, false); !errors.Is(err, ErrPerm) {
		t.Fatalf("WriteAt on read-only export: %v", err)
	}
	if !bytes.Equal(dev.data[512:512+len(marker)], marker) {
		t.Fatal("read-only export was modified")
	}
}

func TestBadMagicClosesConnection(t *testing.T) {
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: newMemDevice(testSize)})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	if err := c.WriteAt([]byte("ok"), 0, false); err != nil {
		t.Fatal(err)
	}
	bad := make([]byte, requestHeaderSize)
	encodeRequestHeader(bad, requestHeader{magic: 0xdeadbeef, typ: CmdRead, length: 512})
	if err := c.WriteRaw(bad); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if err := c.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("request after bad magic succeeded")
	}
	waitFor(t, func() bool { return s.Stats().ProtocolErrors == 1 })
}

func TestEOFMidRequestClosesConnection(t *testing.T) {
	cutMidWrite(t, newMemDevice(testSize), 4096, 2048)
}

// cutMidWrite serves dev over TCP, sends a WRITE header for length bytes
// and only sent bytes of its payload, hangs up its sending side, and waits
// until the server has closed the connection and counted the broken
// stream as a protocol error.
func cutMidWrite(t *testing.T, dev Device, length uint32, sent int) {
	t.Helper()
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	network, addr := listen(t, s, "tcp")
	c, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "vol0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := make([]byte, requestHeaderSize)
	encodeRequestHeader(hdr, requestHeader{magic: requestMagic, typ: CmdWrite, length: length})
	if err := c.WriteRaw(append(hdr, make([]byte, sent)...)); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	waitFor(t, func() bool { return s.Stats().ProtocolErrors == 1 })
}

// waitFor polls a condition that becomes true shortly after an event the
// test cannot observe directly (a server goroutine finishing its logging).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOutOfOrderReplies holds N reads in the device, releases them in
// reverse order one at a time, and checks that each reply arrives in that
// order, carrying its own data.
func TestOutOfOrderReplies(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			const n = 8
			dev := newGateDevice(testSize)
			for i := range n {
				copy(dev.data[i*4096:], fmt.Sprintf("block %d", i))
			}
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})

			type result struct {
				i   int
				buf []byte
				err error
			}
			results := make(chan result, n)
			for i := range n {
				go func() {
					buf := make([]byte, 16)
					err := c.ReadAt(buf, uint64(i*4096))
					results <- result{i, buf, err}
				}()
			}
			// All n are in the device at once: handled concurrently.
			dev.awaitArrivals(t, n)
			for i := n - 1; i >= 0; i-- {
				dev.release(uint64(i * 4096))
				r := <-results
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.i != i {
					t.Fatalf("reply for request %d arrived when %d was released", r.i, i)
				}
				if want := fmt.Sprintf("block %d", i); !bytes.HasPrefix(r.buf, []byte(want)) {
					t.Fatalf("request %d got %q", i, r.buf)
				}
			}
		})
	}
}

// TestConcurrentClients runs many goroutines with many requests in flight
// over one connection each transport, on a device that completes them in
// a scrambled order, and checks every byte.
func TestConcurrentClients(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			dev := &jitterDevice{memDevice: newMemDevice(testSize)}
			s := newTestServer(t, ServerOptions{MaxInFlight: 16}, &Export{Name: "vol0", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})
			const workers, iters = 16, 100
			var wg sync.WaitGroup
			errc := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					region := uint64(w) * (testSize / workers)
					buf := make([]byte, 4096)
					got := make([]byte, 4096)
					for i := range iters {
						off := region + uint64(rng.IntN(int(testSize/workers-4096)))
						for j := range buf {
							buf[j] = byte(w*31 + i + j)
						}
						if err := c.WriteAt(buf, off, i%3 == 0); err != nil {
							errc <- err
							return
						}
						if err := c.ReadAt(got, off); err != nil {
							errc <- err
							return
						}
						if !bytes.Equal(got, buf) {
							errc <- fmt.Errorf("worker %d iteration %d: data mismatch at %d", w, i, off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Requests != workers*iters*2 || st.Errors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// jitterDevice yields a random number of times before each operation so
// that concurrent requests complete in a scrambled order.
type jitterDevice struct{ *memDevice }

func jitter() {
	for range rand.IntN(8) {
		runtime.Gosched()
	}
}

func (j *jitterDevice) ReadAt(p []byte, off uint64) error {
	jitter()
	return j.memDevice.ReadAt(p, off)
}

func (j *jitterDevice) WriteAt(p []byte, off uint64, fua bool) error {
	jitter()
	return j.memDevice.WriteAt(p, off, fua)
}

func TestBackPressureBoundsInFlight(t *testing.T) {
	const limit, total = 3, 10
	dev := newGateDevice(testSize)
	s := newTestServer(t, ServerOptions{MaxInFlight: limit}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	errc := make(chan error, total)
	for i := range total {
		go func() { errc <- c.WriteAt([]byte("x"), uint64(i*4096), false) }()
	}
	// Release each request as it arrives; never more than limit at once.
	for range total {
		off := dev.awaitArrivals(t, 1)[0]
		dev.release(off)
	}
	for range total {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if m := dev.maxSeen.Load(); m > limit {
		t.Fatalf("%d requests in the device at once, limit %d", m, limit)
	}
}

func TestDrainOnDisc(t *testing.T) {
	const n = 6
	dev := newGateDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "tcp", ClientOptions{ExportName: "vol0"})
	errc := make(chan error, n)
	for i := range n {
		go func() { errc <- c.WriteAt([]byte{byte(i + 1)}, uint64(i*4096), false) }()
	}
	dev.awaitArrivals(t, n)
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	// Requests after DISC are refused locally; the server reads no more.
	if err := c.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("request after Disconnect: %v", err)
	}
	for i := range n {
		dev.release(uint64(i * 4096))
	}
	for range n {
		if err := <-errc; err != nil {
			t.Fatalf("in-flight write not answered before close: %v", err)
		}
	}
	<-c.Done()
	for i := range n {
		if dev.data[i*4096] != byte(i+1) {
			t.Fatalf("write %d missing", i)
		}
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	for _, tr := range []string{"tcp", "unix"} {
		t.Run(tr, func(t *testing.T) {
			const n = 5
			dev := newGateDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			network, addr := listen(t, s, tr)
			c, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "vol0"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			errc := make(chan error, n)
			for i := range n {
				go func() { errc <- c.WriteAt([]byte{0xaa}, uint64(i*4096), true) }()
			}
			dev.awaitArrivals(t, n)
			shutdownErr := make(chan error, 1)
			go func() { shutdownErr <- s.Shutdown(testCtx(t)) }()
			// Shutdown cannot finish while requests are held in the device.
			waitFor(t, func() bool {
				c2, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "vol0"})
				if err == nil {
					c2.Close()
				}
				return err != nil // listener closed
			})
			select {
			case err := <-shutdownErr:
				t.Fatalf("Shutdown returned %v with requests in flight", err)
			default:
			}
			for i := range n {
				dev.release(uint64(i * 4096))
			}
			for range n {
				if err := <-errc; err != nil {
					t.Fatalf("in-flight write failed: %v", err)
				}
			}
			if err := <-shutdownErr; err != nil {
				t.Fatal(err)
			}
			<-c.Done()
		})
	}
}

func TestShutdownContextExpiry(t *testing.T) {
	dev := newGateDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "tcp", ClientOptions{ExportName: "vol0"})
	errc := make(chan error, 1)
	go func() { errc <- c.WriteAt([]byte("x"), 0, false) }()
	dev.awaitArrivals(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with expired context: %v", err)
	}
	// The connection was torn down: the held write gets no reply.
	if err := <-errc; err == nil {
		t.Fatal("write succeeded on a killed connection")
	}
	dev.release(0)
}

func TestMultiConnSharesData(t *testing.T) {
	dev := newMemDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	network, addr := listen(t, s, "tcp")
	var clients []*Client
	for range 3 {
		c, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "vol0"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.Flags()&FlagCanMultiConn == 0 {
			t.Fatal("CAN_MULTI_CONN not advertised")
		}
		clients = append(clients, c)
	}
	if got := s.Stats().ConnectionsOpen; got != 3 {
		t.Fatalf("%d connections open", got)
	}
	for i, c := range clients {
		if err := c.WriteAt([]byte(fmt.Sprintf("conn %d", i)), uint64(i*4096), true); err != nil {
			t.Fatal(err)
		}
	}
	if err := clients[0].Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range clients {
		got := make([]byte, 6)
		if err := clients[(i+1)%3].ReadAt(got, uint64(i*4096)); err != nil {
			t.Fatal(err)
		}
		if string(got) != fmt.Sprintf("conn %d", i) {
			t.Fatalf("connection %d sees %q", (i+1)%3, got)
		}
	}
}

func TestRemoveExportDrainsConnections(t *testing.T) {
	s := newTestServer(t, ServerOptions{}, &Export{Name: "a", Device: newMemDevice(testSize)}, &Export{Name: "b", Device: newMemDevice(testSize)})
	if err := s.AddExport(&Export{Name: "a", Device: newMemDevice(1)}); !errors.Is(err, ErrExportExists) {
		t.Fatalf("duplicate export: %v", err)
	}
	if err := s.AddExport(&Export{Name: "x"}); !errors.Is(err, ErrInvalidExport) {
		t.Fatalf("export without device: %v", err)
	}
	network, addr := listen(t, s, "unix")
	ca, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	s.RemoveExport("a")
	<-ca.Done()
	if _, err := Dial(testCtx(t), network, addr, ClientOptions{ExportName: "a"}); !errors.Is(err, ErrUnknownExport) {
		t.Fatalf("dial removed export: %v", err)
	}
	if err := cb.WriteAt([]byte("b lives"), 0, false); err != nil {
		t.Fatalf("other export disturbed: %v", err)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	s := NewServer(ServerOptions{Logger: quietLogger()})
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestClientErrorType(t *testing.T) {
	e := &Error{Code: CodeInvalid}
	if !errors.Is(e, ErrInvalid) || errors.Is(e, ErrPerm) {
		t.Fatal("Error.Is mapping wrong")
	}
	if (&Error{Code: CodeIO}).Error() == "" {
		t.Fatal("empty message")
	}
	for _, code := range []uint32{CodeOK, CodePerm, CodeIO, CodeNoMem, CodeInvalid, CodeNoSpace, CodeOverflow, CodeNotSupported, CodeShutdown, 9999} {
		if codeName(code) == "" {
			t.Fatalf("no name for %d", code)
		}
	}
}

// TestShutdownRefusesReceivedRequests: with one request slot held in the
// device, a second request already sitting in the server's buffer when
// Shutdown starts is answered ESHUTDOWN without reaching the device, the
// first one completes normally, then the connection closes.
func TestShutdownRefusesReceivedRequests(t *testing.T) {
	dev := newGateDevice(testSize)
	copy(dev.data, "abcdefgh")
	s := newTestServer(t, ServerOptions{MaxInFlight: 1}, &Export{Name: "vol0", Device: dev})
	network, addr := listen(t, s, "tcp")
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := &rawConn{t: t, c: nc, br: bufio.NewReader(nc)}
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.goExport(optGo, "vol0")

	// Both headers in one segment: the server reads them together.
	b := make([]byte, 2*requestHeaderSize)
	encodeRequestHeader(b, requestHeader{magic: requestMagic, typ: CmdRead, handle: 1, length: 8})
	encodeRequestHeader(b[requestHeaderSize:], requestHeader{magic: requestMagic, typ: CmdRead, handle: 2, offset: 4096, length: 8})
	r.write(b)
	dev.awaitArrivals(t, 1)
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- s.Shutdown(testCtx(t)) }()
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.mu.shutdown // set in the same critical section as the stops
	})
	dev.release(0)

	var rep [replyHeaderSize + 8 + replyHeaderSize]byte
	if _, err := io.ReadFull(r.br, rep[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(rep[4:]) != CodeOK || binary.BigEndian.Uint64(rep[8:]) != 1 || string(rep[16:24]) != "abcdefgh" {
		t.Fatalf("first reply % x", rep[:24])
	}
	second := rep[24:]
	if binary.BigEndian.Uint32(second[4:]) != CodeShutdown || binary.BigEndian.Uint64(second[8:]) != 2 {
		t.Fatalf("second reply % x", second)
	}
	if rest, err := io.ReadAll(r.br); err != nil || len(rest) != 0 {
		t.Fatalf("after the replies: %q, %v", rest, err)
	}
	nc.Close() // the server lingers until we close our side
	if err := <-shutdownErr; err != nil {
		t.Fatal(err)
	}
	select {
	case off := <-dev.arrived:
		t.Fatalf("request at %d reached the device after shutdown", off)
	default:
	}
}
