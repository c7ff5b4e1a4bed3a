package nbd

import (
	"bytes"
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
