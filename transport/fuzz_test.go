package transport

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// Every fuzz target checks two things: the decoder never panics and
// rejects with ErrBadFrame, and whatever it accepts re-encodes to a
// payload that decodes to the same value (no information is invented or
// lost).

func seedPayloads(f *testing.F, t FrameType) {
	for _, fr := range sampleFrames() {
		if fr.Type() == t {
			f.Add(fr.appendPayload(nil))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
}

func fuzzDecoder[T Frame](f *testing.F, t FrameType, decode func([]byte) (T, error)) {
	seedPayloads(f, t)
	f.Fuzz(func(tt *testing.T, p []byte) {
		v, err := decode(p)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				tt.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		again, err := decode(v.appendPayload(nil))
		if err != nil {
			tt.Fatalf("accepted %x, but its re-encoding fails: %v", p, err)
		}
		if !reflect.DeepEqual(normalize(again), normalize(v)) {
			tt.Fatalf("round trip changed the value:\n%#v\n%#v", v, again)
		}
	})
}

// normalize maps nil and empty slices together for comparison.
func normalize(f Frame) Frame {
	switch v := f.(type) {
	case Record:
		if len(v.Data) == 0 {
			v.Data = nil
		}
		return v
	case ChunkData:
		if len(v.Data) == 0 {
			v.Data = nil
		}
		return v
	case Hello:
		if len(v.History) == 0 {
			v.History = nil
		}
		if len(v.Codecs) == 0 {
			v.Codecs = nil
		}
		return v
	}
	return f
}

func FuzzDecodeHello(f *testing.F)       { fuzzDecoder(f, TypeHello, DecodeHello) }
func FuzzDecodeHelloOK(f *testing.F)     { fuzzDecoder(f, TypeHelloOK, DecodeHelloOK) }
func FuzzDecodeRefuse(f *testing.F)      { fuzzDecoder(f, TypeRefuse, DecodeRefuse) }
func FuzzDecodeGoodbye(f *testing.F)     { fuzzDecoder(f, TypeGoodbye, DecodeGoodbye) }
func FuzzDecodePing(f *testing.F)        { fuzzDecoder(f, TypePing, DecodePing) }
func FuzzDecodePong(f *testing.F)        { fuzzDecoder(f, TypePong, DecodePong) }
func FuzzDecodeRecord(f *testing.F)      { fuzzDecoder(f, TypeRecord, DecodeRecord) }
func FuzzDecodeAck(f *testing.F)         { fuzzDecoder(f, TypeAck, DecodeAck) }
func FuzzDecodeHashRequest(f *testing.F) { fuzzDecoder(f, TypeHashRequest, DecodeHashRequest) }
func FuzzDecodeHashList(f *testing.F)    { fuzzDecoder(f, TypeHashList, DecodeHashList) }
func FuzzDecodeChunkData(f *testing.F)   { fuzzDecoder(f, TypeChunkData, DecodeChunkData) }

// Control compacts its body when encoding, so the round trip compares
// after one normalization pass.
func FuzzDecodeControl(f *testing.F) {
	seedPayloads(f, TypeControl)
	f.Add([]byte(`{"kind":"generation","body":{"gen":1, "history":[1,2]}}`))
	f.Add([]byte(`{"kind":"x","body":null}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		v, err := DecodeControl(p)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v does not wrap ErrBadFrame", err)
			}
			return
		}
		once, err := DecodeControl(v.appendPayload(nil))
		if err != nil {
			t.Fatalf("re-encoding of %q fails: %v", p, err)
		}
		twice, err := DecodeControl(once.appendPayload(nil))
		if err != nil || !reflect.DeepEqual(once, twice) {
			t.Fatalf("not stable: %#v %#v %v", once, twice, err)
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader, which must
// return frames, io.EOF, io.ErrUnexpectedEOF or ErrBadFrame — never panic
// or allocate past MaxPayload.
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		for _, fr := range sampleFrames() {
			b, _, err := AppendFrame(nil, fr, EncodeOptions{Codec: codec, CompressMin: 16})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			stream = append(stream, b...)
		}
	}
	f.Add(stream)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x10})
	f.Add(forgeHeader(Header{Version: 1, Type: TypeRecord, WireLen: 1 << 30, RawLen: 1 << 30}))
	const max = 1 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := NewFrameReader(bytes.NewReader(b), ReaderOptions{MaxPayload: max, Codecs: []Codec{CodecS2, CodecZstd}})
		for {
			raw, err := fr.ReadFrame()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrBadFrame) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if len(raw.Payload) != int(raw.Header.RawLen) || len(raw.Payload) > max {
				t.Fatalf("payload %d bytes, header says %d", len(raw.Payload), raw.Header.RawLen)
			}
			if _, err := raw.Decode(); err != nil && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("decode: %v", err)
			}
		}
	})
}
