// Package backend defines where a volume's bytes finally live, and the
// helpers every user of a backend goes through.
//
// A Backend is an io.ReaderAt and io.WriterAt of fixed Size plus Flush and
// Close. Implementations live in subpackages: file (a regular file or raw
// block device, the default), mem (sparse memory, for tests and
// benchmarks) and rbd (Ceph). faulty wraps any of them to inject errors, and
// backendtest is the contract suite all of them pass.
//
// # Using a backend
//
//	b, err := file.Open("/var/lib/twinblock/vol0.img", file.Options{})
//	...
//	if _, err := b.WriteAt(buf, off); err != nil { ... }
//	if err := backend.Discard(b, off, n); err != nil { ... }        // TRIM
//	if err := backend.WriteZeroes(b, off, n, true); err != nil { ... } // NO_HOLE
//	if err := b.Flush(); err != nil { /* fatal for the volume */ }
//
// Always call the package-level Discard and WriteZeroes rather than asserting
// the optional interfaces yourself: they check the range, use the
// Discarder or Zeroer capability when the backend has one, and otherwise
// write zeroes in ZeroChunk (1 MiB) pieces from one shared zero buffer, so
// the result is the same on every backend. That matters because the two
// replicas of a volume may sit on different backends and must stay
// byte-identical: after Discard a range reads as zeroes everywhere, never
// "undefined".
//
// # Contract
//
//   - Requests outside [0, Size) fail with ErrOutOfRange (CheckRange) and
//     change nothing. Zero-length requests anywhere in [0, Size] succeed.
//   - Never-written ranges read as zeroes. A short read or write is always
//     an error.
//   - Every method may be called concurrently; concurrent overlapping
//     writes may land in any order (the engine never issues them).
//   - Flush makes every write that returned before it durable. An error from
//     Flush is final: the backend must keep returning it and the engine
//     fails the volume (after a failed fsync the kernel may have dropped the
//     data, so a later success proves nothing).
//   - Resize (Resizer) only grows; shrinking fails with ErrShrink.
//   - Errors are tested with errors.Is against ErrOutOfRange, ErrClosed,
//     ErrReadOnly, ErrConfig, ErrShrink and ErrNotSupported.
package backend
