package file

import (
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/backendtest"
)

func TestFlushErrorIsSticky(t *testing.T) {
	b, err := Create(filepath.Join(t.TempDir(), "vol"), 1<<20, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	calls := 0
	b.fdatasync = func(fd int) error {
		calls++
		if calls == 1 {
			return unix.EIO
		}
		return unix.Fdatasync(fd)
	}
	if _, err := b.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	first := b.Flush()
	if !errors.Is(first, unix.EIO) {
		t.Fatalf("Flush = %v, want EIO", first)
	}
	for range 3 {
		// The device would sync fine now; the backend must not pretend.
		if err := b.Flush(); err != first {
			t.Fatalf("Flush after a failed Flush = %v, want the same error %v", err, first)
		}
	}
	if calls != 1 {
		t.Fatalf("fdatasync called %d times; a failed flush must never be retried", calls)
	}
	// Resize makes its new size durable through Flush, so it reports it too.
	if err := b.Resize(2 << 20); !errors.Is(err, unix.EIO) {
		t.Fatalf("Resize after a failed Flush = %v, want EIO", err)
	}
}

func TestFlushRetriesEINTR(t *testing.T) {
	b, err := Create(filepath.Join(t.TempDir(), "vol"), 4096, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	calls := 0
	b.fdatasync = func(fd int) error {
		calls++
		if calls < 3 {
			return unix.EINTR
		}
		return unix.Fdatasync(fd)
	}
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush = %v", err)
	}
	if calls != 3 {
		t.Fatalf("fdatasync called %d times, want 3", calls)
	}
}

// TestContractWithoutFallocate runs the suite as on a file system without
// hole punching or ZERO_RANGE, so every zeroing goes through the written
// fallback.
func TestContractWithoutFallocate(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		b, err := Create(filepath.Join(t.TempDir(), "vol"), size, Options{})
		if err != nil {
			t.Fatal(err)
		}
		b.noPunch.Store(true)
		b.noZeroRng.Store(true)
		return b
	})
}
