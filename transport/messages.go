package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"unicode/utf8"
)

// Frame is one typed message. The concrete types are the value types in
// this file (Hello, Record, Ack, ...); switch on them after Recv:
//
//	switch f := f.(type) {
//	case transport.Record: ...
//	case transport.Ack: ...
//	}
//
// The set is closed: new messages need a protocol version (or Control).
type Frame interface {
	Type() FrameType
	appendPayload(dst []byte) []byte
	validate() error
}

// DecodeFrame decodes a payload of type t. It never panics; malformed input
// gives an error wrapping ErrBadFrame. Byte slices in the result (Record.Data,
// ChunkData.Data, Control.Body) alias payload.
func DecodeFrame(t FrameType, payload []byte) (Frame, error) {
	switch t {
	case TypeHello:
		return DecodeHello(payload)
	case TypeHelloOK:
		return DecodeHelloOK(payload)
	case TypeRefuse:
		return DecodeRefuse(payload)
	case TypeGoodbye:
		return DecodeGoodbye(payload)
	case TypePing:
		return DecodePing(payload)
	case TypePong:
		return DecodePong(payload)
	case TypeRecord:
		return DecodeRecord(payload)
	case TypeAck:
		return DecodeAck(payload)
	case TypeHashRequest:
		return DecodeHashRequest(payload)
	case TypeHashList:
		return DecodeHashList(payload)
	case TypeChunkData:
		return DecodeChunkData(payload)
	case TypeControl:
		return DecodeControl(payload)
	}
	return nil, badFrame("unknown frame type %d", uint8(t))
}

// dec is a bounds-checked big-endian cursor; after the first short read
// every accessor returns zero and err stays set.
type dec struct {
	what string
	b    []byte
	err  error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = badFrame("%s: truncated", d.what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *dec) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *dec) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// str reads a u16-length-prefixed UTF-8 string of at most max bytes.
func (d *dec) str(field string, max int) string {
	n := int(d.u16())
	if d.err != nil {
		return ""
	}
	if n > max {
		d.err = badFrame("%s: %s length %d > %d", d.what, field, n, max)
		return ""
	}
	b := d.take(n)
	if d.err == nil && !utf8.Valid(b) {
		d.err = badFrame("%s: %s is not UTF-8", d.what, field)
	}
	return string(b)
}

// end reports a short read, or trailing bytes (every payload except Hello
// must be consumed exactly: extensions need a new protocol version).
func (d *dec) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = badFrame("%s: %d trailing bytes", d.what, len(d.b))
	}
	return d.err
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func checkText(what, field, s string, max int, nonEmpty bool) error {
	if nonEmpty && s == "" {
		return badFrame("%s: empty %s", what, field)
	}
	if len(s) > max {
		return badFrame("%s: %s length %d > %d", what, field, len(s), max)
	}
	if !utf8.ValidString(s) {
		return badFrame("%s: %s is not UTF-8", what, field)
	}
	return nil
}

// ---------------------------------------------------------------- Hello

// Role is a node's replication role.
type Role uint8

// Roles.
const (
	RolePrimary   Role = 1
	RoleSecondary Role = 2
)

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleSecondary:
		return "secondary"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Mode is the replication mode (when the secondary acknowledges).
type Mode uint8

// Modes.
const (
	ModeSync   Mode = 1 // ack when durable in the peer's journal (DRBD protocol C)
	ModeMemory Mode = 2 // ack on receipt (protocol B)
	ModeAsync  Mode = 3 // primary acks locally, lag bounded
)

