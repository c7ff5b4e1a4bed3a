package journal

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// On-disk format, version 1. docs/formats.md has the byte diagrams;
// this file is the single implementation of them. All integers are little
// endian.
const (
	formatVersion = 1

	// sectorSize is the record alignment. Records start on 512-byte
	// boundaries so that a torn write never leaves a later record's header
	// straddling a sector with an earlier record, while a 4 KiB payload
	// costs 4608 bytes on disk (12.5%) instead of 8192 with 4 KiB alignment.
	sectorSize = 512

	recordHeaderSize  = 64
	segmentHeaderSize = sectorSize // the segment header owns sector 0
	segHeaderUsed     = 48
	checkpointSize    = 24

	recordMagic     = 0x524a4254 // "TBJR"
	segmentMagic    = 0x534a4254 // "TBJS"
	checkpointMagic = 0x434a4254 // "TBJC"

	flagNoHole   = 1 << 0
	knownFlags   = flagNoHole
	maxSeq       = ^uint64(0) >> 1 // keeps seq+1 arithmetic far from overflow
	minSegmentSz = 4 * sectorSize
)

// Kind is the block operation a record carries.
type Kind uint8

const (
	// KindWrite stores Data at Offset (Length == len(Data)).
	KindWrite Kind = 1
	// KindTrim discards [Offset, Offset+Length).
	KindTrim Kind = 2
	// KindZero zeroes [Offset, Offset+Length); NoHole asks for allocated
	// zeroes (NBD_CMD_FLAG_NO_HOLE).
	KindZero Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindWrite:
		return "write"
	case KindTrim:
		return "trim"
	case KindZero:
		return "zero"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// recordHeader is the decoded 64-byte record header.
type recordHeader struct {
	kind          Kind
	flags         uint16
	seq           uint64
	segID         uint64
	syncedThrough uint64 // every seq <= this was durable when the record was encoded
	offset        uint64
	length        uint32
	payloadLen    uint32
	payloadSum    uint64
}

// recordSize is the on-disk size of a record with n payload bytes.
func recordSize(n int) int64 {
	return alignUp(int64(recordHeaderSize + n))
}

func alignUp(n int64) int64 { return (n + sectorSize - 1) &^ (sectorSize - 1) }

func (h *recordHeader) encode(b []byte) {
	_ = b[recordHeaderSize-1]
	binary.LittleEndian.PutUint32(b[0:], recordMagic)
	b[4] = formatVersion
	b[5] = byte(h.kind)
	binary.LittleEndian.PutUint16(b[6:], h.flags)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.segID)
	binary.LittleEndian.PutUint64(b[24:], h.syncedThrough)
	binary.LittleEndian.PutUint64(b[32:], h.offset)
	binary.LittleEndian.PutUint32(b[40:], h.length)
	binary.LittleEndian.PutUint32(b[44:], h.payloadLen)
	binary.LittleEndian.PutUint64(b[48:], h.payloadSum)
	binary.LittleEndian.PutUint64(b[56:], xxhash.Sum64(b[:56]))
}

// decodeRecordHeader checks magic, header checksum, version and the internal
// consistency of the fields. errNotRecord means "no header here" (zeroes or
// garbage); ErrChecksum means the magic is there but the header is damaged.
func decodeRecordHeader(b []byte) (recordHeader, error) {
	var h recordHeader
	if len(b) < recordHeaderSize {
		return h, errNotRecord
	}
	if binary.LittleEndian.Uint32(b[0:]) != recordMagic {
		return h, errNotRecord
	}
	if xxhash.Sum64(b[:56]) != binary.LittleEndian.Uint64(b[56:]) {
		return h, ErrChecksum
	}
	if b[4] != formatVersion {
		return h, fmt.Errorf("%w: record version %d", ErrVersion, b[4])
	}
	h = recordHeader{
		kind:          Kind(b[5]),
		flags:         binary.LittleEndian.Uint16(b[6:]),
		seq:           binary.LittleEndian.Uint64(b[8:]),
		segID:         binary.LittleEndian.Uint64(b[16:]),
		syncedThrough: binary.LittleEndian.Uint64(b[24:]),
		offset:        binary.LittleEndian.Uint64(b[32:]),
		length:        binary.LittleEndian.Uint32(b[40:]),
		payloadLen:    binary.LittleEndian.Uint32(b[44:]),
		payloadSum:    binary.LittleEndian.Uint64(b[48:]),
	}
	if err := h.validate(); err != nil {
		return recordHeader{}, err
	}
	return h, nil
}

