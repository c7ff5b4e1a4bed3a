package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

func sampleFrames() []Frame {
	data := bytes.Repeat([]byte("twinblock replicates blocks "), 300)
	h := testHello("a", RolePrimary)
	h.MinVersion, h.MaxVersion, h.Codecs = 1, 1, []Codec{CodecS2, CodecZstd}
	return []Frame{
		h,
		HelloOK{Version: 1, Codec: CodecS2},
		Refuse{Reason: ReasonVolumeUUID, Text: "local x, peer y"},
		Goodbye{Reason: ReasonShutdown, Text: "bye"},
		Ping{Nonce: 7, SentNano: 1234567},
		Pong{Nonce: 7, SentNano: 1234567},
		Record{Seq: 1, Kind: KindWrite, Offset: 4096, Length: uint32(len(data)), Data: data},
		Record{Seq: 2, Kind: KindTrim, Offset: 1 << 20, Length: 1 << 16},
		Record{Seq: 3, Kind: KindZero, Flags: RecordNoHole, Offset: 0, Length: 512},
		Ack{ReceivedSeq: 10, DurableSeq: 9},
		HashRequest{ID: 1, Offset: 0, ChunkSize: 64 << 10, Count: 16},
		HashList{ID: 1, Offset: 0, ChunkSize: 64 << 10, Hashes: []uint64{1, 2, 3, math.MaxUint64}},
		ChunkData{ID: 2, Offset: 64 << 10, Length: uint32(len(data)), Data: data},
		Control{Kind: "role-change", Body: json.RawMessage(`{"role":"primary","generation":17}`)},
		Control{Kind: "ping-admin"},
	}
}

func TestFrameRoundTripEveryType(t *testing.T) {
	seen := map[FrameType]bool{}
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		for _, f := range sampleFrames() {
			seen[f.Type()] = true
			b, saved, err := AppendFrame(nil, f, EncodeOptions{Codec: codec, CompressMin: 64})
			if err != nil {
				t.Fatalf("%s/%s: encode: %v", codec, f.Type(), err)
			}
			fr := NewFrameReader(bytes.NewReader(b), ReaderOptions{Codecs: []Codec{CodecS2, CodecZstd}})
			raw, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s/%s: read: %v", codec, f.Type(), err)
			}
			if compressed := raw.Header.Flags&FlagCompressed != 0; compressed != (saved > 0) {
				t.Fatalf("%s/%s: compressed flag %v, saved %d", codec, f.Type(), compressed, saved)
			}
			got, err := raw.Decode()
			if err != nil {
				t.Fatalf("%s/%s: decode: %v", codec, f.Type(), err)
			}
			if !reflect.DeepEqual(got, f) {
				t.Fatalf("%s/%s: round trip\n got %#v\nwant %#v", codec, f.Type(), got, f)
			}
			if _, err := fr.ReadFrame(); err != io.EOF {
				t.Fatalf("%s/%s: after the frame: %v, want io.EOF", codec, f.Type(), err)
			}
		}
	}
	for t2 := range typeNames {
		if !seen[t2] {
			t.Errorf("no round-trip sample for %s", t2)
		}
	}
}

