package file

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/engine/backend"
)

// ErrExists is returned by Create when the path holds a non-empty file and
// Options.Overwrite is not set. The error also matches fs.ErrExist.
var ErrExists = errors.New("file: refusing to overwrite a non-empty file")

// Options configure Open and Create.
type Options struct {
	// ReadOnly opens the file O_RDONLY; every mutating call returns
	// backend.ErrReadOnly. Create refuses it.
	ReadOnly bool
	// Overwrite lets Create reuse an existing non-empty file. Its old
	// contents are dropped first so the new volume reads as zeroes.
	Overwrite bool
	// Perm is the mode Create gives a new file; 0 means 0o600.
	Perm fs.FileMode
}

// Backend is a backend.Backend on a regular file or a raw block device.
type Backend struct {
	f        *os.File
	rc       syscall.RawConn
	path     string
	readOnly bool
	blockDev bool
	sector   int64 // logical block size; alignment of block device ioctls

	size   atomic.Int64
	closed atomic.Bool

	// Fast paths found missing at run time, so later calls skip straight to
	// the fallback instead of failing a syscall every time.
	noPunch    atomic.Bool
	noZeroRng  atomic.Bool
	noZeroIoct atomic.Bool

	// fdatasync is unix.Fdatasync; tests replace it to make a flush fail.
	fdatasync func(fd int) error

	// flush serializes Flush and holds the sticky error. Serializing is what
	// makes stickiness sound: Linux reports a writeback error once per open
	// file, so a flush running concurrently with the failing one could
	// return nil for writes the failed writeback lost.
	flush struct {
		sync.Mutex
		err error
	}
	// resize serializes Resize.
	resize struct {
		sync.Mutex
	}
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Discarder = (*Backend)(nil)
	_ backend.Zeroer    = (*Backend)(nil)
	_ backend.Resizer   = (*Backend)(nil)
)

// Open opens an existing regular file or raw block device. A block device
// opened read-write is opened O_EXCL, which Linux turns into an exclusive
// claim: the open fails with EBUSY while the device is mounted or claimed by
// another exclusive user, so a volume can never be served on top of a live
// file system.
func Open(path string, opts Options) (*Backend, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("file: open: %w", err)
	}
	flags := os.O_RDWR
	if opts.ReadOnly {
		flags = os.O_RDONLY
	}
	if st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0 && !opts.ReadOnly {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("file: open: %w", err)
	}
	b, err := newBackend(f, path, opts.ReadOnly)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// Create creates a sparse regular file of the given size (ftruncate, so no
// space is allocated until written) and opens it. An existing empty file is
// reused; an existing non-empty file is refused with ErrExists unless
// opts.Overwrite is set. The new file and its directory entry are synced
// before Create returns.
func Create(path string, size int64, opts Options) (*Backend, error) {
	if opts.ReadOnly {
		return nil, fmt.Errorf("file: create %s: read-only: %w", path, backend.ErrConfig)
	}
	if size < 0 {
		return nil, fmt.Errorf("file: create %s: negative size %d: %w", path, size, backend.ErrConfig)
	}
	perm := opts.Perm
	if perm == 0 {
		perm = 0o600
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, fmt.Errorf("file: create: %w", err)
	}
	b, err := create(f, path, size, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

func create(f *os.File, path string, size int64, opts Options) (*Backend, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file: create: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("file: create %s: not a regular file (use Open for block devices): %w", path, backend.ErrConfig)
	}
	if st.Size() > 0 {
		if !opts.Overwrite {
			return nil, fmt.Errorf("%w: %s holds %d bytes: %w", ErrExists, path, st.Size(), fs.ErrExist)
		}
		// Truncating to zero first frees the old blocks, so the new volume
		// reads as zeroes everywhere, not just past the old size.
		if err := f.Truncate(0); err != nil {
			return nil, fmt.Errorf("file: create: %w", err)
		}
	}
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("file: create: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("file: create: sync: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return newBackend(f, path, false)
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("file: sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("file: sync directory %s: %w", dir, err)
	}
	return nil
}

func newBackend(f *os.File, path string, readOnly bool) (*Backend, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("file: open %s: %w", path, err)
	}
	b := &Backend{f: f, rc: rc, path: path, readOnly: readOnly, fdatasync: unix.Fdatasync}
	var st unix.Stat_t
	if err := b.control(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return nil, fmt.Errorf("file: stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b.size.Store(st.Size)
	case unix.S_IFBLK:
		b.blockDev = true
		size, err := b.deviceSize()
		if err != nil {
			return nil, err
		}
		b.size.Store(size)
		var sector int
		err = b.control(func(fd int) (err error) {
			sector, err = unix.IoctlGetInt(fd, unix.BLKSSZGET)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("file: %s: BLKSSZGET: %w", path, err)
		}
		if sector <= 0 || sector&(sector-1) != 0 {
			return nil, fmt.Errorf("file: %s: odd logical block size %d: %w", path, sector, backend.ErrConfig)
		}
		b.sector = int64(sector)
	default:
		return nil, fmt.Errorf("file: %s: not a regular file or block device: %w", path, backend.ErrConfig)
	}
	return b, nil
}

func (b *Backend) deviceSize() (int64, error) {
	var size uint64
	err := b.control(func(fd int) error {
		return ioctlPtr(fd, unix.BLKGETSIZE64, unsafe.Pointer(&size))
	})
	if err != nil {
		return 0, fmt.Errorf("file: %s: BLKGETSIZE64: %w", b.path, err)
	}
	return int64(size), nil
}

// ioctlPtr issues an ioctl whose argument is a pointer, retrying EINTR.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		if errno != unix.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}

// control runs fn on the file descriptor. The descriptor cannot be closed
// while fn runs; after Close it returns backend.ErrClosed.
func (b *Backend) control(fn func(fd int) error) error {
	var opErr error
	if err := b.rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		return mapErr(err)
	}
	return opErr
}

// mapErr turns a use-after-close into backend.ErrClosed.
func mapErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("file: %w", backend.ErrClosed)
	}
	return err
}

