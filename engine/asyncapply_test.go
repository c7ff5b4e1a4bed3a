package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/journal/vfs"
	"github.com/twinblock/twinblock/transport"
)

// slowBackend delays writes, so acknowledged writes are often not yet in
// the backend when they are read back.
type slowBackend struct {
	backend.Backend
	mu  sync.Mutex
	rng *rand.Rand
}

func (s *slowBackend) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	d := time.Duration(s.rng.IntN(2000)) * time.Microsecond
	s.mu.Unlock()
	time.Sleep(d)
	return s.Backend.WriteAt(p, off)
}

// With AsyncApply a write is acknowledged before the backend has it; every
// read must still see every acknowledged write, overlapping writes must
// land in order, and the back-pressure bound must hold.
func TestAsyncApplyReadsSeeAcknowledgedWrites(t *testing.T) {
	const size = 2 << 20 // overlapLoad writes below 1 MiB + 16 KiB
	inner := mem.New(size)
	be := &slowBackend{Backend: noClose{inner}, rng: rand.New(rand.NewPCG(1, 2))}
	j, err := journal.Open(journal.Options{Dir: "/j", FS: vfs.NewMemFS(), SegmentSize: 256 << 10, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	v, err := OpenVolume(VolumeOptions{Name: "a", Backend: be, Journal: j, Logger: quiet,
		AsyncApply: true, ApplyMaxBytes: 64 << 10, CheckpointBytes: 128 << 10, CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		model = make([]byte, size)
		wg    sync.WaitGroup
	)
	maxSeen := int64(0)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 150 {
				// Each goroutine owns blocks g, g+6, ...: its read-back
				// must see exactly what it wrote last.
				blk := uint64(rng.IntN(size/4096/6)*6 + g)
				n := 512 * (1 + rng.IntN(8))
				buf := bytes.Repeat([]byte{byte(g*40 + i%40 + 1)}, n)
				if err := v.WriteAt(buf, blk*4096, false); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, n)
				if err := v.ReadAt(got, blk*4096); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, buf) {
					t.Errorf("read after acknowledged write at block %d: stale data", blk)
					return
				}
				mu.Lock()
				copy(model[blk*4096:], buf)
				maxSeen = max(maxSeen, v.unapplied.Load())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if maxSeen > 64<<10+4096 {
		t.Errorf("unapplied bytes reached %d, bound 64K", maxSeen)
	}
	// Overlapping writes from many goroutines land in seq order.
	overlapLoad(t, v, 3, 100)
	got := make([]byte, size)
	if err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	direct := make([]byte, size)
	inner.ReadAt(direct, 0)
	if !bytes.Equal(got, direct) {
		t.Fatal("the backend after close differs from what the volume read before it")
	}
}

// A pair whose nodes apply asynchronously stays byte-identical, and a
// resync and verify on it see acknowledged writes (their reads wait for
// unapplied ones like any read).
func TestPairAsyncApply(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) { p.async = true })
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 21, 200)
	p.assertIdentical(p.a, p.b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		overlapLoad(t, p.a.v, 22, 200)
	}()
	if err := p.a.v.Verify(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pr, err := p.a.v.WaitProgress(ctx, "verify")
	<-done
	if err != nil || pr.Error != "" || len(pr.Mismatches) != 0 {
		t.Fatalf("verify under load with async apply: %v %+v", err, pr)
	}
	p.assertIdentical(p.a, p.b)
}
