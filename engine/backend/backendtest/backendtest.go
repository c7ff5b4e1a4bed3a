package backendtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
)

// OpenFunc returns a new, all-zero backend of exactly size bytes. It is
// called once per subtest. Run closes the backend when the subtest ends, so
// OpenFunc must not register its own Close (it may register other cleanup,
// and should keep files under t.TempDir()).
type OpenFunc func(t *testing.T, size int64) backend.Backend

const (
	kib = 1 << 10
	mib = 1 << 20

	// Size is the size Run asks OpenFunc for: a multiple of 4 KiB (so block
	// devices with 4 KiB sectors can provide it) that is not a multiple of
	// 64 KiB or 1 MiB, so the last chunk of chunked backends is partial.
	Size = 8*mib + 12*kib
)

// Run runs the backend contract suite against the backends open returns.
func Run(t *testing.T, open OpenFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, backend.Backend)
	}{
		{"Size", testSize},
		{"NeverWrittenReadsZero", testNeverWritten},
		{"ZeroLength", testZeroLength},
		{"ReadAfterWrite", testReadAfterWrite},
		{"OutOfRange", testOutOfRange},
		{"Discard", func(t *testing.T, b backend.Backend) {
			testZeroing(t, b, func(off, n int64) error { return backend.Discard(b, off, n) })
		}},
		{"WriteZeroesKeepAllocated", func(t *testing.T, b backend.Backend) {
			testZeroing(t, b, func(off, n int64) error { return backend.WriteZeroes(b, off, n, true) })
		}},
		{"WriteZeroesPunch", func(t *testing.T, b backend.Backend) {
			testZeroing(t, b, func(off, n int64) error { return backend.WriteZeroes(b, off, n, false) })
		}},
		{"Flush", testFlush},
		{"RandomOps", testRandomOps},
		{"Concurrent", testConcurrent},
		{"Resize", testResize},
		{"Receive", testReceive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, Size)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

// fill returns n bytes of pseudo-random data determined by seed.
func fill(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x7477696e626c6b))
	p := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	return p
}

// model is the expected content of the device.
type model struct{ data []byte }

func newModel(size int64) *model { return &model{data: make([]byte, size)} }

func (m *model) write(t *testing.T, b backend.Backend, p []byte, off int64) {
	t.Helper()
	n, err := b.WriteAt(p, off)
	if err != nil || n != len(p) {
		t.Fatalf("WriteAt(len %d, off %d) = %d, %v", len(p), off, n, err)
	}
	copy(m.data[off:], p)
}

func (m *model) zero(off, n int64) { clear(m.data[off : off+n]) }

// verify compares [off, off+n) of b with the model.
func (m *model) verify(t *testing.T, b backend.Backend, off, n int64) {
	t.Helper()
	if err := verifyRange(b, m.data[off:off+n], off); err != nil {
		t.Fatal(err)
	}
}

func (m *model) verifyAll(t *testing.T, b backend.Backend) {
	t.Helper()
	m.verify(t, b, 0, int64(len(m.data)))
}

// verifyRange reads want's length at off in pieces of at most 1 MiB and
// reports the first difference. It is safe to call from any goroutine.
func verifyRange(b backend.Backend, want []byte, off int64) error {
	buf := make([]byte, min(len(want), mib))
	for len(want) > 0 {
		p := buf[:min(len(want), len(buf))]
		// Poison the buffer so a backend that leaves it untouched fails.
		for i := range p {
			p[i] = 0xa5
		}
		n, err := b.ReadAt(p, off)
		if err != nil || n != len(p) {
			return fmt.Errorf("ReadAt(len %d, off %d) = %d, %v", len(p), off, n, err)
		}
		if !bytes.Equal(p, want[:len(p)]) {
			for i := range p {
				if p[i] != want[i] {
					return fmt.Errorf("byte at %d = %#02x, want %#02x", off+int64(i), p[i], want[i])
				}
			}
		}
		want = want[len(p):]
		off += int64(len(p))
	}
	return nil
}

func testSize(t *testing.T, b backend.Backend) {
	if got := b.Size(); got != Size {
		t.Fatalf("Size() = %d, want %d", got, Size)
	}
}

func testNeverWritten(t *testing.T, b backend.Backend) {
	newModel(Size).verifyAll(t, b)
	// Odd sizes and offsets too, including the very last byte.
	for _, r := range [][2]int64{{1, 1}, {4095, 3}, {64*kib - 1, 2}, {Size - 1, 1}, {Size - 70000, 70000}} {
		if err := verifyRange(b, make([]byte, r[1]), r[0]); err != nil {
			t.Fatal(err)
		}
	}
}

