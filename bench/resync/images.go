package resync

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
)

// ChunkSize is the unit the benchmark rewrites on the secondary: the
// engine's default resync chunk (resync.chunk_size), the "chunk" of the
// issue's "1% of chunks changed".
const ChunkSize = 64 << 10

// ioSize is the request size of image writes and of the baseline reads:
// as large as the engine's hash batches (4 MiB).
const ioSize = 4 << 20

// chacha returns a ChaCha8 stream seeded from seed and a stream id.
func chacha(seed, stream uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:8], seed)
	binary.LittleEndian.PutUint64(s[8:16], stream)
	return rand.NewChaCha8(s)
}

// makeImages writes a, size bytes of pseudo-random data from seed, and b,
// an identical copy, and fsyncs both. Both files are created (truncated
// if they exist).
func makeImages(ctx context.Context, a, b string, size int64, seed uint64) error {
	fa, err := os.Create(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Create(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	src := chacha(seed, 0)
	buf := make([]byte, ioSize)
	for off := int64(0); off < size; off += ioSize {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(ioSize), size-off)
		_, _ = src.Read(buf[:n])
		if _, err := fa.Write(buf[:n]); err != nil {
			return err
		}
		if _, err := fb.Write(buf[:n]); err != nil {
			return err
		}
	}
	if err := fa.Sync(); err != nil {
		return err
	}
	if err := fb.Sync(); err != nil {
		return err
	}
	if err := fa.Close(); err != nil {
		return err
	}
	return fb.Close()
}

// changedChunks is how many of the size/ChunkSize chunks a share of
// frac is: rounded, at least one.
func changedChunks(size int64, frac float64) int {
	n := int(frac*float64(size/ChunkSize) + 0.5)
	return max(n, 1)
}

// mutate rewrites n distinct chunks of path, picked at random from seed,
// with fresh random data that differs from what was there in every 4 KiB
// block, fsyncs, and returns the chunks' offsets in increasing order.
func mutate(path string, size int64, n int, seed uint64) ([]int64, error) {
	chunks := size / ChunkSize
	if int64(n) > chunks || n < 1 {
		return nil, fmt.Errorf("%w: %d changed chunks of %d", ErrOptions, n, chunks)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(seed, 0x7265737963))
	picked := map[int64]bool{}
	for len(picked) < n {
		picked[r.Int64N(chunks)] = true
	}
	offs := make([]int64, 0, n)
	for c := range picked {
		offs = append(offs, c*ChunkSize)
	}
	slices.Sort(offs)
	src := chacha(seed, 1)
	old, fresh := make([]byte, ChunkSize), make([]byte, ChunkSize)
	for _, off := range offs {
		if _, err := f.ReadAt(old, off); err != nil {
			return nil, err
		}
		_, _ = src.Read(fresh)
		// A 4 KiB block of fresh data equal to the old one is a 2^-32768
		// chance; make it impossible so the expected sent bytes are exact.
		for b := 0; b < ChunkSize; b += 4096 {
			if bytes.Equal(old[b:b+4096], fresh[b:b+4096]) {
				fresh[b] ^= 0xff
			}
		}
		if _, err := f.WriteAt(fresh, off); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return offs, f.Close()
}

// compareChunks checks that a and b hold the same bytes in the chunks at
// offs.
func compareChunks(a, b string, offs []int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, ChunkSize), make([]byte, ChunkSize)
	var differ []int64
	for _, off := range offs {
		if _, err := fa.ReadAt(ba, off); err != nil {
			return err
		}
		if _, err := fb.ReadAt(bb, off); err != nil {
			return err
		}
		if !bytes.Equal(ba, bb) {
			differ = append(differ, off)
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("%w: %d of %d rewritten chunks still differ after the resync (first at offset %d)",
			ErrCheck, len(differ), len(offs), differ[0])
	}
	return nil
}
