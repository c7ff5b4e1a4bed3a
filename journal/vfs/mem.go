package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// SectorSize is the unit in which MemFS.Crash tears unsynced writes: each
// aligned 512-byte piece of an unsynced write survives or not on its own, and
// a surviving piece may itself be torn at a random byte.
const SectorSize = 512

// ErrClosed is returned for operations on a closed MemFS file.
var ErrClosed = errors.New("vfs: file already closed")

// MemFS is an in-memory FS that remembers what is durable, so that Crash can
// produce the filesystem as it would look after a power loss. Directories
// created with MkdirAll are durable at once; file entries follow the SyncDir
// rule; file contents follow the Sync rule. The zero value is not usable:
// call NewMemFS.
type MemFS struct {
	mu   sync.Mutex
	dirs map[string]*memDir
}

type memDir struct {
	cur     map[string]*memInode // what the running system sees
	durable map[string]*memInode // what survives a crash (as of last SyncDir)
}

type memInode struct {
	data   []byte  // current contents
	synced []byte  // contents as of the last Sync
	log    []memOp // operations since the last Sync, in order
}

// memOp is an unsynced change: a write (data at off) or a truncate (size).
type memOp struct {
	truncate bool
	off      int64
	data     []byte
	size     int64
}

// NewMemFS returns an empty MemFS with the root directory "/" and "." present.
func NewMemFS() *MemFS {
	m := &MemFS{dirs: map[string]*memDir{}}
	m.dirs["/"] = newMemDir()
	m.dirs["."] = newMemDir()
	return m
}

func newMemDir() *memDir {
	return &memDir{cur: map[string]*memInode{}, durable: map[string]*memInode{}}
}

