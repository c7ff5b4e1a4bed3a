package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Wire constants. Where go-nbd's protocol package names a value we take it
// from there; the rest (which go-nbd does not know) follow doc/proto.md of
// the NBD project. Encoding is done by hand with encoding/binary's BigEndian
// helpers rather than binary.Read/Write of go-nbd's structs: those reflect
// and allocate on every call, and the request path must not.

const (
	nbdMagic             = protocol.NEGOTIATION_MAGIC_OLDSTYLE // "NBDMAGIC"
	optMagic             = protocol.NEGOTIATION_MAGIC_OPTION   // "IHAVEOPT"
	optReplyMagic        = protocol.NEGOTIATION_MAGIC_REPLY
	requestMagic         = protocol.TRANSMISSION_MAGIC_REQUEST
	simpleReplyMagic     = protocol.TRANSMISSION_MAGIC_REPLY
	structuredReplyMagic = uint32(0x668e33ef)
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	flagNoZeroes      = uint16(1 << 1)

	clientFlagFixedNewstyle = uint32(1 << 0)
	clientFlagNoZeroes      = uint32(1 << 1)
)

// Options (client -> server during haggling).
const (
	optExportName      = uint32(1)
	optAbort           = protocol.NEGOTIATION_ID_OPTION_ABORT
	optList            = protocol.NEGOTIATION_ID_OPTION_LIST
	optStartTLS        = uint32(5)
	optInfo            = protocol.NEGOTIATION_ID_OPTION_INFO
	optGo              = protocol.NEGOTIATION_ID_OPTION_GO
	optStructuredReply = uint32(8)
	optListMetaContext = uint32(9)
	optSetMetaContext  = uint32(10)
	optExtendedHeaders = uint32(11)
)

// Option reply types. The error replies are exported because OptionError
// carries them to callers of the client.
const (
	repAck    = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repServer = protocol.NEGOTIATION_TYPE_REPLY_SERVER
	repInfo   = protocol.NEGOTIATION_TYPE_REPLY_INFO

	RepErrUnsupported   = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED // NBD_REP_ERR_UNSUP
	RepErrPolicy        = uint32(1<<31 + 2)
	RepErrInvalid       = uint32(1<<31 + 3)
	RepErrPlatform      = uint32(1<<31 + 4)
	RepErrTLSRequired   = uint32(1<<31 + 5)
	RepErrUnknown       = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN // unknown export
	RepErrShutdown      = uint32(1<<31 + 7)
	RepErrBlockSizeReqd = uint32(1<<31 + 8)
	RepErrTooBig        = uint32(1<<31 + 9)
)

// Information types in NBD_REP_INFO replies to NBD_OPT_INFO / NBD_OPT_GO.
const (
	infoExport      = protocol.NEGOTIATION_TYPE_INFO_EXPORT
	infoName        = protocol.NEGOTIATION_TYPE_INFO_NAME
	infoDescription = protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION
	infoBlockSize   = protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE
)

// Transmission flags, sent once per connection after negotiation.
const (
	FlagHasFlags           = protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS
	FlagReadOnly           = uint16(1 << 1)
	FlagSendFlush          = uint16(1 << 2)
	FlagSendFUA            = uint16(1 << 3)
	FlagRotational         = uint16(1 << 4)
	FlagSendTrim           = uint16(1 << 5)
	FlagSendWriteZeroes    = uint16(1 << 6)
	FlagSendDF             = uint16(1 << 7)
	FlagCanMultiConn       = protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN
	FlagSendResize         = uint16(1 << 9)
	FlagSendCache          = uint16(1 << 10)
	FlagSendFastZero       = uint16(1 << 11)
	FlagBlockStatusPayload = uint16(1 << 12)
)

// Command types.
const (
	CmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	CmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	CmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	CmdFlush       = uint16(3)
	CmdTrim        = uint16(4)
	CmdCache       = uint16(5)
	CmdWriteZeroes = uint16(6)
	CmdBlockStatus = uint16(7)
	CmdResize      = uint16(8)
)