func testZeroLength(t *testing.T, b backend.Backend) {
	for _, off := range []int64{0, 12345, Size} {
		if n, err := b.ReadAt([]byte{}, off); n != 0 || err != nil {
			t.Errorf("ReadAt(empty, %d) = %d, %v", off, n, err)
		}
		if n, err := b.WriteAt([]byte{}, off); n != 0 || err != nil {
			t.Errorf("WriteAt(empty, %d) = %d, %v", off, n, err)
		}
		if err := backend.Discard(b, off, 0); err != nil {
			t.Errorf("Discard(%d, 0) = %v", off, err)
		}
		if err := backend.WriteZeroes(b, off, 0, true); err != nil {
			t.Errorf("WriteZeroes(%d, 0) = %v", off, err)
		}
	}
	newModel(Size).verifyAll(t, b)
}

// rangeCases are (offset, length) pairs that start, end or cross the usual
// boundaries: sectors, pages, 64 KiB chunks, 1 MiB, and the device's end.
var rangeCases = [][2]int64{
	{0, 1},
	{1, 511},
	{511, 2},
	{4096, 4096},
	{4096 + 7, 4096 - 3},
	{64*kib - 100, 300},
	{64*kib - 1, 64*kib + 2},
	{3*64*kib + 5, 5*64*kib + 11},
	{mib - 4096, 8192},
	{2*mib + 333, 3*mib + 777},
	{Size - 5000, 5000},
	{Size - 1, 1},
}

func testReadAfterWrite(t *testing.T, b backend.Backend) {
	m := newModel(Size)
	for i, r := range rangeCases {
		p := fill(uint64(i), int(r[1]))
		m.write(t, b, p, r[0])
		// Read back exactly what was written, before later writes overlap it.
		if err := verifyRange(b, p, r[0]); err != nil {
			t.Fatalf("case %d (off %d len %d): %v", i, r[0], r[1], err)
		}
	}
	m.verifyAll(t, b)
	// Unaligned reads of written data.
	for _, r := range rangeCases {
		m.verify(t, b, r[0], r[1])
	}
	// Overwrite a region in the middle of earlier data.
	m.write(t, b, fill(99, 10000), 64*kib-5000)
	m.verifyAll(t, b)
}

func testOutOfRange(t *testing.T, b backend.Backend) {
	m := newModel(Size)
	m.write(t, b, fill(1, 8192), Size-8192)

	bad := [][2]int64{
		{-1, 1},
		{Size, 1},
		{Size - 1, 2},
		{Size - 4096, 8192},
		{Size + 4096, 4096},
		{math.MaxInt64 - 1, 4}, // off+n overflows
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("%s: err = %v, want ErrOutOfRange", what, err)
		}
	}
	for _, r := range bad {
		off, n := r[0], r[1]
		_, err := b.ReadAt(make([]byte, n), off)
		check(fmt.Sprintf("ReadAt(%d, %d)", off, n), err)
		_, err = b.WriteAt(fill(2, int(n)), off)
		check(fmt.Sprintf("WriteAt(%d, %d)", off, n), err)
		check(fmt.Sprintf("Discard(%d, %d)", off, n), backend.Discard(b, off, n))
		check(fmt.Sprintf("WriteZeroes(%d, %d, keep)", off, n), backend.WriteZeroes(b, off, n, true))
		check(fmt.Sprintf("WriteZeroes(%d, %d, punch)", off, n), backend.WriteZeroes(b, off, n, false))
		// The capabilities themselves must check too: the helpers check
		// first, but callers may use a capability directly.
		if d, ok := b.(backend.Discarder); ok {
			check(fmt.Sprintf("Discarder.Discard(%d, %d)", off, n), d.Discard(off, n))
		}
		if z, ok := b.(backend.Zeroer); ok {
			check(fmt.Sprintf("Zeroer.WriteZeroes(%d, %d, keep)", off, n), z.WriteZeroes(off, n, true))
			check(fmt.Sprintf("Zeroer.WriteZeroes(%d, %d, punch)", off, n), z.WriteZeroes(off, n, false))
		}
	}
	check("Discard(0, -1)", backend.Discard(b, 0, -1))
	// Nothing may have changed, not even the in-range part of a straddling
	// request.
	m.verifyAll(t, b)
}

// zeroCases are ranges to zero inside written data: whole chunks, parts of
// one chunk, and partial+whole+partial spans.
var zeroCases = [][2]int64{
	{64 * kib, 64 * kib},
	{70000, 100},
	{5*64*kib + 3, 3*64*kib - 7},
	{mib, 4096},
	{mib + 4096 + 1, 1},
	{2*mib - 512, 2*mib + 1024},
	{Size - 64*kib - 5, 64*kib + 5},
}

