package transport

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// DefaultCompressMin is the smallest payload worth compressing: below it
// the codec's framing eats the gain and the CPU is wasted.
const DefaultCompressMin = 512

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// zstd encoders and decoders are expensive to build and safe for
// concurrent EncodeAll/DecodeAll, so the package shares one of each.
var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

func zstdCodec() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		n := runtime.GOMAXPROCS(0)
		zstdEnc, zstdErr = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(n),
			zstd.WithEncoderCRC(false)) // the frame's payload checksum covers it
		if zstdErr != nil {
			return
		}
		zstdDec, zstdErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(n),
			// Output never exceeds the cap of the buffer we pass, which is
			// the header's RawLen: a decompression bomb cannot allocate more.
			zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(DefaultMaxPayload*2))
	})
	return zstdEnc, zstdDec, zstdErr
}

// compressInPlace compresses raw with codec and, if the result is smaller,
// copies it over the front of raw and returns its length; otherwise 0.
func compressInPlace(codec Codec, raw []byte) int {
	bp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(bp)
	var out []byte
	switch codec {
	case CodecS2:
		need := s2.MaxEncodedLen(len(raw))
		if need < 0 {
			return 0
		}
		if cap(*bp) < need {
			*bp = make([]byte, need)
		}
		out = s2.Encode((*bp)[:need], raw)
	case CodecZstd:
		enc, _, err := zstdCodec()
		if err != nil {
			return 0
		}
		out = enc.EncodeAll(raw, (*bp)[:0])
		*bp = out[:0]
	default:
		return 0
	}
	if len(out) >= len(raw) {
		return 0
	}
	return copy(raw, out)
}

// decompress returns exactly rawLen bytes or an ErrBadFrame error; it never
// allocates more than rawLen, which the caller has already capped.
func decompress(codec Codec, wire []byte, rawLen int) ([]byte, error) {
	switch codec {
	case CodecS2:
		n, err := s2.DecodedLen(wire)
		if err != nil {
			return nil, badFrame("s2 payload: %v", err)
		}
		if n != rawLen {
			return nil, badFrame("s2 payload decodes to %d bytes, header says %d", n, rawLen)
		}
		out, err := s2.Decode(make([]byte, rawLen), wire)
		if err != nil {
			return nil, badFrame("s2 payload: %v", err)
		}
		return out, nil
	case CodecZstd:
		_, dec, err := zstdCodec()
		if err != nil {
			return nil, badFrame("zstd unavailable: %v", err)
		}
		out, err := dec.DecodeAll(wire, make([]byte, 0, rawLen))
		if err != nil {
			return nil, badFrame("zstd payload: %v", err)
		}
		if len(out) != rawLen {
			return nil, badFrame("zstd payload decodes to %d bytes, header says %d", len(out), rawLen)
		}
		return out, nil
	}
	return nil, badFrame("unknown codec %d", uint8(codec))
}
