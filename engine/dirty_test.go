package engine

import (
	"path/filepath"
	"sync"
	"testing"
)

func TestDirtyMapMarkNextClear(t *testing.T) {
	// 10 regions of 64 KiB, the last one short.
	m, err := newDirtyMap("", 64<<10, 9*64<<10+4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := m.next(0, 1<<30); ok {
		t.Fatal("empty map has a dirty region")
	}
	m.mark(64<<10+10, 1)       // region 1
	m.mark(3*64<<10-1, 2)      // regions 2 and 3
	m.mark(9*64<<10+4000, 96)  // region 9 (short)
	m.mark(9*64<<10+4096, 100) // beyond the end: ignored
	if m.count != 4 || m.dirtyBytes() != 3*64<<10+4096 {
		t.Fatalf("count %d bytes %d", m.count, m.dirtyBytes())
	}
	if s, n, ok := m.next(0, 1<<30); !ok || s != 64<<10 || n != 3*64<<10 {
		t.Fatalf("next: %d %d %v", s, n, ok)
	}
	if s, n, ok := m.next(0, 64<<10); !ok || s != 64<<10 || n != 64<<10 {
		t.Fatalf("next capped: %d %d %v", s, n, ok)
	}
	if s, n, ok := m.next(4*64<<10, 1<<30); !ok || s != 9*64<<10 || n != 4096 {
		t.Fatalf("next short tail: %d %d %v", s, n, ok)
	}
	// Clearing only drops regions wholly inside the range.
	m.clearRange(64<<10+1, 2*64<<10)
	if m.count != 3 {
		t.Fatalf("partial clear dropped a region: count %d", m.count)
	}
	m.clearRange(64<<10, 3*64<<10)
	m.clearRange(9*64<<10, 4096)
	if m.count != 0 {
		t.Fatalf("count %d after clearing all", m.count)
	}
	m.setAll(7, 100)
	if m.count != 10 || m.dirtyBytes() != m.size {
		t.Fatalf("setAll: count %d bytes %d", m.count, m.dirtyBytes())
	}
}

func TestDirtyMapSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dirty.map")
	m, err := newDirtyMap(path, 1<<20, 100<<20+512)
	if err != nil {
		t.Fatal(err)
	}
	m.reset(0xabc, 42)
	for _, off := range []uint64{0, 5 << 20, 99 << 20, 100 << 20} {
		m.mark(off, 1)
	}
	if err := m.save(); err != nil {
		t.Fatal(err)
	}
	got, err := loadDirtyMap(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.count != 4 || got.syncID != 0xabc || got.fromSeq != 42 || got.regionSize != 1<<20 || got.size != m.size {
		t.Fatalf("loaded %+v", got)
	}
	for i := range m.words {
		if got.words[i] != m.words[i] {
			t.Fatalf("word %d: %x want %x", i, got.words[i], m.words[i])
		}
	}
	img := m.encodeLocked()
	img[dirtyHeaderSize] ^= 1
	if _, err := decodeDirtyMap(img); err == nil {
		t.Fatal("flipped bit not detected")
	}
	if m, err := loadDirtyMap(filepath.Join(t.TempDir(), "none")); m != nil || err != nil {
		t.Fatalf("missing file: %v %v", m, err)
	}
	if _, err := newDirtyMap("", 3000, 1<<20); err == nil {
		t.Fatal("region size 3000 accepted")
	}
}

func FuzzDecodeDirtyMap(f *testing.F) {
	m, _ := newDirtyMap("", 4096, 1<<20+1)
	f.Add(m.encodeLocked())
	m.mark(4096, 8192)
	m.mark(1<<20, 1)
	f.Add(m.encodeLocked())
	f.Add([]byte(dirtyMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeDirtyMap(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes and stays in range.
		if got := m.encodeLocked(); string(got) != string(b) {
			t.Fatalf("re-encode differs")
		}
		if m.dirtyBytes() > m.size {
			t.Fatalf("dirty bytes %d > size %d", m.dirtyBytes(), m.size)
		}
		if s, n, ok := m.next(0, 1<<62); ok && s+n > m.size {
			t.Fatalf("run [%d,+%d) beyond %d", s, n, m.size)
		}
	})
}

// Saves from several goroutines (the progress ticker, a checkpoint, the
// end of a resync) never fail on each other's temporary file, and the
// file ends with the last state.
func TestDirtyMapConcurrentSaves(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dirty.map")
	m, err := newDirtyMap(path, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				m.mark(uint64(i*100+j)<<20, 1)
				if err := m.save(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := loadDirtyMap(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.count != 400 {
		t.Fatalf("saved map has %d regions, want 400", got.count)
	}
}
