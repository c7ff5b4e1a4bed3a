package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
)

// Wire constants. See docs/formats.md for the byte diagram.
const (
	// Magic opens every frame: "TWBP" (twinblock peer).
	Magic uint32 = 0x54574250
	// Version1 is the only protocol version this code speaks. Handshake
	// frames (Hello, HelloOK, Refuse) always carry version 1 in their
	// header so that any two versions can at least negotiate.
	Version1 uint8 = 1
	// HeaderSize is the fixed frame header length.
	HeaderSize = 32
	// DefaultMaxPayload caps a payload (before and after decompression):
	// a 32 MiB NBD request plus room for the record header.
	DefaultMaxPayload = 32<<20 + 64<<10
	// MaxText caps the free text of Refuse and Goodbye.
	MaxText = 1024
	// maxSmallPayload caps Hello and Control payloads.
	maxSmallPayload = 64 << 10
)

// FrameType is the frame type byte. Values are part of the wire format.
type FrameType uint8

// Frame types.
const (
	TypeHello       FrameType = 1
	TypeHelloOK     FrameType = 2
	TypeRefuse      FrameType = 3
	TypeGoodbye     FrameType = 4
	TypePing        FrameType = 5
	TypePong        FrameType = 6
	TypeRecord      FrameType = 16
	TypeAck         FrameType = 17
	TypeHashRequest FrameType = 32
	TypeHashList    FrameType = 33
	TypeChunkData   FrameType = 34
	TypeControl     FrameType = 48
)

var typeNames = map[FrameType]string{
	TypeHello: "Hello", TypeHelloOK: "HelloOK", TypeRefuse: "Refuse", TypeGoodbye: "Goodbye",
	TypePing: "Ping", TypePong: "Pong", TypeRecord: "Record", TypeAck: "Ack",
	TypeHashRequest: "HashRequest", TypeHashList: "HashList", TypeChunkData: "ChunkData",
	TypeControl: "Control",
}

func (t FrameType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("FrameType(%d)", uint8(t))
}

// payloadBounds returns the smallest and largest decoded payload a frame
// type may have, so the reader refuses an absurd length before allocating.
func payloadBounds(t FrameType, maxPayload int) (lo, hi int, ok bool) {
	switch t {
	case TypeHello:
		return helloFixedLen, maxSmallPayload, true
	case TypeHelloOK:
		return 3, 3, true
	case TypeRefuse, TypeGoodbye:
		return 4, 4 + MaxText, true
	case TypePing, TypePong, TypeAck:
		return 16, 16, true
	case TypeRecord:
		return recordHeaderLen, maxPayload, true
	case TypeHashRequest:
		return 24, 24, true
	case TypeHashList, TypeChunkData:
		return 24, maxPayload, true
	case TypeControl:
		return 2, maxSmallPayload, true
	}
	return 0, 0, false
}

// Codec is a payload compression algorithm. Values are part of the wire format.
type Codec uint8

// Codecs.
const (
	CodecNone Codec = 0
	CodecS2   Codec = 1
	CodecZstd Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) known() bool { return c == CodecS2 || c == CodecZstd }

// FlagCompressed in the header flags byte says the payload is compressed
// with the header's codec. All other flag bits are reserved (must be 0).
const FlagCompressed uint8 = 1 << 0

// Header is a decoded frame header.
type Header struct {
	Version    uint8
	Type       FrameType
	Flags      uint8
	Codec      Codec
	WireLen    uint32 // payload bytes that follow the header
	RawLen     uint32 // payload bytes after decompression (== WireLen if not compressed)
	PayloadSum uint64 // xxhash64 of the WireLen payload bytes
}

// put writes the 32-byte header including its own checksum.
func (h Header) put(b []byte) {
	be := binary.BigEndian
	be.PutUint32(b[0:], Magic)
	b[4] = h.Version
	b[5] = byte(h.Type)
	b[6] = h.Flags
	b[7] = byte(h.Codec)
	be.PutUint32(b[8:], h.WireLen)
	be.PutUint32(b[12:], h.RawLen)
	be.PutUint64(b[16:], h.PayloadSum)
	be.PutUint64(b[24:], xxhash.Sum64(b[:24]))
}

// RawFrame is a frame as read from the wire, payload already verified and
// decompressed. Decode turns it into a typed Frame.
type RawFrame struct {
	Header  Header
	Payload []byte
}

// Decode decodes the payload according to the header's type.
func (r RawFrame) Decode() (Frame, error) { return DecodeFrame(r.Header.Type, r.Payload) }

