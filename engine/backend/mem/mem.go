package mem

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/twinblock/twinblock/engine/backend"
)

const (
	// ChunkSize is the allocation unit: a chunk is allocated on its first
	// write and freed when a Discard covers all of it. 1 MiB, because an
	// aligned 1 MiB write then lands in one chunk as a single copy, and the
	// Go runtime copies blocks of 1 MiB and more with non-temporal stores:
	// into memory that is not in the CPU cache (a volume larger than the
	// cache) that is about 1.5x faster than sixteen 64 KiB copies
	// (BenchmarkWrite1MSequential), and it is most of the CPU time a large
	// NBD write costs the server.
	ChunkSize = 1 << 20
	// segmentChunks chunks share one segment, the second level of the table.
	// With 1 MiB chunks a segment maps 1 GiB and weighs 8 KiB, so a 10 GiB
	// volume needs a 10-entry top level, and a 1 TiB one 1024 entries.
	segmentChunks = 1024
	segmentSize   = ChunkSize * segmentChunks
)

// chunk holds ChunkSize bytes. Its lock only orders accesses to these bytes,
// so requests to different chunks never contend.
type chunk struct {
	mu   sync.RWMutex
	data [ChunkSize]byte
}

// segment is the second level of the table. Once installed it is never
// replaced, only copied by pointer into a larger top level on Resize; its
// chunk slots are set by compare-and-swap.
type segment struct {
	chunks [segmentChunks]atomic.Pointer[chunk]
}

// table is the top level. A table is immutable in length; Resize publishes a
// longer copy.
type table struct {
	segs []atomic.Pointer[segment]
}

// Backend is a sparse in-memory backend.Backend. The zero value is not
// usable; call New.
type Backend struct {
	size      atomic.Int64
	tab       atomic.Pointer[table]
	allocated atomic.Int64 // bytes held in chunks
	closed    atomic.Bool

	// mu serializes the rare structural changes: installing a segment and
	// publishing a longer table. Holding it while installing guarantees that
	// a segment is never installed into a table that Resize already copied.
	mu struct {
		sync.Mutex
	}
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Discarder = (*Backend)(nil)
	_ backend.Zeroer    = (*Backend)(nil)
	_ backend.Resizer   = (*Backend)(nil)
	_ backend.Receiver  = (*Backend)(nil)
)

// New returns an empty (all-zero) backend of the given size. Memory is only
// used for chunks that have been written. New panics if size is negative.
func New(size int64) *Backend {
	if size < 0 {
		panic(fmt.Sprintf("mem: negative size %d", size))
	}
	b := &Backend{}
	b.size.Store(size)
	b.tab.Store(&table{segs: make([]atomic.Pointer[segment], numSegments(size))})
	return b
}

func numSegments(size int64) int64 { return (size + segmentSize - 1) / segmentSize }

// Size returns the current size in bytes.
func (b *Backend) Size() int64 { return b.size.Load() }

// Allocated returns the number of bytes held in allocated chunks, so tests
// can check that Discard really frees memory.
func (b *Backend) Allocated() int64 { return b.allocated.Load() }

// lookup returns the chunk with index ci, or nil if it was never written (or
// was discarded).
func (b *Backend) lookup(ci int64) *chunk {
	t := b.tab.Load()
	si := ci / segmentChunks
	if si >= int64(len(t.segs)) {
		// Only possible for an index beyond Size, which CheckRange excludes.
		return nil
	}
	s := t.segs[si].Load()
	if s == nil {
		return nil
	}
	return s.chunks[ci%segmentChunks].Load()
}

// obtain returns chunk ci, allocating it (and its segment) on first touch.
func (b *Backend) obtain(ci int64) *chunk {
	si := ci / segmentChunks
	t := b.tab.Load()
	var s *segment
	if si < int64(len(t.segs)) {
		s = t.segs[si].Load()
	}
	if s == nil {
		s = b.installSegment(si)
	}
	slot := &s.chunks[ci%segmentChunks]
	if c := slot.Load(); c != nil {
		return c
	}
	c := new(chunk)
	if slot.CompareAndSwap(nil, c) {
		b.allocated.Add(ChunkSize)
		return c
	}
	// Another writer installed it first; ours becomes garbage.
	return slot.Load()
}

func (b *Backend) installSegment(si int64) *segment {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Re-read under the lock: Resize may have published a new table, and
	// another writer may have installed the segment meanwhile.
	t := b.tab.Load()
	if si >= int64(len(t.segs)) {
		// Only after Close emptied the table, for a request racing with it:
		// the write lands in a segment nobody will read.
		return new(segment)
	}
	if s := t.segs[si].Load(); s != nil {
		return s
	}
	s := new(segment)
	t.segs[si].Store(s)
	return s
}

// ReadAt reads len(p) bytes at off. Never-written ranges read as zeroes.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if b.closed.Load() {
		return 0, backend.ErrClosed
	}
	if err := backend.CheckRange(b.size.Load(), off, int64(len(p))); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		ci, co := off/ChunkSize, int(off%ChunkSize)
		m := min(len(p), ChunkSize-co)
		if c := b.lookup(ci); c == nil {
			clear(p[:m])
		} else {
			c.mu.RLock()
			copy(p[:m], c.data[co:])
			c.mu.RUnlock()
		}
		p = p[m:]
		off += int64(m)
	}
	return n, nil
}

