package mem_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/mem"
)

// FuzzOps decodes a byte string into operations (7 bytes each: kind,
// offset, length) on a small backend of three and a half chunks and checks
// every result against a flat byte-slice model. The chunk-edge arithmetic of
// writes, partial and whole-chunk discards and growth is what it targets.
func FuzzOps(f *testing.F) {
	op := func(kind byte, off uint32, n uint16) []byte {
		var b [7]byte
		b[0] = kind
		binary.LittleEndian.PutUint32(b[1:], off)
		binary.LittleEndian.PutUint16(b[5:], n)
		return b[:]
	}
	cs := uint32(mem.ChunkSize)
	f.Add(op(0, 0, 100))
	f.Add(append(op(0, cs-10, 20), op(1, cs-5, 10)...))
	f.Add(append(append(op(0, 0, 65535), op(0, cs, 65535)...), op(1, 1, 65535)...))
	f.Add(append(append(op(0, 3*cs, 9000), op(3, 0, 0)...), op(0, 3*cs+cs/2, 60000)...))
	f.Add(append(op(0, 100, 5000), op(2, 50, 6000)...))
	f.Fuzz(func(t *testing.T, prog []byte) {
		size := int64(3*mem.ChunkSize + mem.ChunkSize/2)
		b := mem.New(size)
		defer b.Close()
		model := make([]byte, size)
		for i := 0; i+7 <= len(prog) && i < 7*64; i += 7 {
			kind := prog[i] % 5
			off := int64(binary.LittleEndian.Uint32(prog[i+1:])) % (size + 1)
			n := min(int64(binary.LittleEndian.Uint16(prog[i+5:])), size-off)
			var err error
			switch kind {
			case 0:
				p := bytes.Repeat([]byte{byte(i/7 + 1)}, int(n))
				_, err = b.WriteAt(p, off)
				copy(model[off:], p)
			case 1:
				err = b.Discard(off, n)
				clear(model[off : off+n])
			case 2:
				err = b.WriteZeroes(off, n, prog[i]&0x80 != 0)
				clear(model[off : off+n])
			case 3:
				size += int64(n) + 1
				err = b.Resize(size)
				model = append(model, make([]byte, n+1)...)
			case 4:
				got := make([]byte, n)
				_, err = b.ReadAt(got, off)
				if err == nil && !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("op %d: read at %d len %d differs from the model", i/7, off, n)
				}
			}
			if err != nil {
				t.Fatalf("op %d (kind %d off %d len %d): %v", i/7, kind, off, n, err)
			}
		}
		got := make([]byte, size)
		if _, err := b.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatal("final contents differ from the model")
		}
		if b.Allocated() > (size+mem.ChunkSize-1)/mem.ChunkSize*mem.ChunkSize {
			t.Fatalf("Allocated() = %d exceeds the device's chunks", b.Allocated())
		}
	})
}
