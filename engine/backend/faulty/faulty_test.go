package faulty_test

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/faulty"
	"github.com/twinblock/twinblock/engine/backend/mem"
)

func TestContractNoFaults(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return faulty.New(mem.New(size)) })
}

// plain hides the wrapped backend's capabilities.
type plain struct{ backend.Backend }

func TestContractNoFaultsPlainInner(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return faulty.New(plain{mem.New(size)}) })
}

// workload performs one operation of every kind and returns the errors.
func workload(b *faulty.Backend) []error {
	var errs []error
	_, err := b.WriteAt([]byte("abc"), 0)
	errs = append(errs, err)
	_, err = b.ReadAt(make([]byte, 3), 0)
	errs = append(errs, err)
	errs = append(errs, b.Flush())
	errs = append(errs, b.Discard(0, 1))
	errs = append(errs, b.WriteZeroes(1, 1, true))
	errs = append(errs, b.Resize(b.Size()+4096))
	return errs
}

func TestFailNthWalksEveryOperation(t *testing.T) {
	const ops = 6
	for i := int64(1); ; i++ {
		b := faulty.New(mem.New(1 << 20))
		b.FailNth(i, faulty.OpAny)
		errs := workload(b)
		if i > ops {
			// Past the end of the workload nothing is injected: the loop's
			// stop condition.
			if b.Injected() != 0 {
				t.Fatalf("FailNth(%d): %d faults injected", i, b.Injected())
			}
			break
		}
		for j, err := range errs {
			if int64(j+1) == i {
				if !errors.Is(err, faulty.ErrInjected) {
					t.Errorf("FailNth(%d): op %d err = %v, want ErrInjected", i, j+1, err)
				}
			} else if err != nil {
				t.Errorf("FailNth(%d): op %d failed: %v", i, j+1, err)
			}
		}
		if b.Injected() != 1 {
			t.Errorf("FailNth(%d): Injected() = %d, want 1", i, b.Injected())
		}
		if got := b.Count(faulty.OpAny); got != ops {
			t.Errorf("Count(OpAny) = %d, want %d", got, ops)
		}
	}
}

func TestFailNthCountsOnlySelectedKinds(t *testing.T) {
	b := faulty.New(mem.New(1 << 20))
	b.FailNth(2, faulty.OpWrite)
	for i := range 4 {
		if _, err := b.ReadAt(make([]byte, 1), 0); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if _, err := b.WriteAt([]byte{1}, 0); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if _, err := b.WriteAt([]byte{2}, 0); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("second write: err = %v, want ErrInjected", err)
	}
	if _, err := b.WriteAt([]byte{3}, 0); err != nil {
		t.Fatalf("a one-shot fault fired twice: %v", err)
	}
}

func TestFailAllWrites(t *testing.T) {
	inner := mem.New(1 << 20)
	b := faulty.New(inner)
	if _, err := b.WriteAt([]byte("old"), 0); err != nil {
		t.Fatal(err)
	}
	b.FailAll(faulty.OpMutate)
	if _, err := b.WriteAt([]byte("new"), 0); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("WriteAt: err = %v", err)
	}
	if err := b.Discard(0, 3); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("Discard: err = %v", err)
	}
	if err := b.WriteZeroes(0, 3, false); !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("WriteZeroes: err = %v", err)
	}
	got := make([]byte, 3)
	if _, err := b.ReadAt(got, 0); err != nil || string(got) != "old" {
		t.Fatalf("ReadAt = %q, %v: a failed write must change nothing", got, err)
	}
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush is not in OpMutate: %v", err)
	}
	b.Heal()
	if _, err := b.WriteAt([]byte("new"), 0); err != nil {
		t.Fatalf("WriteAt after Heal: %v", err)
	}
	if got := b.Injected(); got != 3 {
		t.Fatalf("Injected() = %d, want 3", got)
	}
}

func TestFailFlushWithErrno(t *testing.T) {
	b := faulty.New(mem.New(4096))
	b.SetError(syscall.EIO)
	b.FailAll(faulty.OpFlush)
	for range 2 {
		err := b.Flush()
		if !errors.Is(err, faulty.ErrInjected) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Flush = %v, want ErrInjected and EIO", err)
		}
	}
	if _, err := b.WriteAt([]byte{1}, 0); err != nil {
		t.Fatalf("WriteAt is not failed by FailAll(OpFlush): %v", err)
	}
}

func TestTornWrite(t *testing.T) {
	inner := mem.New(1 << 20)
	b := faulty.New(inner)
	b.SetTorn(true)
	b.FailNth(1, faulty.OpWrite)
	p := bytes.Repeat([]byte{7}, 4096+100)
	n, err := b.WriteAt(p, 8192)
	if !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("err = %v", err)
	}
	// Half of 4196 is 2098, rounded down to a sector: 2048.
	if n != 2048 {
		t.Fatalf("torn write reports %d bytes, want 2048", n)
	}
	got := make([]byte, len(p))
	if _, err := inner.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{7}, 2048), make([]byte, len(p)-2048)...)
	if !bytes.Equal(got, want) {
		t.Fatal("torn write did not leave exactly the first 2048 bytes")
	}
}

func TestResizeWithoutCapability(t *testing.T) {
	b := faulty.New(plain{mem.New(4096)})
	if err := b.Resize(8192); !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("Resize = %v, want ErrNotSupported", err)
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[faulty.Op]string{
		0:                                "none",
		faulty.OpFlush:                   "flush",
		faulty.OpWrite | faulty.OpResize: "write|resize",
	} {
		if got := op.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", op, got, want)
		}
	}
}
