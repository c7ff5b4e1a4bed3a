// Package engine turns a backend into an exported volume: it checks bounds,
// enforces read-only and failure state, and carries the write path.
//
// A Volume is safe for concurrent use; the NBD server calls it from one
// goroutine per in-flight request. Errors wrap the package sentinels
// (ErrOutOfRange, ErrReadOnly, ErrFailed, ErrClosed) or the backend's, so the
// caller can map them to NBD error codes with errors.Is.
//
// Durability: WriteAt/Trim/WriteZeroes with fua, and Flush, return only after
// the backend's Flush succeeded. The first Flush error fails the volume for
// good: later writes and flushes return ErrFailed, because after a failed
// fdatasync the kernel may have dropped dirty pages and nothing tells us
// which (never retry and carry on).
package engine
