package backend

import (
	"errors"
	"io"
)

// Backend is where a volume's bytes finally live: a file or raw block device,
// memory (tests, benchmarks) or a Ceph RBD image.
//
// Contract:
//   - ReadAt and WriteAt follow io.ReaderAt / io.WriterAt, except that a short
//     read or write is always an error. Callers never pass a range beyond
//     Size(); a backend returns ErrOutOfRange if they do, and then changes
//     nothing (no partial write of the part that fits).
//   - All methods may be called concurrently. Concurrent overlapping writes
//     may land in any order; the engine never issues them.
//   - The caller owns p; a backend must not keep it after the call returns.
//   - Flush makes every write that returned before the call durable.
//     After an error from Flush the backend's durability is unknown: the
//     engine treats it as fatal for the volume and never retries it.
//   - Close releases resources; no method may be called after Close.
//
// Optional capabilities are separate interfaces (Discarder, Zeroer, Resizer);
// use the package-level Discard and WriteZeroes helpers, which fall back to
// writing zeroes when a backend lacks the capability.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	Flush() error
	Size() int64
	Close() error
}

// Discarder releases the storage behind [off, off+n). Afterwards the range
// reads as zeroes (replicas must stay byte-identical, so "undefined" is not
// allowed here).
type Discarder interface {
	Discard(off, n int64) error
}

// Zeroer writes zeroes over [off, off+n) more cheaply than WriteAt. With
// keepAllocated the range stays allocated (NBD's NO_HOLE); otherwise the
// backend may punch it.
type Zeroer interface {
	WriteZeroes(off, n int64, keepAllocated bool) error
}

// Writebacker starts writing the backend's dirty cached data to stable
// storage and returns without waiting for it (a file: sync_file_range with
// SYNC_FILE_RANGE_WRITE). It promises no durability: only Flush does. What
// it buys is a smooth stream of writeback instead of one large burst at the
// next Flush, whose device flushes then stall every other flush of the
// disk (the journal's group commits) for its whole duration.
type Writebacker interface {
	StartWriteback() error
}

// Receiver is implemented by backends that keep their data in memory:
// ReceiveAt reads exactly n bytes from r straight into [off, off+n), which
// spares the caller a buffer and a copy of every byte (for an NBD WRITE,
// the server's payload buffer; for a 1 MiB write that copy is a third of
// the server's CPU time). r may be a network connection and block for as
// long as the client takes: a Receiver holds no lock that other requests
// wait for while it reads from r. It returns ErrOutOfRange (having read
// nothing) for a bad range, otherwise the first error from r. After an
// error the range holds some mix of old and new bytes, as after any write
// that failed.
type Receiver interface {
	ReceiveAt(r io.Reader, off, n int64) error
}

// Resizer changes the backend's size (online grow). Growing makes the new
// range [old, size) read as zeroes. Shrinking is refused with ErrShrink
// (dropping the tail of a replicated volume must be an explicit, separate
// operation); resizing to the current size is a no-op. Resize may run
// concurrently with I/O inside the old size.
type Resizer interface {
	Resize(size int64) error
}

// Errors, tested with errors.Is.
var (
	ErrOutOfRange = errors.New("backend: range outside the device")
	ErrClosed     = errors.New("backend: closed")
	ErrReadOnly   = errors.New("backend: read-only")
	ErrConfig     = errors.New("backend: bad configuration")
	// ErrShrink is returned by Resize when the new size is smaller.
	ErrShrink = errors.New("backend: shrinking is not supported")
	// ErrNotSupported is returned by wrappers (such as faulty) asked for a
	// capability the wrapped backend lacks and that has no fallback (Resize).
	ErrNotSupported = errors.New("backend: operation not supported")
)