func encodeOrDie(t testing.TB, f Frame, o EncodeOptions) []byte {
	t.Helper()
	b, _, err := AppendFrame(nil, f, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readOne(b []byte, o ReaderOptions) (RawFrame, error) {
	return NewFrameReader(bytes.NewReader(b), o).ReadFrame()
}

func TestCorruptHeaderAndPayloadChecksum(t *testing.T) {
	good := encodeOrDie(t, Record{Seq: 9, Kind: KindWrite, Offset: 0, Length: 100, Data: make([]byte, 100)}, EncodeOptions{})
	if _, err := readOne(good, ReaderOptions{}); err != nil {
		t.Fatal(err)
	}
	// Every header byte after the magic is covered by the header checksum
	// (the magic has its own check).
	for i := 4; i < HeaderSize; i++ {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		_, err := readOne(b, ReaderOptions{})
		if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrBadFrame) {
			t.Fatalf("header byte %d flipped: %v, want checksum error", i, err)
		}
	}
	for _, i := range []int{HeaderSize, HeaderSize + 10, len(good) - 1} {
		b := bytes.Clone(good)
		b[i] ^= 1
		_, err := readOne(b, ReaderOptions{})
		if !errors.Is(err, ErrChecksum) {
			t.Fatalf("payload byte %d flipped: %v, want checksum error", i, err)
		}
	}
	b := bytes.Clone(good)
	b[0] = 'X'
	if _, err := readOne(b, ReaderOptions{}); !errors.Is(err, ErrBadFrame) || errors.Is(err, ErrChecksum) {
		t.Fatalf("bad magic: %v", err)
	}
}

// forgeHeader builds a header with a valid checksum, for lies the checksum
// cannot catch.
func forgeHeader(h Header) []byte {
	b := make([]byte, HeaderSize)
	h.put(b)
	return b
}

func TestOversizeLengthRejectedBeforeAllocation(t *testing.T) {
	cases := []Header{
		{Version: 1, Type: TypeRecord, WireLen: 1 << 31, RawLen: 1 << 31},
		{Version: 1, Type: TypeRecord, Flags: FlagCompressed, Codec: CodecS2, WireLen: 100, RawLen: math.MaxUint32},
		{Version: 1, Type: TypeChunkData, WireLen: 2 << 20, RawLen: 2 << 20},
	}
	for _, h := range cases {
		b := forgeHeader(h)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := readOne(b, ReaderOptions{MaxPayload: 1 << 20, Codecs: []Codec{CodecS2}})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrBadFrame) {
			t.Fatalf("%+v: %v, want ErrTooLarge", h, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<10 {
			t.Fatalf("%+v: allocated %d bytes before rejecting", h, grew)
		}
	}
	// A per-type bound: a Ping is exactly 16 bytes, a huge one is refused
	// even though it is under MaxPayload.
	_, err := readOne(forgeHeader(Header{Version: 1, Type: TypePing, WireLen: 1 << 19, RawLen: 1 << 19}), ReaderOptions{})
	if !errors.Is(err, ErrBadFrame) {
		t.Fatalf("oversize ping: %v", err)
	}
	// Encoding refuses oversize payloads too.
	big := Record{Seq: 1, Kind: KindWrite, Length: 2 << 20, Data: make([]byte, 2<<20)}
	if _, _, err := AppendFrame(nil, big, EncodeOptions{MaxPayload: 1 << 20}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("encode oversize: %v", err)
	}
}

func TestHeaderFieldRules(t *testing.T) {
	payload := Ack{ReceivedSeq: 2, DurableSeq: 1}.appendPayload(nil)
	withPayload := func(h Header, p []byte) []byte {
		h.PayloadSum = xxhash.Sum64(p)
		return append(forgeHeader(h), p...)
	}
	n := uint32(len(payload))
	bad := map[string][]byte{
		"version 2":                  withPayload(Header{Version: 2, Type: TypeAck, WireLen: n, RawLen: n}, payload),
		"unknown type":               withPayload(Header{Version: 1, Type: 99, WireLen: n, RawLen: n}, payload),
		"reserved flag":              withPayload(Header{Version: 1, Type: TypeAck, Flags: 0x80, WireLen: n, RawLen: n}, payload),
		"codec without flag":         withPayload(Header{Version: 1, Type: TypeAck, Codec: CodecS2, WireLen: n, RawLen: n}, payload),
		"raw != wire uncompressed":   withPayload(Header{Version: 1, Type: TypeAck, WireLen: n, RawLen: n + 1}, payload),
		"compressed not negotiated":  withPayload(Header{Version: 1, Type: TypeAck, Flags: FlagCompressed, Codec: CodecZstd, WireLen: n, RawLen: 40}, payload),
		"compressed not smaller":     withPayload(Header{Version: 1, Type: TypeAck, Flags: FlagCompressed, Codec: CodecS2, WireLen: n, RawLen: n}, payload),
		"ack too short for its type": withPayload(Header{Version: 1, Type: TypeAck, WireLen: 8, RawLen: 8}, payload[:8]),
	}
	for name, b := range bad {
		_, err := readOne(b, ReaderOptions{Codecs: []Codec{CodecS2}})
		if !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
	good := withPayload(Header{Version: 1, Type: TypeAck, WireLen: n, RawLen: n}, payload)
	if _, err := readOne(good, ReaderOptions{}); err != nil {
		t.Fatalf("control case: %v", err)
	}
	// Truncated streams.
	if _, err := readOne(good[:10], ReaderOptions{}); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut header: %v", err)
	}
	if _, err := readOne(good[:len(good)-1], ReaderOptions{}); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut payload: %v", err)
	}
}

func TestDecompressionBombRejected(t *testing.T) {
	zeros := make([]byte, 1<<20)
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	for name, c := range map[Codec][]byte{CodecS2: s2.Encode(nil, zeros), CodecZstd: enc.EncodeAll(zeros, nil)} {
		// The header claims 4000 bytes; the payload expands to 1 MiB.
		h := Header{Version: 1, Type: TypeChunkData, Flags: FlagCompressed, Codec: name,
			WireLen: uint32(len(c)), RawLen: 4000, PayloadSum: xxhash.Sum64(c)}
		if len(c) >= 4000 {
			t.Fatalf("%s: test payload not small enough (%d)", name, len(c))
		}
		_, err := readOne(append(forgeHeader(h), c...), ReaderOptions{Codecs: []Codec{CodecS2, CodecZstd}})
		if !errors.Is(err, ErrBadFrame) {
			t.Fatalf("%s bomb: %v, want ErrBadFrame", name, err)
		}
	}
}

func TestCompressOnlyWhenItShrinks(t *testing.T) {
	random := make([]byte, 8192)
	x := uint64(88172645463325252)
	for i := range random { // xorshift: incompressible, deterministic
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		random[i] = byte(x)
	}
	text := bytes.Repeat([]byte("all work and no play "), 400)
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		rec := func(d []byte) Record { return Record{Seq: 1, Kind: KindWrite, Length: uint32(len(d)), Data: d} }
		if _, saved, _ := AppendFrame(nil, rec(random), EncodeOptions{Codec: codec, CompressMin: 512}); saved != 0 {
			t.Errorf("%s: random data compressed (saved %d)", codec, saved)
		}
		b, saved, _ := AppendFrame(nil, rec(text), EncodeOptions{Codec: codec, CompressMin: 512})
		if saved <= 0 || len(b) >= len(text)/2 {
			t.Errorf("%s: text: saved %d, frame %d of %d payload bytes", codec, saved, len(b), len(text))
		}
		if _, saved, _ := AppendFrame(nil, rec(text[:300]), EncodeOptions{Codec: codec, CompressMin: 512}); saved != 0 {
			t.Errorf("%s: payload under CompressMin was compressed", codec)
		}
	}
}

