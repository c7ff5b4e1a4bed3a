package journal

import "errors"

var (
	// ErrCorrupt: a record or header that should be intact is not, and it is
	// not a torn tail (see the recovery table in doc.go). Wrapped with the
	// segment file name and offset.
	ErrCorrupt = errors.New("journal: corrupt record")
	// ErrChecksum: a header or payload checksum does not match.
	ErrChecksum = errors.New("journal: checksum mismatch")
	// ErrVersion: a header with a valid checksum carries a format version
	// this code does not understand.
	ErrVersion = errors.New("journal: unsupported format version")
	// ErrFailed: an fsync (or another write-path I/O) failed earlier; the
	// journal is unusable and must be reopened (after the cause is fixed).
	// Wraps the original error.
	ErrFailed = errors.New("journal: failed")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("journal: closed")
	// ErrTrimmed: the requested sequence number is no longer retained.
	ErrTrimmed = errors.New("journal: sequence trimmed")
	// ErrOutOfRange: the requested sequence number has not been written.
	ErrOutOfRange = errors.New("journal: sequence out of range")
	// ErrInvalid: a bad argument (op, option or sequence).
	ErrInvalid = errors.New("journal: invalid argument")

	// errNotRecord: the bytes are not a record header at all (zeroes,
	// garbage, wrong magic). Internal: recovery and readers classify it.
	errNotRecord = errors.New("journal: no record")
)
