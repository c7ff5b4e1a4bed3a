package transport

import (
	"runtime"
	"sync"
	"sync/atomic"

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

// CompressGate stops trying to compress while payloads do not shrink by
// at least 1/8 (minSavingDiv): after gateMisses payloads in a row that
// compression did not shrink enough, the next gateSkip payloads go out
// raw without a try, then one is tried again (a miss skips gateSkip more),
// and the first one that shrinks turns compression back on for all.
// Encrypted or already compressed guest data, common on VM disks, would
// otherwise pay the codec on every record for nothing: s2 on a
// random 4 KiB payload costs ~3 µs, 9% of a replicating primary's CPU at
// queue depth 32. Safe for concurrent use (a heuristic: races only move
// the counts a little). The zero value is ready; a nil gate always tries.
type CompressGate struct {
	misses atomic.Int32
	skip   atomic.Int32
}

const (
	gateMisses = 8
	gateSkip   = 64
	// minSavingDiv: a compressed payload is kept only when it saves at
	// least 1/minSavingDiv of the raw size (ZFS keeps a compressed block
	// on the same rule). fio's default buffers, typical of data with a
	// little structure, shrink 6-7% under s2: for that, 3 µs of the
	// primary's CPU per 4 KiB record and the secondary's decode are not
	// worth it (s2 was the largest user-space item, 3% of both CPUs, in a
	// profile of a pair at QD32).
	minSavingDiv = 8
)

// try reports whether the next payload should be compressed.
func (g *CompressGate) try() bool {
	if g == nil || g.skip.Load() <= 0 {
		return true
	}
	g.skip.Add(-1)
	return false
}

// result records whether a tried payload shrank.
func (g *CompressGate) result(shrank bool) {
	if g == nil {
		return
	}
	if shrank {
		g.misses.Store(0)
		return
	}
	if g.misses.Add(1) >= gateMisses {
		// The next miss, the single try after the skip, re-arms it.
		g.misses.Store(gateMisses - 1)
		g.skip.Store(gateSkip)
	}
}

// compressInPlace compresses raw with codec and, if the result saves at
// least 1/minSavingDiv of it, copies the result over the front of raw and
// returns its length; otherwise 0.
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
	if len(out) > len(raw)-len(raw)/minSavingDiv {
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
