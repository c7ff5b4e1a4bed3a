package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/journal/vfs"
)

// world is a machine that can lose power: a journal filesystem and a
// backend, both snapshotted at one instant by crash. Every individual FS
// and backend operation holds mu shared, so the snapshot sees each one
// either wholly done or not started.
type world struct {
	mu sync.RWMutex
	fs *vfs.MemFS
	be *crashBackend
}

type lockedFS struct {
	w *world
}

func (l lockedFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	f, err := l.w.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return lockedFile{l.w, f}, nil
}
func (l lockedFS) Remove(n string) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.w.fs.Remove(n)
}
func (l lockedFS) Rename(a, b string) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.w.fs.Rename(a, b)
}
func (l lockedFS) List(d string) ([]string, error) {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.w.fs.List(d)
}
func (l lockedFS) MkdirAll(d string, p os.FileMode) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.w.fs.MkdirAll(d, p)
}
func (l lockedFS) SyncDir(d string) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.w.fs.SyncDir(d)
}

type lockedFile struct {
	w *world
	f vfs.File
}

func (l lockedFile) ReadAt(p []byte, off int64) (int, error) {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.f.ReadAt(p, off)
}
func (l lockedFile) WriteAt(p []byte, off int64) (int, error) {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.f.WriteAt(p, off)
}
func (l lockedFile) Sync() error { l.w.mu.RLock(); defer l.w.mu.RUnlock(); return l.f.Sync() }
func (l lockedFile) Truncate(n int64) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.f.Truncate(n)
}
func (l lockedFile) Allocate(n int64) error {
	l.w.mu.RLock()
	defer l.w.mu.RUnlock()
	return l.f.Allocate(n)
}
func (l lockedFile) Size() (int64, error) { l.w.mu.RLock(); defer l.w.mu.RUnlock(); return l.f.Size() }
func (l lockedFile) Close() error         { return l.f.Close() }

// crashBackend is an in-memory backend that remembers what was flushed: a
// crash keeps the flushed state plus a random subset of later writes, like
// a disk with a volatile cache.
type crashBackend struct {
	w       *world
	mu      sync.Mutex
	cur     []byte
	durable []byte
	pending []pendingWrite
}

type pendingWrite struct {
	off  int64
	data []byte
}

func newCrashBackend(w *world, size int) *crashBackend {
	return &crashBackend{w: w, cur: make([]byte, size), durable: make([]byte, size)}
}

func (b *crashBackend) ReadAt(p []byte, off int64) (int, error) {
	b.w.mu.RLock()
	defer b.w.mu.RUnlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	return copy(p, b.cur[off:]), nil
}

func (b *crashBackend) WriteAt(p []byte, off int64) (int, error) {
	b.w.mu.RLock()
	defer b.w.mu.RUnlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.cur[off:], p)
	b.pending = append(b.pending, pendingWrite{off, append([]byte(nil), p...)})
	return len(p), nil
}

func (b *crashBackend) Flush() error {
	b.w.mu.RLock()
	defer b.w.mu.RUnlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.durable, b.cur)
	b.pending = nil
	return nil
}

func (b *crashBackend) Size() int64  { return int64(len(b.cur)) }
func (b *crashBackend) Close() error { return nil }

// crashedCopy returns what survives a power loss now. Caller holds w.mu.
func (b *crashBackend) crashedCopy(rng *rand.Rand, nw *world) *crashBackend {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := newCrashBackend(nw, len(b.cur))
	copy(out.cur, b.durable)
	keep := rng.Float64()
	for _, p := range b.pending {
		if rng.Float64() < keep {
			copy(out.cur[p.off:], p.data)
		}
	}
	copy(out.durable, out.cur)
	return out
}

// crash snapshots the world at one instant and returns the machine that
// reboots from it.
func (w *world) crash(rng *rand.Rand, crashed *atomic.Bool) *world {
	w.mu.Lock()
	defer w.mu.Unlock()
	crashed.Store(true)
	nw := &world{fs: w.fs.Crash(rng)}
	nw.be = w.be.crashedCopy(rng, nw)
	return nw
}

// ackDev reports a write as acknowledged only if it completed before the
// crash instant: later completions are "unknown" to the oracle.
type ackDev struct {
	v       *Volume
	crashed *atomic.Bool
}

func (d ackDev) WriteAt(p []byte, off uint64, fua bool) error {
	if d.crashed.Load() {
		return errors.New("crashed")
	}
	err := d.v.WriteAt(p, off, fua)
	if d.crashed.Load() {
		return errors.New("crashed")
	}
	return err
}
func (d ackDev) ReadAt(p []byte, off uint64) error { return d.v.ReadAt(p, off) }

func openCrashVolume(t *testing.T, w *world) *Volume {
	t.Helper()
	j, err := journal.Open(journal.Options{Dir: "/j", FS: lockedFS{w}, SegmentSize: 256 << 10, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatalf("journal open: %v", err)
	}
	v, err := OpenVolume(VolumeOptions{
		Name: "crash", Backend: w.be, Journal: j, Logger: quiet,
		CheckpointBytes: 128 << 10, CheckpointInterval: time.Millisecond, JournalMaxBytes: 1 << 20,
	})
	if err != nil {
		t.Fatalf("open volume: %v", err)
	}
	return v
}

// Every write acknowledged before a power loss is there after recovery,
// whatever the journal and the backend's volatile cache kept; checkpoints
// and journal trims run all along.
func TestVolumeCrashRecovery(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 15
	}
	const size = 1 << 20
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		rng := rand.New(rand.NewPCG(seed, 42))
		w := &world{fs: vfs.NewMemFS()}
		w.be = newCrashBackend(w, size)
		v := openCrashVolume(t, w)
		var crashed atomic.Bool
		dev := ackDev{v, &crashed}

		ctx, cancel := context.WithCancel(context.Background())
		var log *ackload.Log
		done := make(chan struct{})
		go func() {
			defer close(done)
			log, _ = ackload.Run(ctx, dev, ackload.Options{
				BlockSize: 4096, Blocks: size / 4096, Workers: 8,
				MaxOps: 4000, Duration: 5 * time.Second, Seed: seed,
			})
		}()
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		nw := w.crash(rng, &crashed)
		cancel()
		<-done
		// The old process keeps running against the old world; abandon it.
		go v.Close()

		v2 := openCrashVolume(t, nw)
		res, err := log.Verify(v2)
		if err != nil {
			t.Fatalf("seed %d: %v (acked %d)", seed, err, log.Acked)
		}
		_ = res
		// The recovered volume takes writes again.
		if err := v2.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("seed %d: write after recovery: %v", seed, err)
		}
		if err := v2.Close(); err != nil {
			t.Fatalf("seed %d: close: %v", seed, err)
		}
	}
}
