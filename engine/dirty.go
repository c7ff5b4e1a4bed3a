package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// dirtyMap is the primary's record of the regions its peer may lack: one bit
// per region (a power of two, 4 KiB .. 1 GiB). It is in use ("tracking")
// while the peer needs a block resync: the journal no longer holds what the
// peer lacks, so every write that does not reach the peer live marks its
// regions, and a region is cleared only once a resync pass has verified or
// sent it and the peer holds it durably.
//
// It is saved whole (write temp, fsync, rename, fsync dir) by the engine
// before each journal checkpoint while tracking, so a mark is on disk
// before the journal record it stands for can be trimmed. Format: see
// docs/formats.md ("Dirty-region map").
type dirtyMap struct {
	// saveMu serialises saves: each writes the same temporary file, and
	// the image encoded last must be the one renamed into place last.
	saveMu     sync.Mutex
	mu         sync.Mutex
	path       string // "" keeps it in memory only (tests)
	regionSize uint64
	size       uint64 // volume size
	words      []uint64
	count      uint64 // set bits
	syncID     uint64 // the resync session these marks belong to
	fromSeq    uint64 // the peer held every record through fromSeq outside marked regions
	changed    bool   // since the last save
}

const (
	dirtyMagic      = "TBDIRTY\x00"
	dirtyVersion    = 1
	dirtyHeaderSize = 8 + 4 + 4 + 8 + 8 + 8 + 8 // magic, version, region shift, size, sync id, from seq, bits
	minRegionShift  = 12
	maxRegionShift  = 30
	maxDirtyVolume  = 1 << 60
)

func newDirtyMap(path string, regionSize, size uint64) (*dirtyMap, error) {
	if regionSize == 0 || regionSize&(regionSize-1) != 0 || regionSize < 1<<minRegionShift || regionSize > 1<<maxRegionShift {
		return nil, fmt.Errorf("engine: dirty map region size %d: want a power of two from 4K to 1G", regionSize)
	}
	if size == 0 || size > maxDirtyVolume {
		return nil, fmt.Errorf("engine: dirty map for a %d-byte volume", size)
	}
	n := (size + regionSize - 1) / regionSize
	return &dirtyMap{path: path, regionSize: regionSize, size: size, words: make([]uint64, (n+63)/64)}, nil
}

func (m *dirtyMap) regions() uint64 { return (m.size + m.regionSize - 1) / m.regionSize }

// mark sets the regions [off, off+n) touches.
func (m *dirtyMap) mark(off, n uint64) {
	if n == 0 || off >= m.size {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	last := min(off+n, m.size) - 1
	for r := off / m.regionSize; r <= last/m.regionSize; r++ {
		w, b := r/64, uint64(1)<<(r%64)
		if m.words[w]&b == 0 {
			m.words[w] |= b
			m.count++
			m.changed = true
		}
	}
}

// setAll marks every region (a full resync) under a new session id.
func (m *dirtyMap) setAll(syncID, fromSeq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.regions()
	for i := range m.words {
		m.words[i] = ^uint64(0)
	}
	if r := n % 64; r != 0 {
		m.words[len(m.words)-1] = 1<<r - 1
	}
	m.count = n
	m.syncID, m.fromSeq = syncID, fromSeq
	m.changed = true
}

// reset clears every mark and starts a new session.
func (m *dirtyMap) reset(syncID, fromSeq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.words)
	m.count = 0
	m.syncID, m.fromSeq = syncID, fromSeq
	m.changed = true
}

// clearRange clears the regions that lie wholly inside [off, off+n) (a
// region cut by the end of the volume counts as whole).
func (m *dirtyMap) clearRange(off, n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	end := min(off+n, m.size)
	for r := (off + m.regionSize - 1) / m.regionSize; r < m.regions(); r++ {
		rs := r * m.regionSize
		if min(rs+m.regionSize, m.size) > end {
			break
		}
		w, b := r/64, uint64(1)<<(r%64)
		if m.words[w]&b != 0 {
			m.words[w] &^= b
			m.count--
			m.changed = true
		}
	}
}

// next returns the first marked run at or after off: its start and length
// (whole regions, at most max bytes, cut at the end of the volume).
func (m *dirtyMap) next(off, max uint64) (start, n uint64, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	nr := m.regions()
	r := off / m.regionSize
	for r < nr {
		w := m.words[r/64] >> (r % 64)
		if w == 0 {
			r = (r/64 + 1) * 64
			continue
		}
		r += uint64(bits.TrailingZeros64(w))
		break
	}
	if r >= nr {
		return 0, 0, false
	}
	start = r * m.regionSize
	end := start
	for r < nr && m.words[r/64]&(1<<(r%64)) != 0 && end-start < max {
		r++
		end = min(r*m.regionSize, m.size)
	}
	return start, end - start, true
}

