package backendtest

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
)

// BenchOptions shape RandomIO.
type BenchOptions struct {
	// Region is where the I/O lands: [0, Region) of the backend.
	Region int64
	// IOSize is the size of each request (default 4 KiB).
	IOSize int64
	// Read reads instead of writing.
	Read bool
	// FlushEvery flushes after this many writes per goroutine (0: never).
	FlushEvery int
}

var benchSeeds atomic.Uint64

// RandomIO is the backend half of the NBD random-I/O benchmarks: requests
// at random aligned offsets of opts.Region from GOMAXPROCS goroutines (use
// -cpu to vary). Every backend runs it, so their numbers compare.
func RandomIO(b *testing.B, be backend.Backend, opts BenchOptions) {
	if opts.IOSize == 0 {
		opts.IOSize = 4096
	}
	n := opts.Region / opts.IOSize
	b.SetBytes(opts.IOSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(benchSeeds.Add(1), 0))
		p := make([]byte, opts.IOSize)
		for i := 1; pb.Next(); i++ {
			off := r.Int64N(n) * opts.IOSize
			var err error
			if opts.Read {
				_, err = be.ReadAt(p, off)
			} else {
				_, err = be.WriteAt(p, off)
			}
			if err == nil && opts.FlushEvery > 0 && i%opts.FlushEvery == 0 {
				err = be.Flush()
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}
