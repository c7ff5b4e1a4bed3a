package engine

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestOrdererDependencies(t *testing.T) {
	o := newOrderer(0)
	a, deps := o.admit(1, 0, 4096)
	if len(deps) != 0 {
		t.Fatalf("first op has deps %v", deps)
	}
	b, deps := o.admit(2, 8192, 4096) // disjoint
	if len(deps) != 0 {
		t.Fatalf("disjoint op has deps")
	}
	c, deps := o.admit(3, 4095, 2) // overlaps a's last byte only
	if len(deps) != 1 || deps[0] != a {
		t.Fatalf("c deps = %v, want [a]", deps)
	}
	d, deps := o.admit(4, 0, 16384) // overlaps all
	if len(deps) != 3 {
		t.Fatalf("d deps = %d, want 3", len(deps))
	}
	if _, deps := o.admit(5, 4096, 0); len(deps) != 0 {
		t.Fatalf("zero-length op has deps")
	}
	// Applied out of order: the watermark only advances over a contiguous run.
	if w := o.markApplied(b); w != 0 {
		t.Fatalf("watermark %d after applying seq 2 only", w)
	}
	if w := o.markApplied(a); w != 2 {
		t.Fatalf("watermark %d, want 2", w)
	}
	if w := o.markApplied(d); w != 2 {
		t.Fatalf("watermark %d, want 2", w)
	}
	if w := o.markApplied(c); w != 4 {
		t.Fatalf("watermark %d, want 4", w)
	}
	if o.inflightCount() != 1 { // seq 5 still in flight
		t.Fatalf("inflight = %d", o.inflightCount())
	}
}

// The oracle: concurrent overlapping writes applied with random delays end
// up exactly as applying them one by one in seq order.
func TestOrdererConcurrentOverlapMatchesSerialOrder(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		const size = 64 << 10
		const nops = 300
		type op struct {
			off, n uint64
			fill   byte
			delay  time.Duration
		}
		ops := make([]op, nops)
		for i := range ops {
			n := uint64(1 + rng.IntN(8192))
			ops[i] = op{off: uint64(rng.IntN(size - int(n))), n: n, fill: byte(i), delay: time.Duration(rng.IntN(50)) * time.Microsecond}
		}
		want := make([]byte, size)
		for _, p := range ops {
			for i := p.off; i < p.off+p.n; i++ {
				want[i] = p.fill
			}
		}

		got := make([]byte, size)
		var gotMu sync.Mutex
		o := newOrderer(0)
		var admitMu sync.Mutex
		var wg sync.WaitGroup
		for i, p := range ops {
			admitMu.Lock()
			po, deps := o.admit(uint64(i+1), p.off, p.n)
			admitMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				wait(deps)
				time.Sleep(p.delay)
				gotMu.Lock()
				for j := p.off; j < p.off+p.n; j++ {
					got[j] = p.fill
				}
				gotMu.Unlock()
				o.markApplied(po)
			}()
		}
		wg.Wait()
		if !bytes.Equal(got, want) {
			t.Fatalf("seed %d: result differs from serial application", seed)
		}
		if w := o.appliedThrough(); w != nops {
			t.Fatalf("seed %d: watermark %d, want %d", seed, w, nops)
		}
	}
}