// Path returns the path the backend was opened with.
func (b *Backend) Path() string { return b.path }

// IsBlockDevice reports whether the backend is a raw block device.
func (b *Backend) IsBlockDevice() bool { return b.blockDev }

// Size returns the size in bytes.
func (b *Backend) Size() int64 { return b.size.Load() }

func (b *Backend) checkWrite(off, n int64) error {
	if b.closed.Load() {
		return fmt.Errorf("file: %w", backend.ErrClosed)
	}
	if b.readOnly {
		return fmt.Errorf("file: %s: %w", b.path, backend.ErrReadOnly)
	}
	return backend.CheckRange(b.size.Load(), off, n)
}

// ReadAt reads len(p) bytes at off (pread).
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if b.closed.Load() {
		return 0, fmt.Errorf("file: %w", backend.ErrClosed)
	}
	if err := backend.CheckRange(b.size.Load(), off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := b.f.ReadAt(p, off)
	if err == io.EOF {
		// Inside Size, so the file was truncated behind our back.
		return n, fmt.Errorf("file: %s: short read at %d (%d of %d bytes): %w", b.path, off, n, len(p), io.ErrUnexpectedEOF)
	}
	if err != nil {
		return n, mapErr(err)
	}
	return n, nil
}

// WriteAt writes p at off (pwrite).
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if err := b.checkWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := b.f.WriteAt(p, off)
	if err != nil {
		return n, mapErr(err)
	}
	return n, nil
}

