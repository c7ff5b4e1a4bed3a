// Package backendtest is the contract suite every backend.Backend passes.
//
//	func TestContract(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
//			b, err := file.Create(filepath.Join(t.TempDir(), "vol"), size, file.Options{})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
//
// Run opens a fresh backend of Size bytes for each subtest and closes it
// when the subtest ends. Size is a multiple of 4 KiB but not of 64 KiB, so
// chunked backends have a partial last chunk. The subtests check:
//
//   - Size, and that never-written ranges (aligned or not) read as zeroes;
//   - zero-length requests anywhere in [0, Size];
//   - read-after-write at sector, page, chunk, MiB and end-of-device
//     boundaries, with unaligned offsets and lengths;
//   - ErrOutOfRange (errors.Is) for reads, writes, Discard and WriteZeroes
//     beyond the end, at negative offsets and with overflowing ranges, both
//     through the helpers and the capabilities directly, and that a
//     straddling request changed nothing;
//   - Discard and WriteZeroes in both modes over whole and partial chunks:
//     the range reads as zeroes, its neighbours survive, it can be written
//     again;
//   - Flush;
//   - a seeded random mix of operations against a byte-slice model;
//   - concurrency: goroutines owning interleaved 4 KiB blocks (so they share
//     chunks) write, read back, write sub-blocks and discard while another
//     goroutine flushes, then the whole device is verified;
//   - Resize, if the backend is a backend.Resizer (skipped otherwise, or if
//     it returns backend.ErrNotSupported): same size is a no-op, shrinking
//     fails with ErrShrink, growing while writes run keeps old data, zeroes
//     the new range and makes it usable to its last byte.
//
// Every comparison is against a model of the expected bytes, and reads go
// into poisoned buffers, so a backend that ignores a request fails.
package backendtest
