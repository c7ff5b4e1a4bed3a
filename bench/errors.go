package bench

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapped message
// carries the detail (which server, the tail of its stderr, fio's message).
var (
	// ErrFioOutput means fio's JSON output could not be decoded or does not
	// describe a job that did I/O.
	ErrFioOutput = errors.New("bench: bad fio output")
	// ErrFioFailed means the fio process failed (non-zero exit, timeout).
	ErrFioFailed = errors.New("bench: fio failed")
	// ErrServerStart means a server under test did not start accepting NBD
	// connections: it exited, or did not answer within the start timeout.
	ErrServerStart = errors.New("bench: server did not start")
	// ErrServerExited means a server that had started has gone away.
	ErrServerExited = errors.New("bench: server exited")
	// ErrUnknown means a server, workload or transport name is not known.
	ErrUnknown = errors.New("bench: unknown name")
	// ErrOptions means the harness options are unusable.
	ErrOptions = errors.New("bench: invalid options")
	// ErrSamples means some samples of a run failed; the report still holds
	// every sample that succeeded and the error of each one that did not.
	ErrSamples = errors.New("bench: some samples failed")
)
