package mem_test

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/mem"
)

const (
	volSize = 10 << 30  // the volume the NBD benchmark exports
	hotSize = 256 << 20 // where the random I/O lands, so RAM stays bounded
	ioSize  = 4096
)

var seeds atomic.Uint64

// BenchmarkWrite4KRandomParallel is the backend half of the NBD QD32 random
// write benchmark: 4 KiB writes at random aligned offsets from GOMAXPROCS
// goroutines (use -cpu to vary). Compare with BenchmarkRead4KRandomParallel
// and the file backend's numbers.
func BenchmarkWrite4KRandomParallel(b *testing.B) {
	v := mem.New(volSize)
	defer v.Close()
	b.SetBytes(ioSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seeds.Add(1), 0))
		p := make([]byte, ioSize)
		for pb.Next() {
			if _, err := v.WriteAt(p, r.Int64N(hotSize/ioSize)*ioSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRead4KRandomParallel(b *testing.B) {
	v := mem.New(volSize)
	defer v.Close()
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < hotSize; off += int64(len(chunk)) {
		if _, err := v.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(ioSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seeds.Add(1), 0))
		p := make([]byte, ioSize)
		for pb.Next() {
			if _, err := v.ReadAt(p, r.Int64N(hotSize/ioSize)*ioSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
