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