// ReaderOptions configure a FrameReader.
type ReaderOptions struct {
	// MaxPayload caps WireLen and RawLen (default DefaultMaxPayload).
	MaxPayload int
	// Version is the header version every frame must carry (default Version1).
	Version uint8
	// Codecs lists the compression codecs accepted in incoming frames;
	// a compressed frame with any other codec is a bad frame.
	Codecs []Codec
}

// FrameReader reads and verifies frames from a byte stream. It is not safe
// for concurrent use. Every length is checked against the limits before
// the payload buffer is allocated.
type FrameReader struct {
	r      io.Reader
	opts   ReaderOptions
	hdr    [HeaderSize]byte
	codecs [4]bool
	// started is false until the first frame's magic was read: garbage at
	// the very start of a stream gets a diagnosis (HTTP, TLS, ...).
	started bool
}

// NewFrameReader returns a reader over r. Wrap r in a bufio.Reader: the
// frame reader issues two small reads per frame.
func NewFrameReader(r io.Reader, opts ReaderOptions) *FrameReader {
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if opts.Version == 0 {
		opts.Version = Version1
	}
	fr := &FrameReader{r: r, opts: opts}
	for _, c := range opts.Codecs {
		if int(c) < len(fr.codecs) {
			fr.codecs[c] = true
		}
	}
	return fr
}

// setVersion switches the expected header version after negotiation.
func (fr *FrameReader) setVersion(v uint8) { fr.opts.Version = v }

