package ackload

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type memDev struct {
	mu        sync.Mutex
	b         []byte
	failAfter int // fail every write after this many (0: never)
	writes    int
	applyFail bool // a failing write still lands (the crash hit after the disk write)
}

func (m *memDev) WriteAt(p []byte, off uint64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if m.failAfter > 0 && m.writes > m.failAfter {
		if m.applyFail {
			copy(m.b[off:], p)
		}
		return errors.New("connection reset")
	}
	copy(m.b[off:], p)
	return nil
}

func (m *memDev) ReadAt(p []byte, off uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.b[off:])
	return nil
}

func opts() Options {
	return Options{BlockSize: 512, Blocks: 256, Workers: 8, MaxOps: 3000, Duration: 10 * time.Second, Seed: 7}
}

func TestRunVerify(t *testing.T) {
	d := &memDev{b: make([]byte, 512*256)}
	l, err := Run(context.Background(), d, opts())
	if err != nil {
		t.Fatal(err)
	}
	if l.Acked != 3000 {
		t.Fatalf("acked %d, want 3000", l.Acked)
	}
	r, err := l.Verify(d)
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked == 0 || r.Acked != r.Checked {
		t.Fatalf("result %+v", r)
	}
	// Save/Load round trip keeps the verdict.
	var buf bytes.Buffer
	if err := l.Save(&buf); err != nil {
		t.Fatal(err)
	}
	l2, err := Load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Verify(d); err != nil {
		t.Fatal(err)
	}
}

// A lost acknowledged write, an older version, a torn block and a
// misdirected write are all caught.
func TestVerifyCatchesLoss(t *testing.T) {
	d := &memDev{b: make([]byte, 512*256)}
	l, _ := Run(context.Background(), d, opts())
	var b int
	for b = range l.Blocks {
		if l.Blocks[b].Acked >= 2 {
			break
		}
	}
	off := b * 512
	saved := append([]byte(nil), d.b[off:off+512]...)
	restore := func() { copy(d.b[off:], saved) }

	Fill(d.b[off:off+512], 7, uint64(b), l.Blocks[b].Acked-1) // older version
	if _, err := l.Verify(d); !errors.Is(err, ErrLost) {
		t.Fatalf("older version not caught: %v", err)
	}
	restore()
	clear(d.b[off : off+512]) // write lost entirely
	if _, err := l.Verify(d); !errors.Is(err, ErrLost) {
		t.Fatalf("zeroed block not caught: %v", err)
	}
	restore()
	d.b[off+300] ^= 1 // torn
	if _, err := l.Verify(d); !errors.Is(err, ErrLost) {
		t.Fatalf("torn block not caught: %v", err)
	}
	restore()
	Fill(d.b[off:off+512], 7, uint64(b+1), 1) // misdirected
	if _, err := l.Verify(d); !errors.Is(err, ErrLost) {
		t.Fatalf("misdirected block not caught: %v", err)
	}
	restore()
	if _, err := l.Verify(d); err != nil {
		t.Fatal(err)
	}
}

// When the device dies mid-write the outcome of in-flight writes is
// unknown: both "landed" and "did not land" verify.
func TestInFlightEitherOutcome(t *testing.T) {
	for _, applied := range []bool{false, true} {
		d := &memDev{b: make([]byte, 512*256), failAfter: 500, applyFail: applied}
		l, _ := Run(context.Background(), d, opts())
		if l.Acked != 500 {
			t.Fatalf("acked %d", l.Acked)
		}
		r, err := l.Verify(d)
		if err != nil {
			t.Fatal(err)
		}
		if applied && r.InFlightOK == 0 {
			t.Fatalf("applied in-flight writes not recognised: %+v", r)
		}
	}
}