// StartWriteback starts writeback of every dirty page of the file and
// returns without waiting for it (backend.Writebacker); a block device
// opened here goes through the page cache too.
func (b *Backend) StartWriteback() error {
	if b.readOnly {
		return nil
	}
	if b.closed.Load() {
		return fmt.Errorf("file: %w", backend.ErrClosed)
	}
	return b.control(func(fd int) error {
		return unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// Flush makes every completed write durable with fdatasync. After it fails
// once, every later Flush returns the same error: the kernel may already
// have dropped the dirty pages it could not write, so a later fdatasync that
// succeeds proves nothing about them (PostgreSQL's "fsyncgate").
func (b *Backend) Flush() error {
	b.flush.Lock()
	defer b.flush.Unlock()
	if b.flush.err != nil {
		return b.flush.err
	}
	if b.closed.Load() {
		return fmt.Errorf("file: %w", backend.ErrClosed)
	}
	if b.readOnly {
		return nil
	}
	err := b.control(func(fd int) error {
		for {
			if err := b.fdatasync(fd); err != unix.EINTR {
				return err
			}
		}
	})
	if errors.Is(err, backend.ErrClosed) {
		return err // a use after Close says nothing about durability
	}
	if err != nil {
		b.flush.err = fmt.Errorf("file: %s: fdatasync: %w", b.path, err)
		return b.flush.err
	}
	return nil
}

// Discard deallocates [off, off+n); afterwards it reads as zeroes.
//
// Regular file: fallocate(PUNCH_HOLE|KEEP_SIZE). Block device: the same
// fallocate call, which Linux implements with a zeroing unmap that is
// guaranteed to read back as zeroes (unlike BLKDISCARD, whose result is
// device-specific), falling back to BLKZEROOUT. If neither is supported the
// range is overwritten with zeroes.
func (b *Backend) Discard(off, n int64) error {
	if err := b.checkWrite(off, n); err != nil {
		return err
	}
	return b.zero(off, n, false)
}

// WriteZeroes makes [off, off+n) read as zeroes. With keepAllocated it uses
// fallocate(ZERO_RANGE|KEEP_SIZE), which keeps the blocks allocated
// (BLKZEROOUT as the block device fallback, which never unmaps); without it,
// it is Discard. Zeroes are written when the file system or device supports
// neither.
func (b *Backend) WriteZeroes(off, n int64, keepAllocated bool) error {
	if err := b.checkWrite(off, n); err != nil {
		return err
	}
	return b.zero(off, n, keepAllocated)
}

func (b *Backend) zero(off, n int64, keepAllocated bool) error {
	if n == 0 {
		return nil
	}
	if !b.blockDev {
		return b.zeroRange(off, n, keepAllocated)
	}
	// Block device requests must be aligned to the logical block size:
	// write the unaligned head and tail, hand the aligned middle to the
	// device.
	end := off + n
	astart := (off + b.sector - 1) &^ (b.sector - 1)
	aend := end &^ (b.sector - 1)
	if astart >= aend {
		return backend.ZeroFill(b, off, n)
	}
	if astart > off {
		if err := backend.ZeroFill(b, off, astart-off); err != nil {
			return err
		}
	}
	if err := b.zeroRange(astart, aend-astart, keepAllocated); err != nil {
		return err
	}
	if end > aend {
		return backend.ZeroFill(b, aend, end-aend)
	}
	return nil
}

// zeroRange tries the fast paths in order and remembers which ones the file
// system or device lacks.
func (b *Backend) zeroRange(off, n int64, keepAllocated bool) error {
	mode, missing := uint32(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE), &b.noPunch
	if keepAllocated {
		mode, missing = unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, &b.noZeroRng
	}
	if !missing.Load() {
		err := b.control(func(fd int) error { return fallocate(fd, mode, off, n) })
		if err == nil || !unsupported(err) {
			if err != nil {
				return fmt.Errorf("file: %s: fallocate(mode %#x, %d, %d): %w", b.path, mode, off, n, err)
			}
			return nil
		}
		missing.Store(true)
	}
	if b.blockDev && !b.noZeroIoct.Load() {
		r := [2]uint64{uint64(off), uint64(n)}
		err := b.control(func(fd int) error { return ioctlPtr(fd, unix.BLKZEROOUT, unsafe.Pointer(&r)) })
		if err == nil || !unsupported(err) {
			if err != nil {
				return fmt.Errorf("file: %s: BLKZEROOUT(%d, %d): %w", b.path, off, n, err)
			}
			return nil
		}
		b.noZeroIoct.Store(true)
	}
	return backend.ZeroFill(b, off, n)
}

func fallocate(fd int, mode uint32, off, n int64) error {
	for {
		if err := unix.Fallocate(fd, mode, off, n); err != unix.EINTR {
			return err
		}
	}
}

// unsupported reports whether err means "this file system or device cannot
// do that", as opposed to a real I/O error that must be returned.
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENODEV)
}

// Resize grows the volume. A regular file is extended with ftruncate (the
// new range is a hole, reading as zeroes) and the new size made durable
// with Flush. A block device cannot be grown from here: grow it first (for
// example lvextend), then Resize to any size up to the device's new size.
// Shrinking is refused with backend.ErrShrink.
func (b *Backend) Resize(size int64) error {
	if b.closed.Load() {
		return fmt.Errorf("file: %w", backend.ErrClosed)
	}
	if b.readOnly {
		return fmt.Errorf("file: %s: %w", b.path, backend.ErrReadOnly)
	}
	b.resize.Lock()
	defer b.resize.Unlock()
	cur := b.size.Load()
	switch {
	case size < cur:
		return fmt.Errorf("file: resize %s from %d to %d: %w", b.path, cur, size, backend.ErrShrink)
	case size == cur:
		return nil
	}
	if b.blockDev {
		dev, err := b.deviceSize()
		if err != nil {
			return err
		}
		if size > dev {
			return fmt.Errorf("file: resize %s to %d: the device holds only %d bytes: %w", b.path, size, dev, backend.ErrOutOfRange)
		}
		b.size.Store(size)
		return nil
	}
	if err := b.f.Truncate(size); err != nil {
		return fmt.Errorf("file: resize %s: %w", b.path, mapErr(err))
	}
	b.size.Store(size)
	return b.Flush()
}

// Close closes the file. A second Close returns nil. Close does not flush:
// durability is what Flush is for.
func (b *Backend) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := b.f.Close(); err != nil {
		return fmt.Errorf("file: close %s: %w", b.path, err)
	}
	return nil
}
