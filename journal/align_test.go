package journal

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/twinblock/twinblock/journal/vfs"
)

// writeLogFS records every WriteAt to a segment file.
type writeLogFS struct {
	vfs.FS
	mu     sync.Mutex
	writes []segWrite
}

type segWrite struct {
	path     string
	off, len int64
}

type writeLogFile struct {
	vfs.File
	fs   *writeLogFS
	path string
}

func (w *writeLogFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := w.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &writeLogFile{File: f, fs: w, path: name}, nil
}

func (f *writeLogFile) WriteAt(p []byte, off int64) (int, error) {
	if strings.HasSuffix(f.path, segmentSuffix) {
		f.fs.mu.Lock()
		f.fs.writes = append(f.fs.writes, segWrite{f.path, off, int64(len(p))})
		f.fs.mu.Unlock()
	}
	return f.File.WriteAt(p, off)
}

func (w *writeLogFS) take() []segWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.writes
	w.writes = nil
	return out
}

// Every segment write covers whole 4 KiB blocks (or ends at the segment's
// end), through appends of every size, segment rotations and a reopen in
// the middle of a block; every record still replays intact.
func TestWritesWholeBlocks(t *testing.T) {
	wfs := &writeLogFS{FS: vfs.NewMemFS()}
	opts := testOpts(wfs)
	opts.SegmentSize = 16<<10 + 512 // not a multiple of the block: the last write is clamped
	check := func(stage string) {
		t.Helper()
		ws := wfs.take()
		if len(ws) == 0 {
			t.Fatalf("%s: no segment writes seen", stage)
		}
		for _, w := range ws {
			end := w.off + w.len
			if w.off%writeAlign != 0 || (end%writeAlign != 0 && end != opts.SegmentSize) {
				t.Fatalf("%s: write [%d, %d) of %s is not whole blocks", stage, w.off, end, w.path)
			}
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	model := map[uint64]Op{}
	j := mustOpen(t, opts)
	appendN(t, j, rng, 40, model)
	check("first open")
	mustClose(t, j)

	// Reopen: the active segment ends inside a block (records are not
	// block-sized), so the first write carries that block's prefix again,
	// read back at open.
	j = mustOpen(t, opts)
	wfs.take() // open's own writes (the checkpoint file is not a segment)
	last := j.Stats().LastSeq
	if end := j.mu.segs[len(j.mu.segs)-1].end; end%writeAlign == 0 {
		t.Fatalf("test needs the reopened segment to end inside a block, ends at %d", end)
	}
	appendN(t, j, rng, 40, model)
	check("after reopen")
	if got, err := checkReplay(j, 1, model); err != nil || got != j.Stats().LastSeq || got <= last {
		t.Fatalf("replay: through %d, err %v (last %d)", got, err, j.Stats().LastSeq)
	}
	mustClose(t, j)
	j = mustOpen(t, opts)
	if got, err := checkReplay(j, 1, model); err != nil || got != uint64(len(model)) {
		t.Fatalf("replay after reopen: through %d of %d, err %v", got, len(model), err)
	}
	mustClose(t, j)
}

// Without a known tail (its read failed at open) a write goes out as it
// is; once one crosses a block boundary the tail is known again and the
// next write is widened, with the right prefix.
func TestWriteChunkUnknownTail(t *testing.T) {
	m := vfs.NewMemFS()
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := m.OpenFile("/d/s", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const size = 4 * writeAlign
	if err := f.Allocate(size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for i := range 1000 {
		want[i] = byte(i*3 + 1)
	}
	if _, err := f.WriteAt(want[:1000], 0); err != nil {
		t.Fatal(err)
	}
	j := &Journal{}
	s := &segment{f: f, size: size, end: 1000}
	write := func(n int) {
		t.Helper()
		d := bytes.Repeat([]byte{byte(n)}, n)
		copy(want[s.end:], d)
		if err := j.writeChunk(s, d, s.end); err != nil {
			t.Fatal(err)
		}
		s.end += int64(n)
	}
	write(100) // [1000, 1100): still inside block 0, tail unknown
	if s.tailKnown {
		t.Fatal("tail known without a read")
	}
	write(5000) // [1100, 6100): crosses into block 1, tail = [4096, 6100)
	if !s.tailKnown || len(s.tail) != 6100-writeAlign {
		t.Fatalf("tail known %v, %d bytes; want %d", s.tailKnown, len(s.tail), 6100-writeAlign)
	}
	write(10) // widened: [4096, 8192) with the prefix from s.tail
	got := make([]byte, size)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("file differs from what was written at byte %d: %d, want %d", i, got[i], want[i])
			}
		}
	}
}