// Command flags.
const (
	CmdFlagFUA        = uint16(1 << 0)
	CmdFlagNoHole     = uint16(1 << 1)
	CmdFlagDF         = uint16(1 << 2)
	CmdFlagReqOne     = uint16(1 << 3)
	CmdFlagFastZero   = uint16(1 << 4)
	CmdFlagPayloadLen = uint16(1 << 5)
)

// Error codes carried in simple replies (the NBD values, which happen to be
// Linux errno values).
const (
	CodeOK           = uint32(0)
	CodePerm         = protocol.TRANSMISSION_ERROR_EPERM
	CodeIO           = uint32(5)
	CodeNoMem        = uint32(12)
	CodeInvalid      = protocol.TRANSMISSION_ERROR_EINVAL
	CodeNoSpace      = uint32(28)
	CodeOverflow     = uint32(75)
	CodeNotSupported = uint32(95)
	CodeShutdown     = uint32(108)
)

// Sizes and limits.
const (
	requestHeaderSize = 28
	replyHeaderSize   = 16
	optionHeaderSize  = 16

	// maxOptionLength caps the data of one option before anything is
	// allocated for it. The largest legitimate option is NBD_OPT_GO with a
	// 4096-byte name and a handful of info requests.
	maxOptionLength = 64 << 10
	// maxStringLength is proto.md's hard limit for names and messages.
	maxStringLength = 4096

	// DefaultMaxBlockSize is the largest READ/WRITE payload the server
	// accepts unless ServerOptions says otherwise: 32 MiB, the size
	// proto.md says no peer should treat as a denial of service.
	DefaultMaxBlockSize = 32 << 20
	// PreferredBlockSize is what the server advertises as preferred.
	PreferredBlockSize = 4096
	// MinBlockSize is the advertised minimum: any byte range works.
	MinBlockSize = 1
)

// requestHeader is a decoded transmission request header.
type requestHeader struct {
	magic  uint32
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// decodeRequestHeader parses the fixed 28-byte request header. b must be at
// least requestHeaderSize long; the magic is returned, not checked.
func decodeRequestHeader(b []byte) requestHeader {
	_ = b[requestHeaderSize-1]
	return requestHeader{
		magic:  binary.BigEndian.Uint32(b[0:]),
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}
}

func encodeRequestHeader(b []byte, h requestHeader) {
	_ = b[requestHeaderSize-1]
	binary.BigEndian.PutUint32(b[0:], h.magic)
	binary.BigEndian.PutUint16(b[4:], h.flags)
	binary.BigEndian.PutUint16(b[6:], h.typ)
	binary.BigEndian.PutUint64(b[8:], h.handle)
	binary.BigEndian.PutUint64(b[16:], h.offset)
	binary.BigEndian.PutUint32(b[24:], h.length)
}

func encodeSimpleReply(b []byte, code uint32, handle uint64) {
	_ = b[replyHeaderSize-1]
	binary.BigEndian.PutUint32(b[0:], simpleReplyMagic)
	binary.BigEndian.PutUint32(b[4:], code)
	binary.BigEndian.PutUint64(b[8:], handle)
}

// errParse is returned by the pure decoders below for malformed input.
var errParse = errors.New("nbd: malformed message")

// infoRequest is the decoded data of NBD_OPT_INFO / NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// decodeInfoRequest parses the data of NBD_OPT_INFO / NBD_OPT_GO:
// 32-bit name length, name, 16-bit count, count 16-bit info types. The
// lengths must add up exactly; the caller has already capped len(data).
func decodeInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Errorf("%w: option data of %d bytes is too short", errParse, len(data))
	}
	nameLen := binary.BigEndian.Uint32(data)
	if nameLen > maxStringLength || uint64(nameLen)+6 > uint64(len(data)) {
		return infoRequest{}, fmt.Errorf("%w: export name length %d does not fit", errParse, nameLen)
	}
	rest := data[4+nameLen:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d info requests announced, %d bytes follow", errParse, n, len(rest))
	}
	req := infoRequest{name: string(data[4 : 4+nameLen])}
	if n > 0 {
		req.infos = make([]uint16, n)
		for i := range req.infos {
			req.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
		}
	}
	return req, nil
}

