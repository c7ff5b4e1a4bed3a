package nbd

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// inlineRuns sums the inline runs of every connection of s.
func inlineRuns(s *Server) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for c := range s.mu.conns {
		n += c.inl.runs.Load()
	}
	return n
}

// TestQueueDepthOneRunsInline checks that requests sent one at a time run
// on the reading goroutine (no hand-off to a worker), and that data goes
// through that path intact.
func TestQueueDepthOneRunsInline(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			dev := newMemDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})
			const n = 50
			for i := range n {
				p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
				if err := c.WriteAt(p, uint64(i)*4096, false); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 4096)
				if err := c.ReadAt(got, uint64(i)*4096); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, p) {
					t.Fatalf("block %d reads back %x..., want %x...", i, got[:4], p[:4])
				}
			}
			// Every request was alone in flight; a slow run on a loaded
			// machine may have sent some to workers for a while.
			if runs := inlineRuns(s); runs == 0 {
				t.Fatalf("no request of %d ran inline", 2*n)
			}
		})
	}
}

// TestBlockedInlineRequestDoesNotStallReading sends one request that the
// device holds (it runs inline: it is alone), then a second one: the
// server must move the reading role off the blocked goroutine, read the
// second, answer it, and keep the connection working after the first
// completes.
func TestBlockedInlineRequestDoesNotStallReading(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			dev := newGateDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})

			first := make(chan error, 1)
			go func() { first <- c.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false) }()
			dev.awaitArrivals(t, 1)
			if runs := inlineRuns(s); runs != 1 {
				t.Fatalf("inline runs = %d with one request in flight, want 1", runs)
			}

			second := make(chan error, 1)
			go func() { second <- c.ReadAt(make([]byte, 4096), 8192) }()
			dev.awaitArrivals(t, 1) // only if another goroutine read it
			dev.release(8192)
			select {
			case err := <-second:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("second request not answered while the first is blocked")
			}
			select {
			case err := <-first:
				t.Fatalf("first request answered (%v) before its release", err)
			default:
			}
			dev.release(0)
			if err := <-first; err != nil {
				t.Fatal(err)
			}

			// The connection still works, and after a taken-over run the
			// requests go to workers for a while.
			runs := inlineRuns(s)
			for i := range 20 {
				off := uint64(16+i) * 4096
				dev.release(off)
				if err := c.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), off, false); err != nil {
					t.Fatal(err)
				}
			}
			if got := inlineRuns(s); got != runs {
				t.Fatalf("inline runs went from %d to %d right after a slow one", runs, got)
			}
			got := make([]byte, 4096) // gate 0 is still open
			if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 4096)) {
				t.Fatalf("read back %x..., %v", got[:4], err)
			}
		})
	}
}

// TestSlowRunsAloneStayInline: a device slower than a memory copy (a
// journaled or replicated volume) driven at queue depth 1 keeps running
// inline, because nothing waited behind its runs. Every run counts as
// slow here (threshold 0), so the test does not depend on timing.
func TestSlowRunsAloneStayInline(t *testing.T) {
	for _, tr := range []string{"tcp", "unix"} { // a pipe has no receive queue to look at
		t.Run(tr, func(t *testing.T) {
			dev := newMemDevice(testSize)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			s.inlineSlow = 0
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})
			const n = 30
			for i := range n {
				if err := c.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), uint64(i)*4096, false); err != nil {
					t.Fatal(err)
				}
			}
			if runs := inlineRuns(s); runs != n {
				t.Fatalf("%d of %d lone slow requests ran inline, want all", runs, n)
			}
		})
	}
}

// TestPendingInput: pendingInput sees bytes in the socket's receive queue
// and in the read buffer, and nothing once both are drained.
func TestPendingInput(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = t.TempDir() + "/s"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			sv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer sv.Close()
			c := &conn{nc: sv, br: bufio.NewReaderSize(sv, 64<<10)}
			c.rc, err = sv.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if c.pendingInput() {
				t.Fatal("pending input on a fresh connection")
			}
			if _, err := cl.Write(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, c.pendingInput)
			if _, err := io.ReadFull(c.br, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			if !c.pendingInput() {
				t.Fatal("90 bytes in the read buffer, pendingInput says none")
			}
			if _, err := io.ReadFull(c.br, make([]byte, 90)); err != nil {
				t.Fatal(err)
			}
			if c.pendingInput() {
				t.Fatal("everything read, pendingInput still says some")
			}
		})
	}
}
