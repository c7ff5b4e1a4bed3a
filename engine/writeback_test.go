package engine

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/journal/vfs"
)

// wbBackend is a mem backend that counts StartWriteback calls and fails
// them with err when set.
type wbBackend struct {
	*mem.Backend
	calls atomic.Int64
	err   atomic.Pointer[error]
}

func (b *wbBackend) StartWriteback() error {
	b.calls.Add(1)
	if p := b.err.Load(); p != nil {
		return *p
	}
	return nil
}

var _ backend.Writebacker = (*wbBackend)(nil)

func openWritebackVolume(t *testing.T, be backend.Backend, every int64) *Volume {
	t.Helper()
	j, err := journal.Open(journal.Options{Dir: "/j", FS: vfs.NewMemFS(), SegmentSize: 1 << 20, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	// Checkpoints far apart: only the writeback kicks are under test.
	v, err := OpenVolume(VolumeOptions{Name: "wb", Backend: be, Journal: j, Logger: quiet,
		CheckpointBytes: 64 << 20, CheckpointInterval: time.Hour, JournalMaxBytes: 256 << 20,
		WritebackBytes: every})
	if err != nil {
		j.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// waitCalls waits until be saw at least n StartWriteback calls.
func waitCalls(t *testing.T, be *wbBackend, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for be.calls.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("StartWriteback called %d times, want >= %d", be.calls.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWritebackKickedEveryWritebackBytes(t *testing.T) {
	be := &wbBackend{Backend: mem.New(8 << 20)}
	v := openWritebackVolume(t, be, 256<<10)
	buf := make([]byte, 64<<10)
	// 1 MiB written: four kicks' worth. The kick channel holds one, so at
	// least one call must come; a volume that never kicks sees none.
	for i := range 16 {
		if err := v.WriteAt(buf, uint64(i)*uint64(len(buf)), false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let the checkpoint goroutine take each kick
	}
	waitCalls(t, be, 2)
	if n := be.calls.Load(); n > 4 {
		t.Fatalf("StartWriteback called %d times for 1 MiB at 256 KiB each, want at most 4", n)
	}
}

func TestWritebackOffWhenNegative(t *testing.T) {
	be := &wbBackend{Backend: mem.New(8 << 20)}
	v := openWritebackVolume(t, be, -1)
	buf := make([]byte, 64<<10)
	for i := range 16 {
		if err := v.WriteAt(buf, uint64(i)*uint64(len(buf)), false); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := be.calls.Load(); n != 0 {
		t.Fatalf("StartWriteback called %d times with WritebackBytes < 0", n)
	}
}

func TestWritebackEIOFailsVolume(t *testing.T) {
	be := &wbBackend{Backend: mem.New(8 << 20)}
	eio := error(fmt.Errorf("sync_file_range: %w", syscall.EIO))
	be.err.Store(&eio)
	v := openWritebackVolume(t, be, 64<<10)
	buf := make([]byte, 64<<10)
	if err := v.WriteAt(buf, 0, false); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, be, 1)
	if !failsSoon(v) {
		t.Fatal("volume still healthy after writeback EIO")
	}
	if err := v.WriteAt(buf, 0, false); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after writeback EIO: %v, want ErrFailed", err)
	}
}

func TestWritebackOtherErrorTurnsItOff(t *testing.T) {
	be := &wbBackend{Backend: mem.New(8 << 20)}
	inval := error(syscall.EINVAL)
	be.err.Store(&inval)
	v := openWritebackVolume(t, be, 64<<10)
	buf := make([]byte, 64<<10)
	if err := v.WriteAt(buf, 0, false); err != nil {
		t.Fatal(err)
	}
	waitCalls(t, be, 1)
	time.Sleep(10 * time.Millisecond)
	for i := range 8 {
		if err := v.WriteAt(buf, uint64(i)*uint64(len(buf)), false); err != nil {
			t.Fatalf("write after an unsupported writeback: %v", err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if n := be.calls.Load(); n != 1 {
		t.Fatalf("StartWriteback called %d times, want 1 (off after EINVAL)", n)
	}
	if err := v.Err(); err != nil {
		t.Fatalf("volume failed by an unsupported writeback: %v", err)
	}
}