// exportInfo is what NBD_REP_INFO replies tell a client about an export.
type exportInfo struct {
	size        uint64
	flags       uint16
	haveExport  bool
	name        string
	description string
	blockSizes  BlockSizes
}

// decodeInfoReply applies one NBD_REP_INFO payload to info. Unknown info
// types are ignored, as proto.md requires of clients.
func decodeInfoReply(data []byte, info *exportInfo) error {
	if len(data) < 2 {
		return fmt.Errorf("%w: info reply of %d bytes", errParse, len(data))
	}
	typ := binary.BigEndian.Uint16(data)
	body := data[2:]
	switch typ {
	case infoExport:
		if len(body) != 10 {
			return fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes", errParse, len(body))
		}
		info.size = binary.BigEndian.Uint64(body)
		info.flags = binary.BigEndian.Uint16(body[8:])
		info.haveExport = true
	case infoName:
		if len(body) > maxStringLength {
			return fmt.Errorf("%w: NBD_INFO_NAME of %d bytes", errParse, len(body))
		}
		info.name = string(body)
	case infoDescription:
		if len(body) > maxStringLength {
			return fmt.Errorf("%w: NBD_INFO_DESCRIPTION of %d bytes", errParse, len(body))
		}
		info.description = string(body)
	case infoBlockSize:
		if len(body) != 12 {
			return fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes", errParse, len(body))
		}
		info.blockSizes = BlockSizes{
			Minimum:   binary.BigEndian.Uint32(body),
			Preferred: binary.BigEndian.Uint32(body[4:]),
			Maximum:   binary.BigEndian.Uint32(body[8:]),
		}
	}
	return nil
}

// BlockSizes are the block size constraints an export advertises.
type BlockSizes struct {
	Minimum   uint32
	Preferred uint32
	Maximum   uint32
}

// errorCode maps a Device error to the NBD error code of its reply.
func errorCode(err error) uint32 {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, ErrInvalid):
		return CodeInvalid
	case errors.Is(err, ErrNoSpace):
		return CodeNoSpace
	case errors.Is(err, ErrPerm):
		return CodePerm
	case errors.Is(err, ErrNotSupported):
		return CodeNotSupported
	case errors.Is(err, ErrShutdown):
		return CodeShutdown
	default:
		return CodeIO
	}
}

// Error is an NBD error reply received by the Client. errors.Is maps the
// code to this package's sentinels (EINVAL is ErrInvalid, and so on), so a
// caller can test the kind of failure without knowing the numbers.
type Error struct {
	Code uint32
}

func (e *Error) Error() string {
	name := codeName(e.Code)
	return fmt.Sprintf("nbd: server replied %s (%d)", name, e.Code)
}

// Is reports whether the code corresponds to target, one of the sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Code == CodeInvalid
	case ErrNoSpace:
		return e.Code == CodeNoSpace
	case ErrPerm:
		return e.Code == CodePerm
	case ErrNotSupported:
		return e.Code == CodeNotSupported
	case ErrShutdown:
		return e.Code == CodeShutdown
	}
	return false
}

func codeName(code uint32) string {
	switch code {
	case CodeOK:
		return "OK"
	case CodePerm:
		return "EPERM"
	case CodeIO:
		return "EIO"
	case CodeNoMem:
		return "ENOMEM"
	case CodeInvalid:
		return "EINVAL"
	case CodeNoSpace:
		return "ENOSPC"
	case CodeOverflow:
		return "EOVERFLOW"
	case CodeNotSupported:
		return "ENOTSUP"
	case CodeShutdown:
		return "ESHUTDOWN"
	}
	return "unknown error"
}

// OptionError is a negative reply to an option during the handshake.
type OptionError struct {
	Option  uint32
	Reply   uint32 // one of the RepErr* values
	Message string // the server's human-readable text, if any
}

func (e *OptionError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("nbd: option %d refused with reply %#x: %s", e.Option, e.Reply, e.Message)
	}
	return fmt.Sprintf("nbd: option %d refused with reply %#x", e.Option, e.Reply)
}
