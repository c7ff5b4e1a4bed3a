package journal

import (
	"bytes"
	"testing"

	"github.com/cespare/xxhash/v2"
)

func encodeTestRecord(h recordHeader, payload []byte) []byte {
	h.payloadLen = uint32(len(payload))
	h.payloadSum = xxhash.Sum64(payload)
	b := make([]byte, recordSize(len(payload)))
	h.encode(b)
	copy(b[recordHeaderSize:], payload)
	return b
}

// FuzzDecodeRecord: the decoder never panics, never allocates from an
// unchecked length, and whatever it accepts re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	w := encodeTestRecord(recordHeader{kind: KindWrite, seq: 7, segID: 3, syncedThrough: 5, offset: 4096, length: 5}, []byte("hello"))
	f.Add(w)
	f.Add(encodeTestRecord(recordHeader{kind: KindTrim, seq: 1, segID: 1, offset: 0, length: 1 << 20}, nil))
	f.Add(encodeTestRecord(recordHeader{kind: KindZero, flags: flagNoHole, seq: 9, segID: 2, syncedThrough: 8, length: 512}, nil))
	big := encodeTestRecord(recordHeader{kind: KindWrite, seq: 2, segID: 1, syncedThrough: 1, length: 4096}, bytes.Repeat([]byte{0xab}, 4096))
	f.Add(big)
	f.Add(big[:100])              // torn after the header
	f.Add(make([]byte, 512))      // preallocated zeroes
	f.Add(w[:recordHeaderSize-1]) // short header
	bad := bytes.Clone(w)
	bad[70] ^= 1 // payload bit flip
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := decodeRecord(b, 1<<16)
		if err != nil {
			return
		}
		if len(payload) != int(h.payloadLen) {
			t.Fatalf("payload %d bytes, header says %d", len(payload), h.payloadLen)
		}
		re := make([]byte, recordHeaderSize+len(payload))
		h.encode(re)
		copy(re[recordHeaderSize:], payload)
		if !bytes.Equal(re, b[:len(re)]) {
			t.Fatalf("accepted record does not re-encode to the same bytes")
		}
	})
}

// FuzzDecodeSegmentHeader covers the segment header and checkpoint decoders.
func FuzzDecodeSegmentHeader(f *testing.F) {
	b := make([]byte, segmentHeaderSize)
	(&segmentHeader{segID: 4, firstSeq: 100, syncedThrough: 99, size: 1 << 20}).encode(b)
	f.Add(b)
	f.Add(b[:segHeaderUsed-1])
	f.Add(encodeCheckpoint(42))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := decodeSegmentHeader(b); err == nil {
			re := make([]byte, segmentHeaderSize)
			s.encode(re)
			if !bytes.Equal(re[:segHeaderUsed], b[:segHeaderUsed]) {
				t.Fatal("segment header does not re-encode")
			}
		}
		if v, err := decodeCheckpoint(b); err == nil {
			if !bytes.Equal(encodeCheckpoint(v), b[:checkpointSize]) {
				t.Fatal("checkpoint does not re-encode")
			}
		}
	})
}