// validate rejects headers that passed the checksum but cannot have been
// written by this code (a checksum collision or a bug); they count as
// corrupt, never as data.
func (h *recordHeader) validate() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrCorrupt, what) }
	if h.flags&^knownFlags != 0 {
		return bad("unknown flags")
	}
	if h.seq == 0 || h.seq > maxSeq || h.syncedThrough >= h.seq || h.segID == 0 {
		return bad("sequence fields out of range")
	}
	switch h.kind {
	case KindWrite:
		if h.payloadLen != h.length || h.length == 0 || h.flags != 0 {
			return bad("write length mismatch")
		}
	case KindTrim:
		if h.payloadLen != 0 || h.flags != 0 {
			return bad("trim with payload")
		}
	case KindZero:
		if h.payloadLen != 0 {
			return bad("zero with payload")
		}
	default:
		return bad("unknown kind")
	}
	return nil
}

// decodeRecord decodes a whole record from b (header then payload): the
// header, then the payload length against maxPayload before anything else
// looks at the payload, then the payload checksum. The returned payload
// aliases b.
func decodeRecord(b []byte, maxPayload int) (recordHeader, []byte, error) {
	h, err := decodeRecordHeader(b)
	if err != nil {
		return h, nil, err
	}
	if int64(h.payloadLen) > int64(maxPayload) {
		return h, nil, fmt.Errorf("%w: payload length %d over limit %d", ErrCorrupt, h.payloadLen, maxPayload)
	}
	end := recordHeaderSize + int(h.payloadLen)
	if len(b) < end {
		return h, nil, fmt.Errorf("%w: short record", ErrCorrupt)
	}
	p := b[recordHeaderSize:end]
	if xxhash.Sum64(p) != h.payloadSum {
		return h, nil, fmt.Errorf("%w: payload of seq %d", ErrChecksum, h.seq)
	}
	return h, p, nil
}

// segmentHeader is the decoded segment header (sector 0 of a segment file).
type segmentHeader struct {
	segID         uint64
	firstSeq      uint64
	syncedThrough uint64
	size          uint64
}

func (s *segmentHeader) encode(b []byte) {
	_ = b[segmentHeaderSize-1]
	clear(b[:segmentHeaderSize])
	binary.LittleEndian.PutUint32(b[0:], segmentMagic)
	b[4] = formatVersion
	binary.LittleEndian.PutUint64(b[8:], s.segID)
	binary.LittleEndian.PutUint64(b[16:], s.firstSeq)
	binary.LittleEndian.PutUint64(b[24:], s.syncedThrough)
	binary.LittleEndian.PutUint64(b[32:], s.size)
	binary.LittleEndian.PutUint64(b[40:], xxhash.Sum64(b[:40]))
}

func decodeSegmentHeader(b []byte) (segmentHeader, error) {
	var s segmentHeader
	if len(b) < segHeaderUsed || binary.LittleEndian.Uint32(b[0:]) != segmentMagic {
		return s, errNotRecord
	}
	if xxhash.Sum64(b[:40]) != binary.LittleEndian.Uint64(b[40:]) {
		return s, ErrChecksum
	}
	if b[4] != formatVersion {
		return s, fmt.Errorf("%w: segment version %d", ErrVersion, b[4])
	}
	s = segmentHeader{
		segID:         binary.LittleEndian.Uint64(b[8:]),
		firstSeq:      binary.LittleEndian.Uint64(b[16:]),
		syncedThrough: binary.LittleEndian.Uint64(b[24:]),
		size:          binary.LittleEndian.Uint64(b[32:]),
	}
	if s.segID == 0 || s.firstSeq == 0 || s.firstSeq > maxSeq || s.syncedThrough >= s.firstSeq {
		return segmentHeader{}, fmt.Errorf("%w: segment header fields out of range", ErrCorrupt)
	}
	return s, nil
}

func encodeCheckpoint(applied uint64) []byte {
	b := make([]byte, checkpointSize)
	binary.LittleEndian.PutUint32(b[0:], checkpointMagic)
	b[4] = formatVersion
	binary.LittleEndian.PutUint64(b[8:], applied)
	binary.LittleEndian.PutUint64(b[16:], xxhash.Sum64(b[:16]))
	return b
}

func decodeCheckpoint(b []byte) (uint64, error) {
	if len(b) < checkpointSize || binary.LittleEndian.Uint32(b[0:]) != checkpointMagic {
		return 0, fmt.Errorf("%w: checkpoint file has no header", ErrCorrupt)
	}
	if xxhash.Sum64(b[:16]) != binary.LittleEndian.Uint64(b[16:]) {
		return 0, fmt.Errorf("%w: checkpoint file", ErrChecksum)
	}
	if b[4] != formatVersion {
		return 0, fmt.Errorf("%w: checkpoint version %d", ErrVersion, b[4])
	}
	return binary.LittleEndian.Uint64(b[8:]), nil
}
