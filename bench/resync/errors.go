package resync

import "errors"

// Sentinel errors, tested with errors.Is; the wrapped message carries the
// detail (the command line, the tail of a child's output).
var (
	// ErrOptions: the options are unusable (size not a multiple of the
	// chunk, share of chunks out of range, unknown cache mode).
	ErrOptions = errors.New("resync bench: invalid options")
	// ErrStatusOutput: `twinblock status --json` printed something that is
	// not an array of volume states.
	ErrStatusOutput = errors.New("resync bench: bad status output")
	// ErrCommand: a child command (twinblock create, certs, status) failed
	// or timed out.
	ErrCommand = errors.New("resync bench: command failed")
	// ErrStart: a daemon did not become ready, or a resync pass did not end
	// within its timeout.
	ErrStart = errors.New("resync bench: did not start or finish")
	// ErrDropCaches: the page cache could not be dropped (not root, or
	// /proc/sys/vm/drop_caches not writable); use CacheWarm instead.
	ErrDropCaches = errors.New("resync bench: cannot drop the page cache")
	// ErrCheck: after a resync the rewritten chunks still differ, or the
	// pass sent other than the rewritten bytes.
	ErrCheck = errors.New("resync bench: resync result wrong")
	// ErrRounds: some rounds failed; the report still holds every round.
	ErrRounds = errors.New("resync bench: some rounds failed")
)