// randomBytes returns n incompressible bytes (xorshift64, fixed seed).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestCompressGate: after gateMisses payloads in a row that did not
// shrink, a gated encoder sends the next gateSkip payloads raw without
// trying (a compressible one among them goes raw too), then tries again,
// and one that shrinks turns compression back on.
func TestCompressGate(t *testing.T) {
	random := randomBytes(4096)
	text := bytes.Repeat([]byte("all work and no play "), 200)
	rec := func(d []byte) Record { return Record{Seq: 1, Kind: KindWrite, Length: uint32(len(d)), Data: d} }
	gate := new(CompressGate)
	opts := EncodeOptions{Codec: CodecS2, CompressMin: 512, Gate: gate}
	send := func(d []byte) int {
		t.Helper()
		_, saved, err := AppendFrame(nil, rec(d), opts)
		if err != nil {
			t.Fatal(err)
		}
		return saved
	}
	if send(text) == 0 {
		t.Fatal("text not compressed by a fresh gate")
	}
	for range gateMisses {
		send(random)
	}
	for i := range gateSkip {
		if saved := send(text); saved != 0 {
			t.Fatalf("payload %d after %d incompressible ones was compressed (saved %d): the gate did not skip", i, gateMisses, saved)
		}
	}
	if send(text) == 0 {
		t.Fatal("after the skip, a compressible payload was not tried")
	}
	if send(text) == 0 {
		t.Fatal("compression did not stay on after a payload shrank")
	}
	// Without a gate every payload is tried.
	opts.Gate = nil
	for range gateMisses {
		send(random)
	}
	if send(text) == 0 {
		t.Fatal("ungated encoder skipped a compressible payload")
	}
}