func testZeroing(t *testing.T, b backend.Backend, zero func(off, n int64) error) {
	m := newModel(Size)
	m.write(t, b, fill(7, Size), 0)
	for i, r := range zeroCases {
		if err := zero(r[0], r[1]); err != nil {
			t.Fatalf("case %d (off %d len %d): %v", i, r[0], r[1], err)
		}
		m.zero(r[0], r[1])
		// The bytes around the range must survive.
		lo, hi := max(r[0]-64*kib, 0), min(r[0]+r[1]+64*kib, Size)
		m.verify(t, b, lo, hi-lo)
	}
	m.verifyAll(t, b)
	// Zeroed ranges are writable again.
	for i, r := range zeroCases {
		m.write(t, b, fill(uint64(100+i), int(min(r[1], 4096))), r[0])
	}
	m.verifyAll(t, b)
	// Zeroing the whole device leaves nothing behind.
	if err := zero(0, Size); err != nil {
		t.Fatal(err)
	}
	m.zero(0, Size)
	m.verifyAll(t, b)
}

func testFlush(t *testing.T, b backend.Backend) {
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush on a new backend: %v", err)
	}
	m := newModel(Size)
	m.write(t, b, fill(3, 100000), 12345)
	if err := b.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := b.Flush(); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	m.verifyAll(t, b)
}

// testRandomOps checks a seeded random mix of operations against the model.
// Offsets are drawn near chunk and sector boundaries more often than not,
// since that is where chunked backends get it wrong.
func testRandomOps(t *testing.T, b backend.Backend) {
	const seed = 20240611
	r := rand.New(rand.NewPCG(seed, 1))
	m := newModel(Size)
	pos := func() int64 {
		switch r.IntN(3) {
		case 0:
			return r.Int64N(Size)
		default:
			unit := []int64{512, 4096, 64 * kib, mib}[r.IntN(4)]
			return min(r.Int64N(Size/unit+1)*unit+r.Int64N(3)-1, Size-1)
		}
	}
	for i := range 400 {
		off := max(pos(), 0)
		n := min(1+r.Int64N([]int64{600, 9000, 200 * kib}[r.IntN(3)]), Size-off)
		var err error
		switch op := r.IntN(10); {
		case op < 5:
			p := fill(uint64(i)+seed, int(n))
			_, err = b.WriteAt(p, off)
			copy(m.data[off:], p)
		case op < 7:
			err = backend.Discard(b, off, n)
			m.zero(off, n)
		case op < 8:
			err = backend.WriteZeroes(b, off, n, r.IntN(2) == 0)
			m.zero(off, n)
		default:
			m.verify(t, b, off, n)
		}
		if err != nil {
			t.Fatalf("seed %d op %d (off %d len %d): %v", seed, i, off, n, err)
		}
	}
	m.verifyAll(t, b)
}

