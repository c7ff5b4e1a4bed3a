package mem_test

import (
	"errors"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/mem"
)

func TestContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return mem.New(size) })
}

// plain hides every optional capability, so the contract suite exercises the
// package-level fallbacks (zeroes written through WriteAt).
type plain struct{ backend.Backend }

func TestContractWithoutCapabilities(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return plain{mem.New(size)} })
}

func TestSparse(t *testing.T) {
	const size = 10 << 30 // "10 GiB"
	b := mem.New(size)
	defer b.Close()
	if b.Allocated() != 0 {
		t.Fatalf("Allocated() = %d on a new backend", b.Allocated())
	}
	p := []byte("twinblock")
	for _, off := range []int64{0, 5 << 30, size - int64(len(p))} {
		if _, err := b.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Allocated(); got != 3*mem.ChunkSize {
		t.Fatalf("Allocated() = %d after three small writes, want %d", got, 3*mem.ChunkSize)
	}
	got := make([]byte, len(p))
	if _, err := b.ReadAt(got, 5<<30); err != nil || string(got) != string(p) {
		t.Fatalf("ReadAt = %q, %v", got, err)
	}
	// Zeroing the whole device with NO_HOLE must not allocate 10 GiB.
	if err := b.WriteZeroes(0, size, true); err != nil {
		t.Fatal(err)
	}
	if got := b.Allocated(); got != 3*mem.ChunkSize {
		t.Fatalf("Allocated() = %d after WriteZeroes(keep), want %d", got, 3*mem.ChunkSize)
	}
}

func TestDiscardFreesWholeChunksOnly(t *testing.T) {
	const cs = mem.ChunkSize
	b := mem.New(8 * cs)
	defer b.Close()
	if _, err := b.WriteAt(make([]byte, 8*cs), 0); err != nil {
		t.Fatal(err)
	}
	if got := b.Allocated(); got != 8*cs {
		t.Fatalf("Allocated() = %d, want %d", got, 8*cs)
	}
	// Covers chunk 1 partially, chunks 2 and 3 entirely, chunk 4 partially.
	if err := b.Discard(cs+1, 3*cs); err != nil {
		t.Fatal(err)
	}
	if got := b.Allocated(); got != 6*cs {
		t.Fatalf("Allocated() = %d after discarding 2 whole chunks, want %d", got, 6*cs)
	}
	if err := b.WriteZeroes(5*cs, cs, false); err != nil {
		t.Fatal(err)
	}
	if got := b.Allocated(); got != 5*cs {
		t.Fatalf("Allocated() = %d after punching 1 chunk, want %d", got, 5*cs)
	}
	if err := b.WriteZeroes(6*cs, cs, true); err != nil {
		t.Fatal(err)
	}
	if got := b.Allocated(); got != 5*cs {
		t.Fatalf("Allocated() = %d after WriteZeroes(keep), want %d", got, 5*cs)
	}
}

func TestResizeAcrossSegments(t *testing.T) {
	// Start small and grow far enough to need a longer top-level table
	// several times; data in every old segment must survive.
	b := mem.New(4096)
	defer b.Close()
	p := []byte{1, 2, 3}
	if _, err := b.WriteAt(p, 100); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{300 << 20, 1 << 30, 3<<30 + 4096} {
		if err := b.Resize(size); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WriteAt(p, size-3); err != nil {
			t.Fatal(err)
		}
	}
	for _, off := range []int64{100, 300<<20 - 3, 1<<30 - 3, 3<<30 + 4096 - 3} {
		got := make([]byte, 3)
		if _, err := b.ReadAt(got, off); err != nil || string(got) != string(p) {
			t.Fatalf("ReadAt(%d) = %v, %v", off, got, err)
		}
	}
	if err := b.Resize(1 << 30); !errors.Is(err, backend.ErrShrink) {
		t.Fatalf("shrink: err = %v, want ErrShrink", err)
	}
}

func TestClose(t *testing.T) {
	b := mem.New(1 << 20)
	if _, err := b.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if _, err := b.WriteAt([]byte{1}, 0); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("WriteAt after Close: %v", err)
	}
	if err := b.Flush(); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if err := b.Discard(0, 1); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Discard after Close: %v", err)
	}
	if b.Allocated() != 0 {
		t.Errorf("Allocated() = %d after Close", b.Allocated())
	}
}

func TestNewNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New(-1) did not panic")
		}
	}()
	mem.New(-1)
}
