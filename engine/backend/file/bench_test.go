package file_test

import (
	"path/filepath"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/file"
)

const benchSize = 256 << 20

func benchFile(b *testing.B) *file.Backend {
	v, err := file.Create(filepath.Join(b.TempDir(), "vol"), benchSize, file.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	return v
}

// BenchmarkWrite4KRandomParallel measures buffered pwrite of 4 KiB at random
// aligned offsets of a sparse file. No flushes: this is the page-cache
// ceiling the engine's apply path runs against.
func BenchmarkWrite4KRandomParallel(b *testing.B) {
	backendtest.RandomIO(b, benchFile(b), backendtest.BenchOptions{Region: benchSize})
}

// BenchmarkWrite4KRandomFlushEvery64 adds an fdatasync per 64 writes per
// goroutine, the shape of a checkpoint-heavy apply loop.
func BenchmarkWrite4KRandomFlushEvery64(b *testing.B) {
	backendtest.RandomIO(b, benchFile(b), backendtest.BenchOptions{Region: benchSize, FlushEvery: 64})
}

func BenchmarkRead4KRandomParallel(b *testing.B) {
	backendtest.RandomIO(b, benchFile(b), backendtest.BenchOptions{Region: benchSize, Read: true})
}
