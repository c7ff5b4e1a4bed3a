package backend

import (
	"fmt"
	"io"
)

// ZeroChunk is the largest single WriteAt that ZeroFill issues. It bounds the
// size of one request to the device (and the latency a fallback adds to a
// concurrent read queued behind it) without allocating anything: every chunk
// comes from one shared, never-written buffer.
const ZeroChunk = 1 << 20

// zeroes is shared by every ZeroFill call. WriteAt implementations must not
// modify p (io.WriterAt), so sharing it between goroutines is safe.
var zeroes [ZeroChunk]byte

// CheckRange reports whether [off, off+n) lies inside a device of the given
// size. A zero-length range is valid anywhere in [0, size]. The check is
// written so that off+n can never overflow.
func CheckRange(size, off, n int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: offset %d length %d, size %d", ErrOutOfRange, off, n, size)
	}
	return nil
}

// ZeroFill writes zeroes over [off, off+n) with plain WriteAt calls of at
// most ZeroChunk bytes. It is the fallback behind Discard and WriteZeroes,
// exported so that a backend whose fast path is unavailable at run time
// (fallocate returning EOPNOTSUPP) can fall back without recursing into its
// own Zeroer. It does not check the range; the WriteAt calls do.
func ZeroFill(w io.WriterAt, off, n int64) error {
	for n > 0 {
		c := min(n, ZeroChunk)
		if _, err := w.WriteAt(zeroes[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Discard releases [off, off+n) of b. Afterwards the range reads as zeroes,
// whether b implements Discarder or not: without the capability the range is
// overwritten with zeroes, which keeps replicas byte-identical at the price
// of the space a real discard would free.
func Discard(b Backend, off, n int64) error {
	if err := CheckRange(b.Size(), off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if d, ok := b.(Discarder); ok {
		return d.Discard(off, n)
	}
	return ZeroFill(b, off, n)
}

// WriteZeroes makes [off, off+n) of b read as zeroes. With keepAllocated the
// range must stay allocated (NBD_CMD_FLAG_NO_HOLE), so a backend without a
// Zeroer gets the zeroes written; without it a Discarder's Discard is good
// enough, since Discard guarantees zeroes too.
func WriteZeroes(b Backend, off, n int64, keepAllocated bool) error {
	if err := CheckRange(b.Size(), off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if z, ok := b.(Zeroer); ok {
		return z.WriteZeroes(off, n, keepAllocated)
	}
	if d, ok := b.(Discarder); ok && !keepAllocated {
		return d.Discard(off, n)
	}
	return ZeroFill(b, off, n)
}
