package file_test

import (
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/file"
)

const (
	benchSize = 256 << 20
	ioSize    = 4096
)

var seeds atomic.Uint64

func benchFile(b *testing.B) *file.Backend {
	v, err := file.Create(filepath.Join(b.TempDir(), "vol"), benchSize, file.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

// BenchmarkWrite4KRandomParallel measures buffered pwrite of 4 KiB at random
// aligned offsets of a sparse file from GOMAXPROCS goroutines. No flushes:
// this is the page-cache ceiling the engine's apply loop runs against.
func BenchmarkWrite4KRandomParallel(b *testing.B) {
	v := benchFile(b)
	b.SetBytes(ioSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seeds.Add(1), 0))
		p := make([]byte, ioSize)
		for pb.Next() {
			if _, err := v.WriteAt(p, r.Int64N(benchSize/ioSize)*ioSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkWrite4KRandomFlushEvery64 adds an fdatasync per 64 writes per
// goroutine, the shape of a checkpoint-heavy apply loop.
func BenchmarkWrite4KRandomFlushEvery64(b *testing.B) {
	v := benchFile(b)
	b.SetBytes(ioSize)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seeds.Add(1), 0))
		p := make([]byte, ioSize)
		for i := 1; pb.Next(); i++ {
			if _, err := v.WriteAt(p, r.Int64N(benchSize/ioSize)*ioSize); err != nil {
				b.Error(err)
				return
			}
			if i%64 == 0 {
				if err := v.Flush(); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
}

func BenchmarkRead4KRandomParallel(b *testing.B) {
	v := benchFile(b)
	b.SetBytes(ioSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seeds.Add(1), 0))
		p := make([]byte, ioSize)
		for pb.Next() {
			if _, err := v.ReadAt(p, r.Int64N(benchSize/ioSize)*ioSize); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
