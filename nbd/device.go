package nbd

import (
	"errors"
	"io"
)

// Device is what the server exports. The nbd package knows nothing else about
// the storage behind an export: the engine (or a test) implements Device.
//
// Contract:
//   - Every method may be called concurrently from many goroutines (many
//     requests in flight on many connections). Ordering between overlapping
//     requests that are in flight at the same time is the device's business;
//     the NBD protocol gives the client no ordering guarantee for them.
//   - Offsets and lengths are already bounds-checked by the server: off+len
//     never exceeds Size(), and len is never zero for ReadAt/WriteAt.
//   - Buffers: p is owned by the server and valid only for the duration of the
//     call; a device that keeps the data must copy it.
//   - A method returns only once the operation is complete and visible to
//     later reads. With fua (or for Flush) it returns only once the data is
//     durable.
//   - Errors: return an error wrapping one of ErrInvalid, ErrNoSpace, ErrPerm,
//     ErrNotSupported to choose the NBD error code; anything else is reported
//     to the client as EIO. An error fails that request only.
type Device interface {
	// Size is the export size in bytes. It must not change while a
	// connection is open (online resize is announced by reconnecting).
	Size() uint64
	// ReadAt fills p from offset off.
	ReadAt(p []byte, off uint64) error
	// WriteAt writes p at off; with fua it is durable when WriteAt returns.
	WriteAt(p []byte, off uint64, fua bool) error
	// Trim discards [off, off+length). Afterwards the range reads as zeroes
	// (twinblock is stricter than NBD here so that replicas stay identical).
	Trim(off uint64, length uint32, fua bool) error
	// WriteZeroes zeroes [off, off+length). With noHole the device must
	// allocate (not punch) the range.
	WriteZeroes(off uint64, length uint32, noHole, fua bool) error
	// Flush makes every write that completed before the call durable, on
	// every connection (the server advertises CAN_MULTI_CONN).
	Flush() error
}

// Cacher is an optional Device capability for NBD_CMD_CACHE: prefetch the
// range. Devices without it get CACHE answered as a successful no-op.
type Cacher interface {
	Cache(off uint64, length uint32) error
}

// Receiver is an optional Device capability for devices that keep their
// data in memory: ReceiveWrite takes a WRITE's payload straight from the
// connection into the device's storage, which saves the server's payload
// buffer and a copy of every byte (a third of the server's CPU time for a
// 1 MiB write). The server offers it every WRITE without FUA that passed
// its checks, on the goroutine that reads the connection.
//
// ReceiveWrite stores the next length bytes of r at off, with WriteAt's
// meaning. It answers handled false, having read nothing, when it cannot
// (the server then reads the payload into a buffer and calls WriteAt). r
// yields at most length bytes and may block on the client: ReceiveWrite
// must not hold anything other requests wait for while it reads, and
// apart from reading r it must be quick (nothing else is read from the
// connection meanwhile). If r fails, ReceiveWrite returns that error and
// the server closes the connection; on an error of its own it may stop
// reading early, and the server skips the rest of the payload and answers
// the error.
type Receiver interface {
	ReceiveWrite(r io.Reader, off uint64, length uint32) (handled bool, err error)
}

// Errors a Device returns (wrapped with %w) to choose the NBD error code.
var (
	ErrInvalid      = errors.New("nbd: invalid argument")        // EINVAL
	ErrNoSpace      = errors.New("nbd: no space")                // ENOSPC
	ErrPerm         = errors.New("nbd: operation not permitted") // EPERM
	ErrNotSupported = errors.New("nbd: not supported")           // ENOTSUP
	ErrShutdown     = errors.New("nbd: server shutting down")    // ESHUTDOWN
)
