package mem_test

import (
	"testing"

	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/mem"
)

const (
	volSize = 10 << 30  // the volume the NBD benchmark exports
	hotSize = 256 << 20 // where the random I/O lands, so RAM stays bounded
)

// BenchmarkWrite4KRandomParallel is the backend half of the NBD QD32 random
// write benchmark; compare with the file backend's numbers.
func BenchmarkWrite4KRandomParallel(b *testing.B) {
	v := mem.New(volSize)
	defer v.Close()
	backendtest.RandomIO(b, v, backendtest.BenchOptions{Region: hotSize})
}

// BenchmarkRead4KRandomParallel reads a region written first (so reads hit
// allocated chunks, not holes).
func BenchmarkRead4KRandomParallel(b *testing.B) {
	v := mem.New(volSize)
	defer v.Close()
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < hotSize; off += int64(len(chunk)) {
		if _, err := v.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	backendtest.RandomIO(b, v, backendtest.BenchOptions{Region: hotSize, Read: true})
}

// BenchmarkWrite1MSequential is the backend half of the NBD 1 MiB
// sequential write benchmark: aligned 1 MiB writes sweeping a region larger
// than the CPU caches, so every copy lands in cold memory as it does there.
func BenchmarkWrite1MSequential(b *testing.B) {
	const region = 1 << 30
	v := mem.New(region)
	defer v.Close()
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i)
	}
	// Allocate every chunk first, as the NBD bench's prefill does.
	for off := int64(0); off < region; off += int64(len(p)) {
		if _, err := v.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	off := int64(0)
	for b.Loop() {
		if _, err := v.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
		if off += int64(len(p)); off == region {
			off = 0
		}
	}
}
