package durable

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped message
// carries the detail (the command line, the tail of a child's output).
var (
	// ErrFioOutput means fio's JSON output could not be decoded or does not
	// describe a job with writes and fdatasyncs.
	ErrFioOutput = errors.New("durable: bad fio output")
	// ErrStatusOutput means `twinblock status --json` printed something
	// that is not an array of volume states.
	ErrStatusOutput = errors.New("durable: bad status output")
	// ErrCommand means a child command (fio, twinblock create/certs/status)
	// failed or timed out.
	ErrCommand = errors.New("durable: command failed")
	// ErrStart means a twinblock daemon or proxy did not become ready
	// (exited, or no NBD greeting / Connected state within the start timeout).
	ErrStart = errors.New("durable: did not start")
	// ErrOptions means the options are unusable (unknown row, bad duration).
	ErrOptions = errors.New("durable: invalid options")
	// ErrSamples means some samples failed; the report still holds every
	// sample that succeeded and the error of each one that did not.
	ErrSamples = errors.New("durable: some samples failed")
)
