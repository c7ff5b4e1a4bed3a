package nbd

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Benchmarks of the server over loopback with the Go client and a memory
// device: ops/s is b.N over the run time; QD is the number of goroutines
// issuing requests on one connection. Compare with nbdkit using fio (see
// the package report) — absolute numbers here include the Go client.

const benchSize = 256 << 20

func benchServer(b *testing.B, network string, qd int, op func(c *Client, buf []byte, off uint64) error) {
	s := newTestServer(b, ServerOptions{}, &Export{Name: "bench", Device: newMemDevice(benchSize)})
	nw, addr := listen(b, s, network)
	c, err := Dial(testCtx(b), nw, addr, ClientOptions{ExportName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for w := range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			rng := uint64(w)*0x9e3779b97f4a7c15 + 1
			for next.Add(1) <= int64(b.N) {
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				off := (rng % (benchSize / 4096)) * 4096
				if err := op(c, buf, off); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func write4k(c *Client, buf []byte, off uint64) error { return c.WriteAt(buf, off, false) }
func read4k(c *Client, buf []byte, off uint64) error  { return c.ReadAt(buf, off) }

func BenchmarkServer4kWriteQD1(b *testing.B)      { benchServer(b, "tcp", 1, write4k) }
func BenchmarkServer4kWriteQD32(b *testing.B)     { benchServer(b, "tcp", 32, write4k) }
func BenchmarkServer4kReadQD1(b *testing.B)       { benchServer(b, "tcp", 1, read4k) }
func BenchmarkServer4kReadQD32(b *testing.B)      { benchServer(b, "tcp", 32, read4k) }
func BenchmarkServerUnix4kWriteQD1(b *testing.B)  { benchServer(b, "unix", 1, write4k) }
func BenchmarkServerUnix4kWriteQD32(b *testing.B) { benchServer(b, "unix", 32, write4k) }
func BenchmarkServerUnix4kReadQD32(b *testing.B)  { benchServer(b, "unix", 32, read4k) }
