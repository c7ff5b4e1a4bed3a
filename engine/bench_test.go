package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend/file"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/transport"
)

// BenchmarkVolumeWrite4k measures the durable write path (journal on the
// real disk, file backend) with 1 and 32 concurrent writers, without NBD.
// Knobs: TWINBLOCK_BENCH_DIR picks the disk (default: the test's temp dir);
// TWINBLOCK_BENCH_BACKEND=mem isolates the journal; TWINBLOCK_BENCH_PREFILL=1
// allocates the image first (overwrites, as after a while in production);
// TWINBLOCK_BENCH_NOCKPT=1 turns checkpoints off.
func BenchmarkVolumeWrite4k(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			dir := os.Getenv("TWINBLOCK_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			} else {
				var err error
				if dir, err = os.MkdirTemp(dir, "vb"); err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
			}
			const size = 256 << 20
			be, err := openBenchBackend(dir, size)
			if err != nil {
				b.Fatal(err)
			}
			j, err := journal.Open(journal.Options{Dir: dir + "/j"})
			if err != nil {
				b.Fatal(err)
			}
			opts := VolumeOptions{Name: "b", Backend: be, Journal: j, Logger: quiet}
			if os.Getenv("TWINBLOCK_BENCH_NOCKPT") != "" {
				opts.CheckpointInterval, opts.CheckpointBytes, opts.JournalMaxBytes = time.Hour, 8<<30, 16<<30
			}
			v, err := OpenVolume(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			runWriters(b, v, writers, size)
		})
	}
}

func openBenchBackend(dir string, size int64) (interface {
	ReadAt([]byte, int64) (int, error)
	WriteAt([]byte, int64) (int, error)
	Flush() error
	Size() int64
	Close() error
}, error) {
	if os.Getenv("TWINBLOCK_BENCH_BACKEND") == "mem" {
		return mem.New(size), nil
	}
	be, err := file.Create(dir+"/img", size, file.Options{})
	if err != nil {
		return nil, err
	}
	if os.Getenv("TWINBLOCK_BENCH_PREFILL") != "" {
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; off += 1 << 20 {
			buf[0] = 1
			be.WriteAt(buf, off)
		}
		be.Flush()
	}
	return be, nil
}

// BenchmarkPairWrite4k: a sync pair in one process (journals on the real
// disk, mem backends, transport.Pipe link), 1 writer: the replication
// latency without NBD or TLS.
func BenchmarkPairWrite4k(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			p := newPairOS(b, transport.ModeSync)
			deadline := time.Now().Add(10 * time.Second)
			for p.a.v.Status().Conn != ConnConnected && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			runWriters(b, p.a.v, writers, pairSize)
		})
	}
}

// runWriters has `writers` goroutines write 4 KiB at random offsets of a
// volume of the given size, b.N writes in all, and reports writes/s.
func runWriters(b *testing.B, v *Volume, writers int, size int) {
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/writers + 1
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf := make([]byte, 4096)
			for i := 0; i < per; i++ {
				if err := v.WriteAt(buf, uint64(rng.IntN(size/4096))*4096, false); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	b.ReportMetric(float64(per*writers)/time.Since(start).Seconds(), "writes/s")
}
