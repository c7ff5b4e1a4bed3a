package backend_test

import (
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/mem"
)

func TestCheckRange(t *testing.T) {
	const size = 1000
	ok := [][2]int64{{0, 0}, {0, size}, {size, 0}, {999, 1}, {500, 500}}
	bad := [][2]int64{{-1, 1}, {0, -1}, {size, 1}, {999, 2}, {size + 1, 0}, {1, math.MaxInt64}, {math.MaxInt64, 1}}
	for _, r := range ok {
		if err := backend.CheckRange(size, r[0], r[1]); err != nil {
			t.Errorf("CheckRange(%d, %d, %d) = %v", size, r[0], r[1], err)
		}
	}
	for _, r := range bad {
		if err := backend.CheckRange(size, r[0], r[1]); !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("CheckRange(%d, %d, %d) = %v, want ErrOutOfRange", size, r[0], r[1], err)
		}
	}
}

// recorder is a Backend without capabilities that records its writes.
type recorder struct {
	backend.Backend
	mu       sync.Mutex
	writes   int
	maxWrite int
	nonZero  bool
}

func newRecorder(size int64) *recorder { return &recorder{Backend: mem.New(size)} }

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.writes++
	r.maxWrite = max(r.maxWrite, len(p))
	for _, c := range p {
		if c != 0 {
			r.nonZero = true
		}
	}
	r.mu.Unlock()
	return r.Backend.WriteAt(p, off)
}

// withDiscard adds Discarder to a recorder.
type withDiscard struct {
	*recorder
	discards int
}

func (d *withDiscard) Discard(off, n int64) error {
	d.discards++
	return d.recorder.Backend.(backend.Discarder).Discard(off, n)
}

// withZeroer adds Zeroer (and Discarder) to a recorder.
type withZeroer struct {
	withDiscard
	zeroes []bool
}

func (z *withZeroer) WriteZeroes(off, n int64, keep bool) error {
	z.zeroes = append(z.zeroes, keep)
	return z.recorder.Backend.(backend.Zeroer).WriteZeroes(off, n, keep)
}

func fillOnes(t *testing.T, b backend.Backend) {
	t.Helper()
	p := make([]byte, b.Size())
	for i := range p {
		p[i] = 1
	}
	if _, err := b.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
}

func expectZero(t *testing.T, b backend.Backend, off, n int64) {
	t.Helper()
	p := make([]byte, n)
	if _, err := b.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	for i, c := range p {
		if c != 0 {
			t.Fatalf("byte %d = %d, want 0", off+int64(i), c)
		}
	}
}

func TestZeroFillIsChunked(t *testing.T) {
	const n = 3*backend.ZeroChunk + 12345
	r := newRecorder(n + 100)
	fillOnes(t, r)
	r.writes, r.maxWrite, r.nonZero = 0, 0, false
	if err := backend.ZeroFill(r, 50, n); err != nil {
		t.Fatal(err)
	}
	if r.writes != 4 || r.maxWrite != backend.ZeroChunk || r.nonZero {
		t.Fatalf("writes=%d max=%d nonZero=%v, want 4 writes of at most %d zero bytes", r.writes, r.maxWrite, r.nonZero, backend.ZeroChunk)
	}
	expectZero(t, r, 50, n)
	p := make([]byte, 1)
	r.ReadAt(p, 49)
	if p[0] != 1 {
		t.Fatal("ZeroFill wrote before its range")
	}
	r.ReadAt(p, 50+n)
	if p[0] != 1 {
		t.Fatal("ZeroFill wrote past its range")
	}
}

func TestDiscardFallsBackToZeroes(t *testing.T) {
	r := newRecorder(3 << 20)
	fillOnes(t, r)
	r.writes = 0
	if err := backend.Discard(r, 1000, 2<<20); err != nil {
		t.Fatal(err)
	}
	if r.writes == 0 {
		t.Fatal("Discard without Discarder wrote nothing")
	}
	expectZero(t, r, 1000, 2<<20)
}

func TestDiscardUsesCapability(t *testing.T) {
	d := &withDiscard{recorder: newRecorder(1 << 20)}
	fillOnes(t, d)
	d.writes = 0
	if err := backend.Discard(d, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if d.discards != 1 || d.writes != 0 {
		t.Fatalf("discards=%d writes=%d, want the Discarder called once and no writes", d.discards, d.writes)
	}
	expectZero(t, d, 0, 1<<20)
}

func TestWriteZeroesDispatch(t *testing.T) {
	// Without Zeroer: keepAllocated must write (a discard may deallocate),
	// otherwise Discard is good enough.
	d := &withDiscard{recorder: newRecorder(1 << 20)}
	fillOnes(t, d)
	d.writes = 0
	if err := backend.WriteZeroes(d, 0, 4096, true); err != nil {
		t.Fatal(err)
	}
	if d.discards != 0 || d.writes == 0 {
		t.Fatalf("keepAllocated: discards=%d writes=%d, want writes only", d.discards, d.writes)
	}
	d.writes = 0
	if err := backend.WriteZeroes(d, 4096, 4096, false); err != nil {
		t.Fatal(err)
	}
	if d.discards != 1 || d.writes != 0 {
		t.Fatalf("punch: discards=%d writes=%d, want one Discard", d.discards, d.writes)
	}
	expectZero(t, d, 0, 8192)

	// With Zeroer both modes go to it, keeping the flag.
	z := &withZeroer{withDiscard: withDiscard{recorder: newRecorder(1 << 20)}}
	fillOnes(t, z)
	z.writes = 0
	if err := backend.WriteZeroes(z, 0, 100, true); err != nil {
		t.Fatal(err)
	}
	if err := backend.WriteZeroes(z, 100, 100, false); err != nil {
		t.Fatal(err)
	}
	if len(z.zeroes) != 2 || !z.zeroes[0] || z.zeroes[1] || z.writes != 0 || z.discards != 0 {
		t.Fatalf("zeroer calls %v, writes %d, discards %d", z.zeroes, z.writes, z.discards)
	}
	expectZero(t, z, 0, 200)
}

func TestHelpersCheckRangeFirst(t *testing.T) {
	d := &withDiscard{recorder: newRecorder(4096)}
	if err := backend.Discard(d, 4000, 100); !errors.Is(err, backend.ErrOutOfRange) {
		t.Fatalf("Discard: %v", err)
	}
	if err := backend.WriteZeroes(d, -1, 1, true); !errors.Is(err, backend.ErrOutOfRange) {
		t.Fatalf("WriteZeroes: %v", err)
	}
	if d.discards != 0 || d.writes != 0 {
		t.Fatal("an out-of-range request reached the backend")
	}
}
