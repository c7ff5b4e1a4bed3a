package nbd

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
)

// recvDevice is a memDevice that is also a Receiver. What ReceiveWrite
// does is chosen per test: take the payload, decline, or fail after
// reading some of it.
type recvDevice struct {
	*memDevice
	receives atomic.Int64 // payloads taken by ReceiveWrite
	writes   atomic.Int64 // WriteAt calls
	decline  atomic.Bool
	// failAfter >= 0: read that many bytes, then return failErr.
	failAfter atomic.Int64
	failErr   error
}

func newRecvDevice(size int) *recvDevice {
	d := &recvDevice{memDevice: newMemDevice(size)}
	d.failAfter.Store(-1)
	return d
}

func (d *recvDevice) WriteAt(p []byte, off uint64, fua bool) error {
	d.writes.Add(1)
	return d.memDevice.WriteAt(p, off, fua)
}

func (d *recvDevice) ReceiveWrite(r io.Reader, off uint64, length uint32) (bool, error) {
	if d.decline.Load() {
		return false, nil
	}
	if k := d.failAfter.Load(); k >= 0 {
		if _, err := io.ReadFull(r, make([]byte, k)); err != nil {
			return true, err
		}
		return true, d.failErr
	}
	// Like the mem backend: straight into the device's memory. The test
	// writes never overlap, so no lock is needed for the bytes, and
	// taking none checks that the server does not rely on one.
	if _, err := io.ReadFull(r, d.data[off:off+uint64(length)]); err != nil {
		return true, err
	}
	// r yields exactly the payload and no more.
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return true, fmt.Errorf("payload reader gave %d more bytes (err %v)", n, err)
	}
	d.receives.Add(1)
	return true, nil
}

func pattern(seed, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seed*131 + i*7 + i>>9)
	}
	return p
}

// TestReceiverTakesPayloads: WRITEs without FUA reach a Receiver device
// through ReceiveWrite, never WriteAt, on every transport, many in flight
// on one connection, sizes from one byte to 2 MiB; the data reads back.
// A FUA write goes to WriteAt.
func TestReceiverTakesPayloads(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			const size = 16 << 20
			dev := newRecvDevice(size)
			s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
			c := connect(t, s, tr, ClientOptions{ExportName: "vol0"})

			lengths := []int{1, 511, 4096, 64 << 10, 64<<10 + 1, 1 << 20, 2<<20 - 3}
			var wg sync.WaitGroup
			errs := make(chan error, len(lengths))
			for i, n := range lengths {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- c.WriteAt(pattern(i, n), uint64(i)*(3<<20)/2+uint64(i), false)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			for i, n := range lengths {
				got := make([]byte, n)
				off := uint64(i)*(3<<20)/2 + uint64(i)
				if err := c.ReadAt(got, off); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pattern(i, n)) {
					t.Fatalf("write %d (%d bytes at %d) did not read back", i, n, off)
				}
			}
			if r, w := dev.receives.Load(), dev.writes.Load(); r != int64(len(lengths)) || w != 0 {
				t.Fatalf("%d received, %d through WriteAt; want %d and 0", r, w, len(lengths))
			}
			if err := c.WriteAt(pattern(9, 4096), 0, true); err != nil {
				t.Fatal(err)
			}
			if w, f := dev.writes.Load(), dev.fuas.Load(); w != 1 || f != 1 {
				t.Fatalf("FUA write: %d WriteAt calls (%d with fua), want 1 (1)", w, f)
			}
			if got := s.Stats().BytesWritten; got != uint64(4096+sum(lengths)) {
				t.Fatalf("BytesWritten %d, want %d", got, 4096+sum(lengths))
			}
		})
	}
}

func sum(ns []int) (s int) {
	for _, n := range ns {
		s += n
	}
	return s
}

// TestReceiverDeclines: a Receiver that declines leaves the payload to the
// server, which buffers it and calls WriteAt.
func TestReceiverDeclines(t *testing.T) {
	dev := newRecvDevice(testSize)
	dev.decline.Store(true)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	want := pattern(3, 70000)
	if err := c.WriteAt(want, 1000, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := c.ReadAt(got, 1000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || dev.writes.Load() != 1 {
		t.Fatalf("declined write: data equal %v, %d WriteAt calls", bytes.Equal(got, want), dev.writes.Load())
	}
}

// TestReceiverErrorKeepsConnection: a Receiver that fails, having read
// none, part or all of the payload, gets its error code to the client,
// and the server skips what is left of the payload, so the next request
// is read in step.
func TestReceiverErrorKeepsConnection(t *testing.T) {
	dev := newRecvDevice(testSize)
	s := newTestServer(t, ServerOptions{}, &Export{Name: "vol0", Device: dev})
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol0"})
	marker := []byte("marker")
	if err := c.WriteAt(marker, 512, false); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		after int64
		err   error
		code  uint32
	}{
		{0, fmt.Errorf("demoted: %w", ErrPerm), CodePerm},
		{1000, failingErr, CodeIO},
		{65536, fmt.Errorf("full: %w", ErrNoSpace), CodeNoSpace},
		// Read it all but report nothing wrong: still answered, as EIO,
		// since the device broke the contract.
		{0, nil, CodeIO},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("after%d/%s", tc.after, codeName(tc.code)), func(t *testing.T) {
			dev.failAfter.Store(tc.after)
			dev.failErr = tc.err
			code, _, err := c.Do(Request{Type: CmdWrite, Offset: 4096, Length: 65536, Payload: pattern(1, 65536)})
			dev.failAfter.Store(-1)
			if err != nil {
				t.Fatalf("connection failed: %v", err)
			}
			if code != tc.code {
				t.Fatalf("code %s, want %s", codeName(code), codeName(tc.code))
			}
			checkInSync(t, c, marker)
		})
	}
	if got := s.Stats().ProtocolErrors; got != 0 {
		t.Fatalf("%d protocol errors", got)
	}
}

// TestReceiverStreamCut: the client hangs up in the middle of a payload
// the Receiver is reading; the connection closes as a protocol error and
// nothing counts as received.
func TestReceiverStreamCut(t *testing.T) {
	dev := newRecvDevice(testSize)
	cutMidWrite(t, dev, 8192, 3000)
	if dev.receives.Load() != 0 {
		t.Fatal("a cut payload counted as received")
	}
}