// ReadFrame reads one frame. io.EOF means the stream ended cleanly between
// frames; io.ErrUnexpectedEOF means it ended inside one. Any malformed
// input gives an error wrapping ErrBadFrame.
func (fr *FrameReader) ReadFrame() (RawFrame, error) {
	// Read the magic alone first: a 4-byte probe like "GET " must be
	// rejected at once, not after waiting for 28 more bytes that an HTTP
	// client will never send.
	if _, err := io.ReadFull(fr.r, fr.hdr[:4]); err != nil {
		return RawFrame{}, err
	}
	if m := binary.BigEndian.Uint32(fr.hdr[:4]); m != Magic {
		if !fr.started {
			return RawFrame{}, badFrame("bad magic %#08x (%s)", m, DescribeGarbage(fr.hdr[:4]))
		}
		return RawFrame{}, badFrame("bad magic %#08x", m)
	}
	fr.started = true
	if _, err := io.ReadFull(fr.r, fr.hdr[4:]); err != nil {
		return RawFrame{}, unexpectedEOF(err)
	}
	h, err := fr.parseHeader()
	if err != nil {
		return RawFrame{}, err
	}
	wire := make([]byte, h.WireLen)
	if _, err := io.ReadFull(fr.r, wire); err != nil {
		return RawFrame{}, unexpectedEOF(err)
	}
	if xxhash.Sum64(wire) != h.PayloadSum {
		return RawFrame{}, checksumErr("payload")
	}
	payload := wire
	if h.Flags&FlagCompressed != 0 {
		payload, err = decompress(h.Codec, wire, int(h.RawLen))
		if err != nil {
			return RawFrame{}, err
		}
	}
	return RawFrame{Header: h, Payload: payload}, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseHeader validates fr.hdr (magic already checked). The header checksum
// is verified before any other field is trusted.
func (fr *FrameReader) parseHeader() (Header, error) {
	b := fr.hdr[:]
	be := binary.BigEndian
	if xxhash.Sum64(b[:24]) != be.Uint64(b[24:]) {
		return Header{}, checksumErr("header")
	}
	h := Header{
		Version:    b[4],
		Type:       FrameType(b[5]),
		Flags:      b[6],
		Codec:      Codec(b[7]),
		WireLen:    be.Uint32(b[8:]),
		RawLen:     be.Uint32(b[12:]),
		PayloadSum: be.Uint64(b[16:]),
	}
	if h.Version != fr.opts.Version {
		return Header{}, badFrame("protocol version %d, want %d", h.Version, fr.opts.Version)
	}
	lo, hi, ok := payloadBounds(h.Type, fr.opts.MaxPayload)
	if !ok {
		return Header{}, badFrame("unknown frame type %d", uint8(h.Type))
	}
	if h.Flags&^FlagCompressed != 0 {
		return Header{}, badFrame("reserved flag bits %#02x set", h.Flags&^FlagCompressed)
	}
	max := uint64(fr.opts.MaxPayload)
	if uint64(h.WireLen) > max {
		return Header{}, tooLarge("payload length", uint64(h.WireLen), max)
	}
	if uint64(h.RawLen) > max {
		return Header{}, tooLarge("decompressed length", uint64(h.RawLen), max)
	}
	if h.Flags&FlagCompressed == 0 {
		if h.Codec != CodecNone {
			return Header{}, badFrame("codec %d set on an uncompressed frame", uint8(h.Codec))
		}
		if h.RawLen != h.WireLen {
			return Header{}, badFrame("raw length %d != wire length %d on an uncompressed frame", h.RawLen, h.WireLen)
		}
	} else {
		if int(h.Codec) >= len(fr.codecs) || !fr.codecs[h.Codec] {
			return Header{}, badFrame("compressed with codec %s, not negotiated", h.Codec)
		}
		// Senders compress only when it shrinks the payload.
		if h.WireLen >= h.RawLen {
			return Header{}, badFrame("compressed payload %d not smaller than raw %d", h.WireLen, h.RawLen)
		}
	}
	if int(h.RawLen) < lo || int(h.RawLen) > hi {
		return Header{}, badFrame("%s payload length %d outside [%d, %d]", h.Type, h.RawLen, lo, hi)
	}
	return h, nil
}

// EncodeOptions configure AppendFrame.
type EncodeOptions struct {
	// Version goes into the header (default Version1).
	Version uint8
	// Codec compresses payloads of at least CompressMin bytes, kept only
	// when the result saves at least 1/8. CodecNone never compresses.
	Codec       Codec
	CompressMin int
	// MaxPayload caps the encoded payload (default DefaultMaxPayload).
	MaxPayload int
	// Gate, when set, skips compression while payloads do not shrink.
	Gate *CompressGate
}

// AppendFrame validates f and appends its complete encoding (header and
// payload) to dst. saved is how many payload bytes compression saved.
func AppendFrame(dst []byte, f Frame, opts EncodeOptions) (out []byte, saved int, err error) {
	if err := f.validate(); err != nil {
		return dst, 0, err
	}
	if opts.Version == 0 {
		opts.Version = Version1
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	dst = f.appendPayload(dst)
	raw := dst[start+HeaderSize:]
	lo, hi, _ := payloadBounds(f.Type(), opts.MaxPayload)
	if len(raw) > hi || len(raw) < lo {
		return dst[:start], 0, tooLarge(f.Type().String()+" payload", uint64(len(raw)), uint64(hi))
	}
	h := Header{Version: opts.Version, Type: f.Type(), RawLen: uint32(len(raw)), WireLen: uint32(len(raw))}
	if opts.Codec != CodecNone && len(raw) >= opts.CompressMin && len(raw) > 0 && opts.Gate.try() {
		n := compressInPlace(opts.Codec, raw)
		opts.Gate.result(n > 0)
		if n > 0 {
			saved = len(raw) - n
			dst = dst[:start+HeaderSize+n]
			h.Flags |= FlagCompressed
			h.Codec = opts.Codec
			h.WireLen = uint32(n)
		}
	}
	h.PayloadSum = xxhash.Sum64(dst[start+HeaderSize:])
	h.put(dst[start : start+HeaderSize])
	return dst, saved, nil
}

// DescribeGarbage names what the first bytes of a non-twinblock stream
// look like, for the log line that explains why a connection was closed.
func DescribeGarbage(b []byte) string {
	if len(b) >= 3 && b[0] == 0x16 && b[1] == 0x03 {
		return "looks like a TLS ClientHello: peer uses TLS, this side is plain (Insecure)"
	}
	if len(b) >= 3 && (b[0] == 0x15 || b[0] == 0x17) && b[1] == 0x03 {
		return "looks like a TLS record: peer uses TLS, this side is plain (Insecure)"
	}
	for _, p := range []string{"GET ", "POST", "PUT ", "HEAD", "HTTP", "OPTI", "DELE", "PATC", "CONN", "PRI "} {
		if len(b) >= 4 && string(b[:4]) == p {
			return "looks like HTTP, not the twinblock peer protocol"
		}
	}
	if len(b) >= 4 && string(b[:4]) == "SSH-" {
		return "looks like SSH, not the twinblock peer protocol"
	}
	if len(b) >= 4 && binary.BigEndian.Uint32(b) == 0x4e42444d { // "NBDM"
		return "looks like NBD, not the twinblock peer protocol"
	}
	printable := true
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			printable = false
		}
	}
	if printable && utf8.Valid(b) {
		return fmt.Sprintf("text %q, not the twinblock peer protocol", b)
	}
	return "not the twinblock peer protocol"
}