// dirtyBytes is the size of the marked regions.
func (m *dirtyMap) dirtyBytes() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.count * m.regionSize
	if n := m.regions(); m.count > 0 && m.words[(n-1)/64]&(1<<((n-1)%64)) != 0 {
		b -= n*m.regionSize - m.size // the last region is short
	}
	return b
}

func (m *dirtyMap) session() (syncID, fromSeq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncID, m.fromSeq
}

// encode returns the file image: header, bit words, xxhash64 of both.
func (m *dirtyMap) encodeLocked() []byte {
	le := binary.LittleEndian
	b := make([]byte, 0, dirtyHeaderSize+8*len(m.words)+8)
	b = append(b, dirtyMagic...)
	b = le.AppendUint32(b, dirtyVersion)
	b = le.AppendUint32(b, uint32(bits.TrailingZeros64(m.regionSize)))
	b = le.AppendUint64(b, m.size)
	b = le.AppendUint64(b, m.syncID)
	b = le.AppendUint64(b, m.fromSeq)
	b = le.AppendUint64(b, m.regions())
	for _, w := range m.words {
		b = le.AppendUint64(b, w)
	}
	return le.AppendUint64(b, xxhash.Sum64(b))
}

// errDirtyMap marks a damaged or foreign dirty-map file.
var errDirtyMap = errors.New("engine: dirty map")

// decodeDirtyMap parses a file image. Lengths are checked against the
// header before anything is allocated.
func decodeDirtyMap(b []byte) (*dirtyMap, error) {
	le := binary.LittleEndian
	if len(b) < dirtyHeaderSize+8 {
		return nil, fmt.Errorf("%w: %d bytes, too short", errDirtyMap, len(b))
	}
	if string(b[:8]) != dirtyMagic {
		return nil, fmt.Errorf("%w: bad magic", errDirtyMap)
	}
	if v := le.Uint32(b[8:]); v != dirtyVersion {
		return nil, fmt.Errorf("%w: version %d not supported", errDirtyMap, v)
	}
	shift := le.Uint32(b[12:])
	if shift < minRegionShift || shift > maxRegionShift {
		return nil, fmt.Errorf("%w: region shift %d", errDirtyMap, shift)
	}
	size := le.Uint64(b[16:])
	if size == 0 || size > maxDirtyVolume {
		return nil, fmt.Errorf("%w: volume size %d", errDirtyMap, size)
	}
	m := &dirtyMap{regionSize: 1 << shift, size: size, syncID: le.Uint64(b[24:]), fromSeq: le.Uint64(b[32:])}
	if nb := le.Uint64(b[40:]); nb != m.regions() {
		return nil, fmt.Errorf("%w: %d bits for %d regions", errDirtyMap, nb, m.regions())
	}
	nw := (m.regions() + 63) / 64
	if uint64(len(b)) != dirtyHeaderSize+8*nw+8 {
		return nil, fmt.Errorf("%w: %d bytes, want %d", errDirtyMap, len(b), dirtyHeaderSize+8*nw+8)
	}
	body := b[:len(b)-8]
	if sum := le.Uint64(b[len(b)-8:]); sum != xxhash.Sum64(body) {
		return nil, fmt.Errorf("%w: checksum mismatch", errDirtyMap)
	}
	m.words = make([]uint64, nw)
	for i := range m.words {
		m.words[i] = le.Uint64(body[dirtyHeaderSize+8*i:])
		m.count += uint64(bits.OnesCount64(m.words[i]))
	}
	if r := m.regions() % 64; r != 0 && m.words[nw-1]>>r != 0 {
		return nil, fmt.Errorf("%w: bits set past the last region", errDirtyMap)
	}
	return m, nil
}

// loadDirtyMap reads path; a missing file is (nil, nil).
func loadDirtyMap(path string) (*dirtyMap, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: dirty map: %w", err)
	}
	m, err := decodeDirtyMap(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.path = path
	return m, nil
}

// save writes the map if it changed since the last save.
func (m *dirtyMap) save() error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	if !m.changed || m.path == "" {
		m.mu.Unlock()
		return nil
	}
	img := m.encodeLocked()
	m.changed = false
	m.mu.Unlock()
	if err := writeFileSync(m.path, img); err != nil {
		m.mu.Lock()
		m.changed = true
		m.mu.Unlock()
		return fmt.Errorf("engine: saving dirty map: %w", err)
	}
	return nil
}

// writeFileSync replaces path atomically and durably: temp file, fsync,
// rename, fsync of the directory.
func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