func (m Mode) String() string {
	switch m {
	case ModeSync:
		return "sync"
	case ModeMemory:
		return "memory"
	case ModeAsync:
		return "async"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Limits on Hello fields.
const (
	MaxNameLen  = 255
	MaxHistory  = 32
	maxCodecs   = 8
	helloFixed0 = 2 + 2 + 1 + 1 + 16 + 8*6
	// helloFixedLen is the smallest valid Hello: fixed part, two empty
	// strings' lengths, zero codecs, zero history.
	helloFixedLen = helloFixed0 + 2 + 2 + 1 + 1
)

// Hello is the first frame each side sends: who it is and where its
// journal stands, so the engine can decide whether and how to sync.
// Transport fills MinVersion, MaxVersion and Codecs itself.
type Hello struct {
	MinVersion, MaxVersion uint16
	VolumeName             string
	VolumeUUID             [16]byte
	VolumeSize             uint64
	NodeID                 string
	Role                   Role
	Mode                   Mode
	// Generation is the current data generation identifier (random, new
	// whenever a node becomes primary); History holds earlier ones with
	// the last sequence number written under each, newest first, at most
	// MaxHistory.
	Generation uint64
	History    []GenEntry
	// Journal positions: FirstSeq is the oldest record still retained
	// (DurableSeq+1 when the journal is empty), DurableSeq the newest
	// durable one, AppliedSeq the newest applied to the backend.
	FirstSeq, DurableSeq, AppliedSeq uint64
	// Features is a bit set for future capabilities; v1 defines none and
	// ignores unknown bits.
	Features uint64
	// Codecs the sender can decompress, in its order of preference.
	Codecs []Codec
	// Flags describe the sender's copy (HelloInconsistent). Appended after
	// History on the wire: a decoder that predates them ignores them.
	Flags HelloFlags
	// SyncID names the block resync the sender's copy is part of (target:
	// the resync it is receiving; 0 when none), so a reconnecting primary
	// can resume it instead of starting over.
	SyncID uint64
}

// HelloFlags is a bit set describing the sender's copy.
type HelloFlags uint32

// HelloInconsistent: the sender's data is not a usable image of any
// generation (a resync target part-way through, a copy created over
// existing data, or one whose admin chose to discard its data). Its
// lineage must not be trusted: only a block resync brings it up to date.
const HelloInconsistent HelloFlags = 1

// GenEntry is one past data generation and the last journal sequence
// number written under it.
type GenEntry struct {
	Gen    uint64
	EndSeq uint64
}

// Type implements Frame.
func (Hello) Type() FrameType { return TypeHello }

func (h Hello) validate() error {
	const w = "hello"
	if err := checkText(w, "volume name", h.VolumeName, MaxNameLen, true); err != nil {
		return err
	}
	if err := checkText(w, "node id", h.NodeID, MaxNameLen, true); err != nil {
		return err
	}
	if h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return badFrame("%s: version range [%d, %d]", w, h.MinVersion, h.MaxVersion)
	}
	if h.Role != RolePrimary && h.Role != RoleSecondary {
		return badFrame("%s: unknown role %d", w, uint8(h.Role))
	}
	if h.Mode < ModeSync || h.Mode > ModeAsync {
		return badFrame("%s: unknown mode %d", w, uint8(h.Mode))
	}
	if h.AppliedSeq > h.DurableSeq {
		return badFrame("%s: applied seq %d > durable seq %d", w, h.AppliedSeq, h.DurableSeq)
	}
	if h.DurableSeq != math.MaxUint64 && h.FirstSeq > h.DurableSeq+1 {
		return badFrame("%s: first seq %d > durable seq %d + 1", w, h.FirstSeq, h.DurableSeq)
	}
	if len(h.History) > MaxHistory {
		return badFrame("%s: %d history entries > %d", w, len(h.History), MaxHistory)
	}
	if len(h.Codecs) > maxCodecs {
		return badFrame("%s: %d codecs > %d", w, len(h.Codecs), maxCodecs)
	}
	var seen [256]bool
	for _, c := range h.Codecs {
		if c == CodecNone || seen[c] {
			return badFrame("%s: codec list has %s twice or none", w, c)
		}
		seen[c] = true
	}
	return nil
}

func (h Hello) appendPayload(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint16(b, h.MinVersion)
	b = be.AppendUint16(b, h.MaxVersion)
	b = append(b, byte(h.Role), byte(h.Mode))
	b = append(b, h.VolumeUUID[:]...)
	for _, v := range []uint64{h.VolumeSize, h.Generation, h.FirstSeq, h.DurableSeq, h.AppliedSeq, h.Features} {
		b = be.AppendUint64(b, v)
	}
	b = appendStr(b, h.VolumeName)
	b = appendStr(b, h.NodeID)
	b = append(b, byte(len(h.Codecs)))
	for _, c := range h.Codecs {
		b = append(b, byte(c))
	}
	b = append(b, byte(len(h.History)))
	for _, g := range h.History {
		b = be.AppendUint64(b, g.Gen)
		b = be.AppendUint64(b, g.EndSeq)
	}
	b = be.AppendUint32(b, uint32(h.Flags))
	return be.AppendUint64(b, h.SyncID)
}

// DecodeHello decodes a Hello payload. Unlike every other payload, bytes
// after the known fields are ignored: a newer version may append fields and
// an older node must still read enough to negotiate a common version.
func DecodeHello(p []byte) (Hello, error) {
	d := dec{what: "hello", b: p}
	var h Hello
	h.MinVersion = d.u16()
	h.MaxVersion = d.u16()
	h.Role = Role(d.u8())
	h.Mode = Mode(d.u8())
	copy(h.VolumeUUID[:], d.take(16))
	h.VolumeSize = d.u64()
	h.Generation = d.u64()
	h.FirstSeq = d.u64()
	h.DurableSeq = d.u64()
	h.AppliedSeq = d.u64()
	h.Features = d.u64()
	h.VolumeName = d.str("volume name", MaxNameLen)
	h.NodeID = d.str("node id", MaxNameLen)
	if n := int(d.u8()); d.err == nil {
		if n > maxCodecs {
			return Hello{}, badFrame("hello: %d codecs > %d", n, maxCodecs)
		}
		for _, c := range d.take(n) {
			h.Codecs = append(h.Codecs, Codec(c))
		}
	}
	if n := int(d.u8()); d.err == nil {
		if n > MaxHistory {
			return Hello{}, badFrame("hello: %d history entries > %d", n, MaxHistory)
		}
		if d.take(0); d.err == nil && len(d.b) < 16*n {
			return Hello{}, badFrame("hello: truncated history")
		}
		for range n {
			h.History = append(h.History, GenEntry{Gen: d.u64(), EndSeq: d.u64()})
		}
	}
	// Flags and SyncID: present from twinblock's resync onwards; a Hello
	// without them (an older node) means "no flags, no resync".
	if d.err == nil && len(d.b) >= 12 {
		h.Flags = HelloFlags(d.u32())
		h.SyncID = d.u64()
	}
	if d.err != nil {
		return Hello{}, d.err
	}
	if err := h.validate(); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// ---------------------------------------------------------------- HelloOK

// HelloOK accepts the peer's Hello and states the agreed version and
// compression codec, which both sides compute the same way.
type HelloOK struct {
	Version uint16
	Codec   Codec
}

// Type implements Frame.
func (HelloOK) Type() FrameType { return TypeHelloOK }

func (h HelloOK) validate() error {
	if h.Version == 0 {
		return badFrame("helloOK: version 0")
	}
	if h.Codec != CodecNone && !h.Codec.known() {
		return badFrame("helloOK: unknown codec %d", uint8(h.Codec))
	}
	return nil
}

func (h HelloOK) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, h.Version)
	return append(b, byte(h.Codec))
}