// TestCompressMinSaving: a payload that compression shrinks by less than
// 1/8 goes out raw and counts as a miss; after the gate's skip a single
// such payload skips again (one try per gateSkip+1 payloads, not
// gateMisses).
func TestCompressMinSaving(t *testing.T) {
	random := randomBytes(4096)
	// 256 zero bytes then random: s2 saves ~6%, under 1/8.
	slight := append(make([]byte, 256), random[256:]...)
	// 1536 zero bytes then random: saves ~37%.
	good := append(make([]byte, 1536), random[1536:]...)
	rec := func(d []byte) Record { return Record{Seq: 1, Kind: KindWrite, Length: uint32(len(d)), Data: d} }
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		if _, saved, _ := AppendFrame(nil, rec(slight), EncodeOptions{Codec: codec, CompressMin: 512}); saved != 0 {
			t.Errorf("%s: a payload saving %d bytes of %d (under 1/8) was compressed", codec, saved, len(slight))
		}
		if _, saved, _ := AppendFrame(nil, rec(good), EncodeOptions{Codec: codec, CompressMin: 512}); saved < len(good)/8 {
			t.Errorf("%s: a payload that compresses well saved only %d bytes", codec, saved)
		}
	}
	gate := new(CompressGate)
	opts := EncodeOptions{Codec: CodecS2, CompressMin: 512, Gate: gate}
	tries := 0
	const n = 10 * (gateSkip + 1)
	for range n {
		if gate.skip.Load() <= 0 {
			tries++
		}
		if _, saved, err := AppendFrame(nil, rec(slight), opts); err != nil || saved != 0 {
			t.Fatalf("saved %d, err %v", saved, err)
		}
	}
	// gateMisses tries to arm the gate, then one per gateSkip+1 payloads.
	if want := gateMisses + (n-gateMisses)/(gateSkip+1) + 1; tries > want {
		t.Errorf("%d tries in %d slightly compressible payloads, want at most %d", tries, n, want)
	}
}