// testConcurrent runs goroutines that own interleaved 4 KiB blocks, so
// neighbours inside one chunk belong to different goroutines: writes,
// read-backs, sub-block writes and discards race on shared chunks without
// overlapping, and a flusher runs beside them.
func testConcurrent(t *testing.T, b backend.Backend) {
	const (
		workers = 8
		block   = 4096
		area    = 2 * mib // the blocks the workers share out
		rounds  = 3
	)
	m := newModel(Size)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		errs  []error
	)
	report := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	stop := make(chan struct{})
	var flushWG sync.WaitGroup
	flushWG.Add(1)
	go func() {
		defer flushWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.Flush(); err != nil {
				report(fmt.Errorf("Flush: %w", err))
				return
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for round := range rounds {
				for blk := int64(w); blk*block < area; blk += workers {
					off := blk * block
					// m.data[off:off+block] belongs to this worker alone.
					mine := m.data[off : off+block]
					var err error
					switch r.IntN(4) {
					case 0, 1:
						p := fill(uint64(blk<<8|int64(round)), block)
						if _, err = b.WriteAt(p, off); err == nil {
							copy(mine, p)
						}
					case 2:
						so, sn := r.IntN(block-1), 1+r.IntN(700)
						sn = min(sn, block-so)
						p := fill(uint64(blk<<8|int64(round))+7, sn)
						if _, err = b.WriteAt(p, off+int64(so)); err == nil {
							copy(mine[so:], p)
						}
					case 3:
						if err = backend.Discard(b, off, block); err == nil {
							clear(mine)
						}
					}
					if err == nil {
						err = verifyRange(b, mine, off)
					}
					if err != nil {
						report(fmt.Errorf("worker %d block %d: %w", w, blk, err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flushWG.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	m.verifyAll(t, b)
}

func testResize(t *testing.T, b backend.Backend) {
	rs, ok := b.(backend.Resizer)
	if !ok {
		t.Skip("backend does not implement backend.Resizer")
	}
	m := newModel(Size)
	m.write(t, b, fill(5, 10000), Size-10000)

	if err := rs.Resize(Size); errors.Is(err, backend.ErrNotSupported) {
		// A wrapper offering Resizer around a backend without it.
		t.Skip(err)
	} else if err != nil {
		t.Fatalf("Resize to the same size: %v", err)
	}
	if err := rs.Resize(Size - 4096); !errors.Is(err, backend.ErrShrink) {
		t.Fatalf("shrinking Resize: err = %v, want ErrShrink", err)
	}
	if got := b.Size(); got != Size {
		t.Fatalf("Size after refused shrink = %d, want %d", got, Size)
	}

	// Grow while another goroutine writes inside the old size.
	const grown = Size + mib + 4096
	done := make(chan error, 1)
	p := fill(6, 64*kib)
	go func() {
		var err error
		for i := range 16 {
			if _, err = b.WriteAt(p, int64(i)*64*kib); err != nil {
				break
			}
		}
		done <- err
	}()
	if err := rs.Resize(grown); err != nil {
		t.Fatalf("Resize(%d): %v", grown, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WriteAt during Resize: %v", err)
	}
	for i := range 16 {
		copy(m.data[i*64*kib:], p)
	}
	if got := b.Size(); got != grown {
		t.Fatalf("Size after Resize = %d, want %d", got, grown)
	}
	m.data = append(m.data, make([]byte, grown-Size)...)
	m.verifyAll(t, b) // old data intact, new range zero

	// The new range is fully usable, up to its last byte.
	m.write(t, b, fill(8, 20000), Size-10000)
	m.write(t, b, fill(9, 4096), grown-4096)
	if err := backend.Discard(b, grown-3000, 1000); err != nil {
		t.Fatal(err)
	}
	m.zero(grown-3000, 1000)
	m.verifyAll(t, b)
	if _, err := b.WriteAt([]byte{1}, grown); !errors.Is(err, backend.ErrOutOfRange) {
		t.Fatalf("WriteAt past the new size: err = %v, want ErrOutOfRange", err)
	}
}

// trickle reads at most step bytes per Read, like a socket that has only
// part of a payload, and fails with err once its data is used up.
type trickle struct {
	data []byte
	step int
	err  error
}

func (r *trickle) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), r.step)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// testReceive checks backend.Receiver, when the backend has it: received
// bytes read back like written ones, whatever sizes the reader hands out;
// a bad range reads nothing; a reader error is returned.
func testReceive(t *testing.T, b backend.Backend) {
	rc, ok := b.(backend.Receiver)
	if !ok {
		t.Skip("backend is not a backend.Receiver")
	}
	m := newModel(Size)
	for i, r := range rangeCases {
		p := fill(uint64(100+i), int(r[1]))
		src := &trickle{data: p, step: 1 + i*777, err: io.EOF}
		if err := rc.ReceiveAt(src, r[0], r[1]); err != nil {
			t.Fatalf("ReceiveAt(off %d, n %d): %v", r[0], r[1], err)
		}
		if len(src.data) != 0 {
			t.Fatalf("ReceiveAt(off %d, n %d) left %d bytes unread", r[0], r[1], len(src.data))
		}
		copy(m.data[r[0]:], p)
		if err := verifyRange(b, p, r[0]); err != nil {
			t.Fatalf("case %d (off %d len %d): %v", i, r[0], r[1], err)
		}
	}
	m.verifyAll(t, b)

	for _, r := range [][2]int64{{-1, 1}, {Size - 1, 2}, {Size + 4096, 4096}, {math.MaxInt64 - 1, 4}} {
		src := &trickle{data: fill(7, 8), step: 8, err: io.EOF}
		if err := rc.ReceiveAt(src, r[0], r[1]); !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("ReceiveAt(off %d, n %d): err = %v, want ErrOutOfRange", r[0], r[1], err)
		}
		if len(src.data) != 8 {
			t.Errorf("ReceiveAt(off %d, n %d) read from r despite the bad range", r[0], r[1])
		}
	}

	// The reader fails after 3000 of 8192 bytes: that error comes back.
	boom := errors.New("connection reset")
	src := &trickle{data: fill(8, 3000), step: 1000, err: boom}
	if err := rc.ReceiveAt(src, 4096, 8192); !errors.Is(err, boom) {
		t.Errorf("ReceiveAt with a failing reader: err = %v, want %v", err, boom)
	}
	// Outside the failed range nothing changed.
	m.verify(t, b, 0, 4096)
	m.verify(t, b, 4096+8192, Size-4096-8192)
}