// DecodeHelloOK decodes a HelloOK payload.
func DecodeHelloOK(p []byte) (HelloOK, error) {
	d := dec{what: "helloOK", b: p}
	h := HelloOK{Version: d.u16(), Codec: Codec(d.u8())}
	if err := d.end(); err != nil {
		return HelloOK{}, err
	}
	if err := h.validate(); err != nil {
		return HelloOK{}, err
	}
	return h, nil
}

// ---------------------------------------------------------------- Refuse, Goodbye

// Refuse rejects the peer's Hello; the sender closes the connection after it.
type Refuse struct {
	Reason Reason
	Text   string
}

// Type implements Frame.
func (Refuse) Type() FrameType { return TypeRefuse }

func (r Refuse) validate() error { return checkText("refuse", "text", r.Text, MaxText, false) }

func (r Refuse) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(r.Reason))
	return appendStr(b, r.Text)
}

// DecodeRefuse decodes a Refuse payload.
func DecodeRefuse(p []byte) (Refuse, error) {
	d := dec{what: "refuse", b: p}
	r := Refuse{Reason: Reason(d.u16()), Text: d.str("text", MaxText)}
	if err := d.end(); err != nil {
		return Refuse{}, err
	}
	return r, nil
}

// Goodbye announces an orderly close; the peer's Recv then returns a
// *GoodbyeError instead of ErrConnLost.
type Goodbye struct {
	Reason Reason
	Text   string
}

// Type implements Frame.
func (Goodbye) Type() FrameType { return TypeGoodbye }

func (g Goodbye) validate() error { return checkText("goodbye", "text", g.Text, MaxText, false) }

func (g Goodbye) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(g.Reason))
	return appendStr(b, g.Text)
}

// DecodeGoodbye decodes a Goodbye payload.
func DecodeGoodbye(p []byte) (Goodbye, error) {
	d := dec{what: "goodbye", b: p}
	g := Goodbye{Reason: Reason(d.u16()), Text: d.str("text", MaxText)}
	if err := d.end(); err != nil {
		return Goodbye{}, err
	}
	return g, nil
}