func TestDecodersRejectInconsistentPayloads(t *testing.T) {
	be := binary.BigEndian
	rec := func(seq uint64, kind, flags uint8, length uint32, off uint64, data []byte) []byte {
		b := be.AppendUint64(nil, seq)
		b = append(b, kind, flags, 0, 0)
		b = be.AppendUint32(b, length)
		b = be.AppendUint64(b, off)
		return append(b, data...)
	}
	hello := testHello("a", RolePrimary)
	hello.MinVersion, hello.MaxVersion = 1, 1
	helloWith := func(mut func(*Hello)) []byte {
		h := hello
		mut(&h)
		return h.appendPayload(nil)
	}
	cases := []struct {
		name string
		t    FrameType
		p    []byte
	}{
		{"record seq 0", TypeRecord, rec(0, 1, 0, 4, 0, []byte("abcd"))},
		{"record unknown kind", TypeRecord, rec(1, 9, 0, 4, 0, []byte("abcd"))},
		{"record short data", TypeRecord, rec(1, 1, 0, 5, 0, []byte("abcd"))},
		{"record trim with data", TypeRecord, rec(1, 2, 0, 4, 0, []byte("abcd"))},
		{"record zero length", TypeRecord, rec(1, 2, 0, 0, 0, nil)},
		{"record nohole on write", TypeRecord, rec(1, 1, 1, 4, 0, []byte("abcd"))},
		{"record reserved flag", TypeRecord, rec(1, 3, 2, 4, 0, nil)},
		{"record offset overflow", TypeRecord, rec(1, 2, 0, 4096, math.MaxUint64-10, nil)},
		{"record truncated", TypeRecord, rec(1, 1, 0, 4, 0, nil)[:10]},
		{"ack durable > received", TypeAck, be.AppendUint64(be.AppendUint64(nil, 1), 2)},
		{"ack trailing", TypeAck, append(Ack{ReceivedSeq: 2, DurableSeq: 1}.appendPayload(nil), 0)},
		{"hello bad role", TypeHello, helloWith(func(h *Hello) { h.Role = 7 })},
		{"hello bad mode", TypeHello, helloWith(func(h *Hello) { h.Mode = 0 })},
		{"hello applied > durable", TypeHello, helloWith(func(h *Hello) { h.AppliedSeq = h.DurableSeq + 1 })},
		{"hello empty node", TypeHello, helloWith(func(h *Hello) { h.NodeID = "" })},
		{"hello bad utf8", TypeHello, helloWith(func(h *Hello) { h.VolumeName = "\xff\xfe" })},
		{"hello version range", TypeHello, helloWith(func(h *Hello) { h.MinVersion = 3 })},
		{"hello duplicate codec", TypeHello, helloWith(func(h *Hello) { h.Codecs = []Codec{CodecS2, CodecS2} })},
		{"hello truncated", TypeHello, helloWith(func(h *Hello) {})[:50]},
		{"helloOK trailing", TypeHelloOK, []byte{0, 1, 1, 0}},
		{"helloOK unknown codec", TypeHelloOK, []byte{0, 1, 9}},
		{"refuse text too long", TypeRefuse, append([]byte{0, 1, 0xff, 0xff}, make([]byte, 0xffff)...)},
		{"goodbye bad length", TypeGoodbye, []byte{0, 0, 0, 5, 'a'}},
		{"hash request count 0", TypeHashRequest, HashRequest{ID: 1, ChunkSize: 4096, Count: 1}.appendPayload(nil)[:20]},
		{"hash request zero chunk", TypeHashRequest, be.AppendUint32(be.AppendUint32(make([]byte, 16), 0), 1)},
		{"hash list count mismatch", TypeHashList, be.AppendUint64(be.AppendUint32(be.AppendUint32(make([]byte, 16), 4096), 2), 1)},
		{"chunk data length mismatch", TypeChunkData, append(be.AppendUint32(be.AppendUint32(make([]byte, 16), 5), 0), "abcd"...)},
		{"chunk data reserved", TypeChunkData, append(be.AppendUint32(be.AppendUint32(make([]byte, 16), 4), 1), "abcd"...)},
		{"control not json", TypeControl, []byte("{nope")},
		{"control unknown key", TypeControl, []byte(`{"kind":"x","extra":1}`)},
		{"control empty kind", TypeControl, []byte(`{"kind":""}`)},
		{"control trailing", TypeControl, []byte(`{"kind":"x"} {}`)},
		{"control array", TypeControl, []byte(`[1,2]`)},
		{"unknown type", FrameType(77), nil},
	}
	for _, c := range cases {
		if _, err := DecodeFrame(c.t, c.p); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", c.name, err)
		}
	}
	// Encoding refuses the same inconsistencies, so a bad frame fails at
	// Send instead of killing the peer link.
	for _, f := range []Frame{
		Record{Seq: 1, Kind: KindWrite, Length: 5, Data: []byte("abcd")},
		Ack{ReceivedSeq: 1, DurableSeq: 2},
		Control{Kind: "x", Body: json.RawMessage("{")},
		HashList{ChunkSize: 4096},
	} {
		if _, _, err := AppendFrame(nil, f, EncodeOptions{}); !errors.Is(err, ErrBadFrame) {
			t.Errorf("encode %#v: %v, want ErrBadFrame", f, err)
		}
	}
}

func TestHelloIgnoresTrailingExtension(t *testing.T) {
	h := testHello("a", RolePrimary)
	h.MinVersion, h.MaxVersion, h.Codecs = 1, 2, []Codec{CodecS2, Codec(9)}
	h.Flags, h.SyncID = HelloInconsistent, 0xfeed
	p := append(h.appendPayload(nil), "future fields"...)
	got, err := DecodeHello(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("got %#v want %#v", got, h)
	}
	// A Hello from a node that predates Flags and SyncID (it ends after
	// History) decodes with both zero.
	old := h.appendPayload(nil)
	old = old[:len(old)-12]
	got, err = DecodeHello(old)
	if err != nil {
		t.Fatal(err)
	}
	h.Flags, h.SyncID = 0, 0
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("old hello: got %#v want %#v", got, h)
	}
}

func TestDescribeGarbage(t *testing.T) {
	for in, want := range map[string]string{
		"GET / HTTP/1.1":   "HTTP",
		"\x16\x03\x01\x02": "TLS",
		"SSH-2.0":          "SSH",
		"\x00\x01\x02\x03": "not the twinblock",
	} {
		if got := DescribeGarbage([]byte(in)); !strings.Contains(got, want) {
			t.Errorf("%q: %q, want it to mention %q", in, got, want)
		}
	}
}
