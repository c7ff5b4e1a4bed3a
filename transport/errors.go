package transport

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps one of them; test
// with errors.Is, never by matching strings.
var (
	// ErrBadFrame: bytes on the wire that are not a valid frame or payload
	// (bad magic, unknown type or flags, inconsistent fields, checksum
	// mismatch, oversize length). The connection is unusable afterwards.
	ErrBadFrame = errors.New("transport: bad frame")
	// ErrChecksum additionally marks a header or payload checksum mismatch
	// (the error is also ErrBadFrame).
	ErrChecksum = errors.New("transport: checksum mismatch")
	// ErrTooLarge additionally marks a length above the configured maximum,
	// rejected before anything was allocated (the error is also ErrBadFrame).
	ErrTooLarge = errors.New("transport: frame too large")
	// ErrHandshake: the connection failed before both sides accepted each
	// other's Hello: TLS failure, garbage on the port, timeout, EOF.
	ErrHandshake = errors.New("transport: handshake failed")
	// ErrRefused: one side refused the other's Hello (wrong volume, size,
	// version, peer id, or the engine's Validate hook). The error is a
	// *RefuseError that carries the reason code.
	ErrRefused = errors.New("transport: refused")
	// ErrPeerTimeout: nothing arrived from the peer (not even a heartbeat)
	// for Timeout, or a write could not complete for Timeout.
	ErrPeerTimeout = errors.New("transport: peer timeout")
	// ErrConnLost: the byte stream broke (EOF without Goodbye, reset, cut).
	ErrConnLost = errors.New("transport: connection lost")
	// ErrPeerClosed: the peer said Goodbye. The error is a *GoodbyeError.
	ErrPeerClosed = errors.New("transport: peer closed the connection")
	// ErrClosed: this side closed the Conn (or Listener).
	ErrClosed = errors.New("transport: closed")
	// ErrOptions: invalid options passed by the caller.
	ErrOptions = errors.New("transport: invalid options")
)

// multiErr carries its own message and unwraps to several sentinels, so one
// error can be both ErrBadFrame and ErrChecksum without a stuttering text.
type multiErr struct {
	msg  string
	errs []error
}

func (e *multiErr) Error() string   { return e.msg }
func (e *multiErr) Unwrap() []error { return e.errs }

func badFrame(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadFrame}, args...)...)
}

func checksumErr(what string) error {
	return &multiErr{msg: "transport: bad frame: " + what + " checksum mismatch", errs: []error{ErrBadFrame, ErrChecksum}}
}

func tooLarge(what string, n, limit uint64) error {
	return &multiErr{
		msg:  fmt.Sprintf("transport: bad frame: %s %d exceeds limit %d", what, n, limit),
		errs: []error{ErrBadFrame, ErrTooLarge},
	}
}

// Reason is a refusal or goodbye reason code, carried on the wire as u16.
type Reason uint16

// Reason codes. Values are part of the wire format; never renumber.
const (
	ReasonNone         Reason = 0  // normal goodbye
	ReasonVersion      Reason = 1  // no common protocol version
	ReasonVolumeName   Reason = 2  // volume name differs / unknown volume
	ReasonVolumeUUID   Reason = 3  // volume uuid differs
	ReasonVolumeSize   Reason = 4  // volume size differs
	ReasonWrongPeer    Reason = 5  // node id is not the configured peer (or is ourselves)
	ReasonRoleConflict Reason = 6  // e.g. both sides are primary
	ReasonSplitBrain   Reason = 7  // data generations diverged
	ReasonBusy         Reason = 8  // a link for this volume is already up
	ReasonShutdown     Reason = 9  // node is shutting down
	ReasonPolicy       Reason = 10 // engine policy refused; text says why
	ReasonProtocol     Reason = 11 // protocol violation
)

var reasonText = map[Reason]string{
	ReasonNone:         "normal",
	ReasonVersion:      "protocol version mismatch",
	ReasonVolumeName:   "volume name mismatch",
	ReasonVolumeUUID:   "volume uuid mismatch",
	ReasonVolumeSize:   "volume size mismatch",
	ReasonWrongPeer:    "unexpected peer node",
	ReasonRoleConflict: "role conflict",
	ReasonSplitBrain:   "split brain",
	ReasonBusy:         "busy",
	ReasonShutdown:     "shutting down",
	ReasonPolicy:       "policy",
	ReasonProtocol:     "protocol error",
}

func (r Reason) String() string {
	if s, ok := reasonText[r]; ok {
		return s
	}
	return fmt.Sprintf("reason %d", uint16(r))
}

// RefuseError is the error both sides get when a handshake is refused.
// errors.Is(err, ErrRefused) is true.
type RefuseError struct {
	Reason Reason
	Text   string
	// ByPeer is true when the remote side refused us, false when we
	// refused the remote side (or when the error comes from a Validate
	// hook, before it was sent).
	ByPeer bool
}

// Refusal builds the error a Validate hook returns to refuse with a
// specific reason code. Any other error from Validate refuses with
// ReasonPolicy and the error's text.
func Refusal(reason Reason, format string, args ...any) *RefuseError {
	return &RefuseError{Reason: reason, Text: fmt.Sprintf(format, args...)}
}

func (e *RefuseError) Error() string {
	s := "transport: refused"
	if e.ByPeer {
		s += " by peer"
	}
	s += ": " + e.Reason.String()
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefuseError) Is(target error) bool { return target == ErrRefused }

// GoodbyeError is what Recv returns after the peer said Goodbye.
// errors.Is(err, ErrPeerClosed) is true.
type GoodbyeError struct {
	Reason Reason
	Text   string
}

func (e *GoodbyeError) Error() string {
	s := "transport: peer closed the connection: " + e.Reason.String()
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Is makes errors.Is(err, ErrPeerClosed) true.
func (e *GoodbyeError) Is(target error) bool { return target == ErrPeerClosed }
