package proxy

import "errors"

// Sentinel errors, tested with errors.Is; the wrapped message carries the
// detail (which option, which input).
var (
	// ErrOptions means Options are unusable (no target, negative delay, ...).
	ErrOptions = errors.New("proxy: invalid options")
	// ErrBandwidth means a bandwidth string could not be parsed.
	ErrBandwidth = errors.New("proxy: bad bandwidth")
	// ErrClosed is returned by Close when the proxy was already closed.
	ErrClosed = errors.New("proxy: closed")
)