// WriteAt writes p at off. Only the first write to a chunk allocates.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if b.closed.Load() {
		return 0, backend.ErrClosed
	}
	if err := backend.CheckRange(b.size.Load(), off, int64(len(p))); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		ci, co := off/ChunkSize, int(off%ChunkSize)
		m := min(len(p), ChunkSize-co)
		c := b.obtain(ci)
		c.mu.Lock()
		copy(c.data[co:co+m], p[:m])
		c.mu.Unlock()
		p = p[m:]
		off += int64(m)
	}
	return n, nil
}

// ReceiveAt reads n bytes from r straight into the chunks behind
// [off, off+n) (backend.Receiver). It does not take the chunks' locks: r
// may block on a client for a long time, and requests to other bytes of
// the same chunk must not wait for it. Requests to the same bytes that run
// at the same time see some mix of old and new bytes, which is what NBD
// promises for overlapping requests in flight (the engine orders them
// where it must: a journaled volume never receives directly).
func (b *Backend) ReceiveAt(r io.Reader, off, n int64) error {
	if b.closed.Load() {
		return backend.ErrClosed
	}
	if err := backend.CheckRange(b.size.Load(), off, n); err != nil {
		return err
	}
	for n > 0 {
		ci, co := off/ChunkSize, int(off%ChunkSize)
		m := int(min(n, int64(ChunkSize-co)))
		c := b.obtain(ci)
		if _, err := io.ReadFull(r, c.data[co:co+m]); err != nil {
			return err
		}
		n -= int64(m)
		off += int64(m)
	}
	return nil
}

// Discard frees the chunks that [off, off+n) covers entirely and zeroes the
// covered part of the others. Afterwards the range reads as zeroes.
func (b *Backend) Discard(off, n int64) error {
	return b.zero(off, n, true)
}

// WriteZeroes zeroes [off, off+n). Without keepAllocated it is Discard. With
// it, allocated chunks are zeroed in place and never-written chunks stay
// unallocated: memory has no allocation to guarantee, and allocating them
// would make a whole-device NO_HOLE zeroing cost the device's size in RAM.
func (b *Backend) WriteZeroes(off, n int64, keepAllocated bool) error {
	return b.zero(off, n, !keepAllocated)
}

func (b *Backend) zero(off, n int64, free bool) error {
	if b.closed.Load() {
		return backend.ErrClosed
	}
	if err := backend.CheckRange(b.size.Load(), off, n); err != nil {
		return err
	}
	end := off + n
	for off < end {
		ci, co := off/ChunkSize, off%ChunkSize
		m := min(end-off, ChunkSize-co)
		if free && m == ChunkSize {
			b.free(ci)
		} else if c := b.lookup(ci); c != nil {
			c.mu.Lock()
			clear(c.data[co : co+m])
			c.mu.Unlock()
		}
		off += m
	}
	return nil
}

// free unlinks chunk ci. A concurrent request to the same chunk overlaps the
// discard, so the contract lets it land before or after; either way no
// lock is needed to drop the pointer.
func (b *Backend) free(ci int64) {
	t := b.tab.Load()
	si := ci / segmentChunks
	if si >= int64(len(t.segs)) {
		return // only after Close
	}
	s := t.segs[si].Load()
	if s == nil {
		return
	}
	slot := &s.chunks[ci%segmentChunks]
	if c := slot.Load(); c != nil && slot.CompareAndSwap(c, nil) {
		b.allocated.Add(-ChunkSize)
	}
}

// Flush has nothing to make durable and returns nil (ErrClosed after Close).
func (b *Backend) Flush() error {
	if b.closed.Load() {
		return backend.ErrClosed
	}
	return nil
}

// Resize grows the backend; the new range reads as zeroes. Shrinking is
// refused with backend.ErrShrink.
func (b *Backend) Resize(size int64) error {
	if b.closed.Load() {
		return backend.ErrClosed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.size.Load()
	switch {
	case size < cur:
		return fmt.Errorf("mem: resize from %d to %d: %w", cur, size, backend.ErrShrink)
	case size == cur:
		return nil
	}
	// Bytes past the old size inside its last chunk were never writable, so
	// they are still zero: growing needs no clearing, only a larger table.
	old := b.tab.Load()
	if want := numSegments(size); want > int64(len(old.segs)) {
		nt := &table{segs: make([]atomic.Pointer[segment], want)}
		for i := range old.segs {
			nt.segs[i].Store(old.segs[i].Load())
		}
		b.tab.Store(nt)
	}
	b.size.Store(size)
	return nil
}

// Close drops all data. Later calls return backend.ErrClosed; a second Close
// returns nil.
func (b *Backend) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	b.tab.Store(&table{})
	b.allocated.Store(0)
	b.mu.Unlock()
	return nil
}