// ---------------------------------------------------------------- Ping, Pong

// Ping is a heartbeat; Conn sends them and answers them itself, they never
// come out of Recv.
type Ping struct {
	Nonce    uint64
	SentNano int64 // sender's clock, for logs; RTT uses the monotonic clock
}

// Pong echoes a Ping.
type Pong Ping

// Type implements Frame.
func (Ping) Type() FrameType { return TypePing }

// Type implements Frame.
func (Pong) Type() FrameType { return TypePong }

func (Ping) validate() error { return nil }
func (Pong) validate() error { return nil }

func appendPing(b []byte, nonce uint64, sent int64) []byte {
	b = binary.BigEndian.AppendUint64(b, nonce)
	return binary.BigEndian.AppendUint64(b, uint64(sent))
}

func (p Ping) appendPayload(b []byte) []byte { return appendPing(b, p.Nonce, p.SentNano) }
func (p Pong) appendPayload(b []byte) []byte { return appendPing(b, p.Nonce, p.SentNano) }

// DecodePing decodes a Ping payload.
func DecodePing(p []byte) (Ping, error) {
	d := dec{what: "ping", b: p}
	v := Ping{Nonce: d.u64(), SentNano: int64(d.u64())}
	if err := d.end(); err != nil {
		return Ping{}, err
	}
	return v, nil
}

// DecodePong decodes a Pong payload.
func DecodePong(p []byte) (Pong, error) {
	d := dec{what: "pong", b: p}
	v := Pong{Nonce: d.u64(), SentNano: int64(d.u64())}
	if err := d.end(); err != nil {
		return Pong{}, err
	}
	return v, nil
}

// ---------------------------------------------------------------- Record

// RecordKind says what a replicated journal record does.
type RecordKind uint8

// Record kinds.
const (
	KindWrite RecordKind = 1 // Data holds Length bytes
	KindTrim  RecordKind = 2 // range reads as zeroes afterwards, may deallocate
	KindZero  RecordKind = 3 // write zeroes; RecordNoHole keeps it allocated
)