func split(name string) (string, string) {
	name = filepath.Clean(name)
	return filepath.Dir(name), filepath.Base(name)
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// OpenFile implements FS.
func (m *MemFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base := split(name)
	d, ok := m.dirs[dir]
	if !ok {
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	ino, exists := d.cur[base]
	switch {
	case exists && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, fs.ErrExist)
	case !exists && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, fs.ErrNotExist)
	case !exists:
		ino = &memInode{}
		d.cur[base] = ino
	}
	readOnly := flag&(os.O_WRONLY|os.O_RDWR) == 0
	if flag&os.O_TRUNC != 0 && !readOnly {
		ino.truncate(0)
	}
	return &memFile{fs: m, ino: ino, name: filepath.Clean(name), readOnly: readOnly}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base := split(name)
	d, ok := m.dirs[dir]
	if !ok {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if _, ok := d.cur[base]; !ok {
		return pathErr("remove", name, fs.ErrNotExist)
	}
	delete(d.cur, base)
	return nil
}

// Rename implements FS. Both names must be in existing directories.
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	od, ob := split(oldname)
	nd, nb := split(newname)
	src, ok := m.dirs[od]
	if !ok {
		return pathErr("rename", oldname, fs.ErrNotExist)
	}
	dst, ok := m.dirs[nd]
	if !ok {
		return pathErr("rename", newname, fs.ErrNotExist)
	}
	ino, ok := src.cur[ob]
	if !ok {
		return pathErr("rename", oldname, fs.ErrNotExist)
	}
	delete(src.cur, ob)
	dst.cur[nb] = ino
	return nil
}

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.dirs[filepath.Clean(dir)]
	if !ok {
		return nil, pathErr("readdir", dir, fs.ErrNotExist)
	}
	names := make([]string, 0, len(d.cur))
	for n := range d.cur {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// MkdirAll implements FS. Directories are durable at once (the journal's
// directory is created by the operator or at first start).
func (m *MemFS) MkdirAll(dir string, perm os.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, ok := m.dirs[p]; !ok {
			m.dirs[p] = newMemDir()
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.dirs[filepath.Clean(dir)]
	if !ok {
		return pathErr("syncdir", dir, fs.ErrNotExist)
	}
	d.durable = make(map[string]*memInode, len(d.cur))
	for n, ino := range d.cur {
		d.durable[n] = ino
	}
	return nil
}

// Crash returns the filesystem as a reboot after a power loss at this
// instant would find it; m itself is left untouched (the "old process" can
// keep running against it without affecting the result). Directory entries
// are those of the last SyncDir; each file starts from its last synced
// contents, then every unsynced operation is replayed in order, each write
// sector by sector with a per-crash survival probability (so: nothing, all,
// or a random subset, torn at random bytes), each truncate with the same
// probability.
func (m *MemFS) Crash(rng *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	var p float64
	switch rng.IntN(4) {
	case 0:
		p = 0
	case 1:
		p = 1
	default:
		p = rng.Float64()
	}
	out := NewMemFS()
	memo := map[*memInode]*memInode{}
	dirs := make([]string, 0, len(m.dirs))
	for name := range m.dirs {
		dirs = append(dirs, name)
	}
	sort.Strings(dirs) // map order must not consume the rng nondeterministically
	for _, dn := range dirs {
		d := m.dirs[dn]
		nd := newMemDir()
		out.dirs[dn] = nd
		names := make([]string, 0, len(d.durable))
		for n := range d.durable {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ino := d.durable[n]
			c, ok := memo[ino]
			if !ok {
				c = ino.crash(rng, p)
				memo[ino] = c
			}
			nd.cur[n] = c
			nd.durable[n] = c
		}
	}
	return out
}

func (ino *memInode) crash(rng *rand.Rand, p float64) *memInode {
	img := append([]byte(nil), ino.synced...)
	for _, op := range ino.log {
		if op.truncate {
			if rng.Float64() < p {
				img = resize(img, op.size)
			}
			continue
		}
		for a := op.off; a < op.off+int64(len(op.data)); {
			b := (a/SectorSize + 1) * SectorSize
			if end := op.off + int64(len(op.data)); b > end {
				b = end
			}
			if rng.Float64() < p {
				n := b - a
				if rng.IntN(8) == 0 {
					n = rng.Int64N(n + 1) // torn inside the sector
				}
				if a+n > int64(len(img)) {
					img = resize(img, a+n)
				}
				copy(img[a:a+n], op.data[a-op.off:])
			}
			a = b
		}
	}
	return &memInode{data: img, synced: append([]byte(nil), img...)}
}

func resize(b []byte, size int64) []byte {
	if size <= int64(len(b)) {
		return b[:size]
	}
	if size <= int64(cap(b)) {
		old := len(b)
		b = b[:size]
		clear(b[old:])
		return b
	}
	nb := make([]byte, size)
	copy(nb, b)
	return nb
}

func (ino *memInode) truncate(size int64) {
	ino.data = resize(ino.data, size)
	ino.log = append(ino.log, memOp{truncate: true, size: size})
}

func (ino *memInode) sync() {
	for _, op := range ino.log {
		if op.truncate {
			ino.synced = resize(ino.synced, op.size)
			continue
		}
		if end := op.off + int64(len(op.data)); end > int64(len(ino.synced)) {
			ino.synced = resize(ino.synced, end)
		}
		copy(ino.synced[op.off:], op.data)
	}
	ino.log = nil
}

type memFile struct {
	fs       *MemFS
	ino      *memInode
	name     string
	readOnly bool
	closed   bool
}

func (f *memFile) check(op string, write bool) error {
	if f.closed {
		return pathErr(op, f.name, ErrClosed)
	}
	if write && f.readOnly {
		return pathErr(op, f.name, fs.ErrPermission)
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("read", f.name, fs.ErrInvalid)
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("write", f.name, fs.ErrInvalid)
	}
	end := off + int64(len(p))
	if end > int64(len(f.ino.data)) {
		f.ino.data = resize(f.ino.data, end)
	}
	copy(f.ino.data[off:], p)
	f.ino.log = append(f.ino.log, memOp{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("sync", false); err != nil {
		return err
	}
	f.ino.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return pathErr("truncate", f.name, fs.ErrInvalid)
	}
	f.ino.truncate(size)
	return nil
}

func (f *memFile) Allocate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("allocate", true); err != nil {
		return err
	}
	if size > int64(len(f.ino.data)) {
		f.ino.truncate(size)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat", false); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return pathErr("close", f.name, ErrClosed)
	}
	f.closed = true
	return nil
}

// ReadFile returns a copy of the current contents of name (a test helper).
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, base := split(name)
	d, ok := m.dirs[dir]
	if !ok {
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	ino, ok := d.cur[base]
	if !ok {
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	return append([]byte(nil), ino.data...), nil
}

// String describes the FS for test failure messages.
func (m *MemFS) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("MemFS(%d dirs)", len(m.dirs))
}
