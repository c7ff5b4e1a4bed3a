package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Defaults for ConnOptions.
const (
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultHeartbeatInterval = 1 * time.Second
	DefaultTimeout           = 5 * time.Second
	DefaultSendQueue         = 1024
	DefaultRecvQueue         = 1024
	DefaultBufferSize        = 256 << 10
)

// DefaultCodecs is the compression preference when ConnOptions.Codecs is nil.
var DefaultCodecs = []Codec{CodecS2, CodecZstd}

// ConnOptions configure one side of a peer link; DialOptions and
// ListenOptions embed it.
type ConnOptions struct {
	// Hello describes this node and volume. The transport fills
	// MinVersion, MaxVersion and Codecs.
	Hello Hello
	// PeerID is the node id the peer must have: in its certificate and in
	// its Hello. Required with TLS; optional with Insecure.
	PeerID string
	// TLS holds this node's certificate and the pair's CA (see
	// pki.Config). The transport hardens a clone: TLS 1.3 only, mutual
	// authentication, chain and identity verified against PeerID.
	TLS *tls.Config
	// Insecure allows plain TCP. It must be set explicitly; a nil TLS
	// without it is an error, never a silent downgrade.
	Insecure bool
	// Validate decides whether to accept the peer's Hello after the
	// built-in checks (common version, PeerID, not ourselves). Return a
	// Refusal(...) to choose the reason code. nil means SameVolume.
	Validate func(local, remote Hello) error
	// Codecs lists compression codecs in order of preference (nil:
	// DefaultCodecs). The dialer's first codec that the listener also
	// has wins. NoCompression advertises none.
	Codecs        []Codec
	NoCompression bool
	// CompressMin is the smallest payload compressed (default DefaultCompressMin).
	CompressMin int
	// HandshakeTimeout bounds TCP connect (Dial), TLS and the Hello
	// exchange together.
	HandshakeTimeout time.Duration
	// HeartbeatInterval is the Ping period. Timeout fails the Conn with
	// ErrPeerTimeout when no byte arrived for that long, or a write made
	// no progress for that long. Timeout must exceed HeartbeatInterval.
	HeartbeatInterval time.Duration
	Timeout           time.Duration
	// MaxPayload caps incoming and outgoing payloads (default DefaultMaxPayload).
	MaxPayload int
	// SendQueue and RecvQueue bound the frames waiting in each direction;
	// a full send queue blocks Send (back-pressure), a full receive queue
	// stops reading from the socket.
	SendQueue, RecvQueue int
	// NoDirectWrite makes every frame go through the writer goroutine. By
	// default Send writes a frame itself when nothing is queued and the
	// writer is idle (one goroutine wake-up less per frame at low load);
	// such a Send may then wait for the socket like the writer would (up
	// to Timeout) even though the queue has room. SendContext with a
	// context that can end never writes directly.
	NoDirectWrite bool
	// BufferSize is the socket read and write buffer (default 256 KiB).
	BufferSize int
	// Logger receives one line per failed connection (default slog.Default()).
	Logger *slog.Logger
}

// DialOptions configure Dial.
type DialOptions struct {
	// Addr is host:port of the peer's listener.
	Addr string
	// Dialer makes the TCP connection (default: 15 s keep-alive).
	Dialer *net.Dialer
	ConnOptions
}

// ListenOptions configure Listen, NewListener and Handshake.
type ListenOptions struct {
	ConnOptions
	// HelloFor, when set, picks the local Hello from the dialer's Hello
	// (one listener serving several volumes). An error refuses the dialer
	// (use Refusal(ReasonVolumeName, ...) for an unknown volume).
	HelloFor func(remote Hello) (Hello, error)
	// OnHandshakeError is told about every connection that failed its
	// handshake (garbage, TLS failure, refusal). Default: a warning on Logger.
	OnHandshakeError func(remote net.Addr, err error)
	// MaxHandshakes bounds handshakes in progress (default 16); further
	// connections wait in the kernel's accept queue.
	MaxHandshakes int
}

func (o ConnOptions) normalize() (ConnOptions, error) {
	if !o.Insecure && o.TLS == nil {
		return o, fmt.Errorf("%w: TLS config required (set Insecure: true for plain TCP)", ErrOptions)
	}
	if !o.Insecure && o.PeerID == "" {
		return o, fmt.Errorf("%w: PeerID required with TLS", ErrOptions)
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Timeout <= o.HeartbeatInterval {
		return o, fmt.Errorf("%w: Timeout %v must exceed HeartbeatInterval %v", ErrOptions, o.Timeout, o.HeartbeatInterval)
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.CompressMin <= 0 {
		o.CompressMin = DefaultCompressMin
	}
	if o.SendQueue <= 0 {
		o.SendQueue = DefaultSendQueue
	}
	if o.RecvQueue <= 0 {
		o.RecvQueue = DefaultRecvQueue
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.NoCompression:
		o.Codecs = nil
	case o.Codecs == nil:
		o.Codecs = DefaultCodecs
	}
	var codecs []Codec
	for _, c := range o.Codecs {
		if !c.known() {
			return o, fmt.Errorf("%w: unknown codec %s", ErrOptions, c)
		}
		codecs = append(codecs, c)
	}
	o.Codecs = codecs
	h := o.Hello
	h.MinVersion, h.MaxVersion = uint16(Version1), uint16(Version1)
	h.Codecs = append([]Codec(nil), codecs...)
	h.History = append([]GenEntry(nil), h.History...)
	if err := h.validate(); err != nil {
		return o, fmt.Errorf("%w: Hello: %w", ErrOptions, err)
	}
	o.Hello = h
	return o, nil
}

// SameVolume is the default Validate: both sides must describe the same
// volume (name, UUID, size). Mismatches refuse with ReasonVolumeName,
// ReasonVolumeUUID or ReasonVolumeSize; the text names the nodes, since
// both sides log it.
func SameVolume(local, remote Hello) error {
	if local.VolumeUUID != remote.VolumeUUID {
		return Refusal(ReasonVolumeUUID, "%s has %x, %s has %x", local.NodeID, local.VolumeUUID, remote.NodeID, remote.VolumeUUID)
	}
	if local.VolumeName != remote.VolumeName {
		return Refusal(ReasonVolumeName, "%s has %q, %s has %q", local.NodeID, local.VolumeName, remote.NodeID, remote.VolumeName)
	}
	if local.VolumeSize != remote.VolumeSize {
		return Refusal(ReasonVolumeSize, "%s has %d bytes, %s has %d bytes", local.NodeID, local.VolumeSize, remote.NodeID, remote.VolumeSize)
	}
	return nil
}