func (k RecordKind) String() string {
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

// RecordNoHole (KindZero only): keep the zeroed range allocated.
const RecordNoHole uint8 = 1 << 0

const recordHeaderLen = 8 + 1 + 1 + 2 + 4 + 8

// Record is one replicated write, trim or write-zeroes with its journal
// sequence number. Seq starts at 1; 0 means "none" in Ack and Hello.
type Record struct {
	Seq    uint64
	Kind   RecordKind
	Flags  uint8
	Offset uint64
	Length uint32
	Data   []byte // KindWrite: exactly Length bytes; otherwise empty
}

// Type implements Frame.
func (Record) Type() FrameType { return TypeRecord }

func (r Record) validate() error {
	const w = "record"
	if r.Seq == 0 {
		return badFrame("%s: seq 0", w)
	}
	if r.Length == 0 {
		return badFrame("%s %d: zero length", w, r.Seq)
	}
	if r.Offset > math.MaxUint64-uint64(r.Length) {
		return badFrame("%s %d: offset %d + length %d overflows", w, r.Seq, r.Offset, r.Length)
	}
	switch r.Kind {
	case KindWrite:
		if len(r.Data) != int(r.Length) {
			return badFrame("%s %d: write of %d bytes carries %d", w, r.Seq, r.Length, len(r.Data))
		}
	case KindTrim, KindZero:
		if len(r.Data) != 0 {
			return badFrame("%s %d: %s carries %d data bytes", w, r.Seq, r.Kind, len(r.Data))
		}
	default:
		return badFrame("%s %d: unknown kind %d", w, r.Seq, uint8(r.Kind))
	}
	if r.Flags&^RecordNoHole != 0 {
		return badFrame("%s %d: reserved flag bits %#02x", w, r.Seq, r.Flags)
	}
	if r.Flags&RecordNoHole != 0 && r.Kind != KindZero {
		return badFrame("%s %d: no-hole flag on a %s", w, r.Seq, r.Kind)
	}
	return nil
}

func (r Record) appendPayload(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint64(b, r.Seq)
	b = append(b, byte(r.Kind), r.Flags, 0, 0)
	b = be.AppendUint32(b, r.Length)
	b = be.AppendUint64(b, r.Offset)
	return append(b, r.Data...)
}

// DecodeRecord decodes a Record payload; Data aliases p.
func DecodeRecord(p []byte) (Record, error) {
	d := dec{what: "record", b: p}
	var r Record
	r.Seq = d.u64()
	r.Kind = RecordKind(d.u8())
	r.Flags = d.u8()
	if res := d.u16(); res != 0 {
		return Record{}, badFrame("record: reserved bytes %#04x", res)
	}
	r.Length = d.u32()
	r.Offset = d.u64()
	if d.err != nil {
		return Record{}, d.err
	}
	if len(d.b) > 0 {
		r.Data = d.b
	}
	if err := r.validate(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// ---------------------------------------------------------------- Ack

// Ack is cumulative: every record with seq <= ReceivedSeq has arrived and
// every record with seq <= DurableSeq is durable in the sender's journal.
type Ack struct {
	ReceivedSeq uint64
	DurableSeq  uint64
}

// Type implements Frame.
func (Ack) Type() FrameType { return TypeAck }

func (a Ack) validate() error {
	if a.DurableSeq > a.ReceivedSeq {
		return badFrame("ack: durable seq %d > received seq %d", a.DurableSeq, a.ReceivedSeq)
	}
	return nil
}

func (a Ack) appendPayload(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, a.ReceivedSeq)
	return binary.BigEndian.AppendUint64(b, a.DurableSeq)
}

// DecodeAck decodes an Ack payload.
func DecodeAck(p []byte) (Ack, error) {
	d := dec{what: "ack", b: p}
	a := Ack{ReceivedSeq: d.u64(), DurableSeq: d.u64()}
	if err := d.end(); err != nil {
		return Ack{}, err
	}
	if err := a.validate(); err != nil {
		return Ack{}, err
	}
	return a, nil
}

// ---------------------------------------------------------------- resync / verify

// MaxHashCount caps HashRequest.Count (and so a HashList's length).
const MaxHashCount = 1 << 20

func checkRange(what string, off uint64, chunk, count uint32) error {
	if chunk == 0 || count == 0 {
		return badFrame("%s: chunk size %d, count %d", what, chunk, count)
	}
	if count > MaxHashCount {
		return tooLarge(what+" count", uint64(count), MaxHashCount)
	}
	span := uint64(chunk) * uint64(count) // < 2^52, cannot overflow
	if off > math.MaxUint64-span {
		return badFrame("%s: offset %d + %d bytes overflows", what, off, span)
	}
	return nil
}

// HashRequest asks the peer for xxhash64 hashes of Count chunks of
// ChunkSize bytes starting at Offset (the last chunk may be cut by the end
// of the volume). ID matches the reply.
type HashRequest struct {
	ID        uint64
	Offset    uint64
	ChunkSize uint32
	Count     uint32
}

// Type implements Frame.
func (HashRequest) Type() FrameType { return TypeHashRequest }

func (h HashRequest) validate() error {
	return checkRange("hash request", h.Offset, h.ChunkSize, h.Count)
}

func (h HashRequest) appendPayload(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint64(b, h.ID)
	b = be.AppendUint64(b, h.Offset)
	b = be.AppendUint32(b, h.ChunkSize)
	return be.AppendUint32(b, h.Count)
}

// DecodeHashRequest decodes a HashRequest payload.
func DecodeHashRequest(p []byte) (HashRequest, error) {
	d := dec{what: "hash request", b: p}
	h := HashRequest{ID: d.u64(), Offset: d.u64(), ChunkSize: d.u32(), Count: d.u32()}
	if err := d.end(); err != nil {
		return HashRequest{}, err
	}
	if err := h.validate(); err != nil {
		return HashRequest{}, err
	}
	return h, nil
}

// HashList answers a HashRequest: Hashes[i] covers the chunk at
// Offset + i*ChunkSize.
type HashList struct {
	ID        uint64
	Offset    uint64
	ChunkSize uint32
	Hashes    []uint64
}

// Type implements Frame.
func (HashList) Type() FrameType { return TypeHashList }

func (h HashList) validate() error {
	return checkRange("hash list", h.Offset, h.ChunkSize, uint32(min(len(h.Hashes), math.MaxUint32)))
}

func (h HashList) appendPayload(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint64(b, h.ID)
	b = be.AppendUint64(b, h.Offset)
	b = be.AppendUint32(b, h.ChunkSize)
	b = be.AppendUint32(b, uint32(len(h.Hashes)))
	for _, v := range h.Hashes {
		b = be.AppendUint64(b, v)
	}
	return b
}

// DecodeHashList decodes a HashList payload.
func DecodeHashList(p []byte) (HashList, error) {
	d := dec{what: "hash list", b: p}
	h := HashList{ID: d.u64(), Offset: d.u64(), ChunkSize: d.u32()}
	n := d.u32()
	if d.err != nil {
		return HashList{}, d.err
	}
	if err := checkRange("hash list", h.Offset, h.ChunkSize, n); err != nil {
		return HashList{}, err
	}
	if uint64(len(d.b)) != 8*uint64(n) {
		return HashList{}, badFrame("hash list: %d hashes in %d bytes", n, len(d.b))
	}
	h.Hashes = make([]uint64, n)
	for i := range h.Hashes {
		h.Hashes[i] = d.u64()
	}
	return h, d.end()
}

// ChunkData carries Length bytes of volume data at Offset (resync, or the
// answer to a fetch). ID ties it to a request when the engine needs that.
type ChunkData struct {
	ID     uint64
	Offset uint64
	Length uint32
	Data   []byte
}

// Type implements Frame.
func (ChunkData) Type() FrameType { return TypeChunkData }

func (c ChunkData) validate() error {
	if c.Length == 0 || len(c.Data) != int(c.Length) {
		return badFrame("chunk data: length %d with %d data bytes", c.Length, len(c.Data))
	}
	if c.Offset > math.MaxUint64-uint64(c.Length) {
		return badFrame("chunk data: offset %d + length %d overflows", c.Offset, c.Length)
	}
	return nil
}

func (c ChunkData) appendPayload(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint64(b, c.ID)
	b = be.AppendUint64(b, c.Offset)
	b = be.AppendUint32(b, c.Length)
	b = be.AppendUint32(b, 0) // reserved
	return append(b, c.Data...)
}

// DecodeChunkData decodes a ChunkData payload; Data aliases p.
func DecodeChunkData(p []byte) (ChunkData, error) {
	d := dec{what: "chunk data", b: p}
	c := ChunkData{ID: d.u64(), Offset: d.u64(), Length: d.u32()}
	if res := d.u32(); res != 0 {
		return ChunkData{}, badFrame("chunk data: reserved bytes %#08x", res)
	}
	if d.err != nil {
		return ChunkData{}, d.err
	}
	c.Data = d.b
	if err := c.validate(); err != nil {
		return ChunkData{}, err
	}
	return c, nil
}

// ---------------------------------------------------------------- Control

// Control carries rare admin messages (role change, generation update,
// resync start/end) as JSON, so adding one needs no new frame type. Kind
// names the message; Body is its JSON value (may be empty).
type Control struct {
	Kind string
	Body json.RawMessage
}

// Type implements Frame.
func (Control) Type() FrameType { return TypeControl }

type controlWire struct {
	Kind string          `json:"kind"`
	Body json.RawMessage `json:"body,omitempty"`
}

func (c Control) validate() error {
	if err := checkText("control", "kind", c.Kind, MaxNameLen, true); err != nil {
		return err
	}
	if len(c.Body) > 0 && !json.Valid(c.Body) {
		return badFrame("control %q: body is not valid JSON", c.Kind)
	}
	return nil
}

func (c Control) appendPayload(b []byte) []byte {
	// validate ran first, so Marshal cannot fail on the body; compact
	// whitespace so equal messages encode equally.
	body := c.Body
	if len(body) > 0 {
		var buf bytes.Buffer
		if json.Compact(&buf, body) == nil {
			body = buf.Bytes()
		}
	}
	out, err := json.Marshal(controlWire{Kind: c.Kind, Body: body})
	if err != nil {
		return append(b, `{"kind":""}`...) // unreachable after validate; decoder rejects it
	}
	return append(b, out...)
}

// DecodeControl decodes a Control payload: a JSON object with a non-empty
// "kind" string and an optional "body"; any other key is rejected.
func DecodeControl(p []byte) (Control, error) {
	dj := json.NewDecoder(bytes.NewReader(p))
	dj.DisallowUnknownFields()
	var w controlWire
	if err := dj.Decode(&w); err != nil {
		return Control{}, badFrame("control: %v", err)
	}
	// A second Decode must hit EOF: "{...} x" is garbage, not a message.
	var extra json.RawMessage
	if err := dj.Decode(&extra); err != io.EOF {
		return Control{}, badFrame("control: trailing data after JSON object")
	}
	c := Control{Kind: w.Kind, Body: w.Body}
	if string(c.Body) == "null" {
		c.Body = nil
	}
	if err := c.validate(); err != nil {
		return Control{}, err
	}
	return c, nil
}
