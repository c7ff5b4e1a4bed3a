//go:build ceph && pacific

package rbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/twinblock/twinblock/engine/backend"
)

// Supported reports whether this build can open RBD images.
const Supported = true

// Backend is an open RBD image. All methods are safe for concurrent use.
type Backend struct {
	conn  *rados.Conn
	ioctx *rados.IOContext
	img   *librbd.Image
	spec  string

	readOnly bool
	size     atomic.Int64

	// mu is held shared by every call into librbd and exclusively by
	// Close, so the image handle is never freed under a request.
	mu     sync.RWMutex
	closed bool

	resize sync.Mutex
	flush  struct {
		sync.Mutex
		err error
	}
}

var _ interface {
	backend.Backend
	backend.Discarder
	backend.Zeroer
	backend.Resizer
} = (*Backend)(nil)

// Open opens an existing image.
func Open(opts Options) (backend.Backend, error) {
	return open(opts, -1)
}

// Create makes a new image of size bytes (ErrExists if one of that name is
// there) and opens it. The new image reads as zeroes.
func Create(opts Options, size int64) (backend.Backend, error) {
	if size <= 0 {
		return nil, fmt.Errorf("rbd: create %s: size %d must be positive: %w", opts.Spec(), size, backend.ErrConfig)
	}
	if opts.ReadOnly {
		return nil, fmt.Errorf("rbd: create %s: read-only: %w", opts.Spec(), backend.ErrConfig)
	}
	return open(opts, size)
}

// open connects and opens the image; createSize >= 0 creates it first.
func open(opts Options, createSize int64) (*Backend, error) {
	opts.defaults()
	if err := opts.Check(); err != nil {
		return nil, err
	}
	spec := opts.Spec()
	conn, err := connect(opts)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Shutdown()
		}
	}()
	ioctx, err := conn.OpenIOContext(opts.Pool)
	if err != nil {
		if errnoOf(err) == syscall.ENOENT {
			return nil, configErr(ErrNoPool, nil, "%q does not exist (ceph osd pool ls)", opts.Pool)
		}
		return nil, describe(err, opts, fmt.Sprintf("opening pool %q", opts.Pool))
	}
	defer func() {
		if !ok {
			ioctx.Destroy()
		}
	}()
	if opts.Namespace != "" {
		exists, err := librbd.NamespaceExists(ioctx, opts.Namespace)
		if err != nil {
			return nil, describe(err, opts, fmt.Sprintf("namespace %q in pool %q", opts.Namespace, opts.Pool))
		}
		if !exists {
			return nil, configErr(ErrNoNamespace, nil, "%q does not exist in pool %q (rbd namespace create %s/%s)",
				opts.Namespace, opts.Pool, opts.Pool, opts.Namespace)
		}
		ioctx.SetNamespace(opts.Namespace)
	}
	if createSize >= 0 {
		if err := createImage(ioctx, opts.Image, createSize); err != nil {
			if errnoOf(err) == syscall.EEXIST {
				return nil, configErr(ErrExists, nil, "%s", spec)
			}
			return nil, describe(err, opts, "create "+spec)
		}
	}
	var img *librbd.Image
	if opts.ReadOnly {
		img, err = librbd.OpenImageReadOnly(ioctx, opts.Image, librbd.NoSnapshot)
	} else {
		img, err = librbd.OpenImage(ioctx, opts.Image, librbd.NoSnapshot)
	}
	if err != nil {
		if errnoOf(err) == syscall.ENOENT {
			return nil, configErr(ErrNoImage, nil, "%s does not exist (rbd ls %s)", spec, opts.Pool)
		}
		return nil, describe(err, opts, "open "+spec)
	}
	size, err := img.GetSize()
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("rbd: %s: size: %w", spec, err)
	}
	if size > 1<<62 {
		img.Close()
		return nil, fmt.Errorf("rbd: %s: size %d out of range: %w", spec, size, backend.ErrConfig)
	}
	b := &Backend{conn: conn, ioctx: ioctx, img: img, spec: spec, readOnly: opts.ReadOnly}
	b.size.Store(int64(size))
	ok = true
	return b, nil
}

// connect reads the config, applies the settings the backend forces, and
// reaches the monitors within opts.ConnectTimeout.
func connect(opts Options) (*rados.Conn, error) {
	if _, err := os.Stat(opts.ConfFile); err != nil {
		return nil, fmt.Errorf("rbd: ceph_conf: %w: %w", err, backend.ErrConfig)
	}
	if opts.Keyring != "" {
		if _, err := os.Stat(opts.Keyring); err != nil {
			return nil, fmt.Errorf("rbd: keyring: %w: %w", err, backend.ErrConfig)
		}
	}
	conn, err := rados.NewConnWithUser(opts.Client)
	if err != nil {
		return nil, fmt.Errorf("rbd: client %q: %w", opts.Client, err)
	}
	if err := conn.ReadConfigFile(opts.ConfFile); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("rbd: reading %s: %w: %w", opts.ConfFile, err, backend.ErrConfig)
	}
	secs := func(d interface{ Seconds() float64 }) string {
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
	}
	set := [][2]string{
		{"rbd_cache", "false"},
		{"rbd_skip_partial_discard", "false"},
		{"rbd_discard_on_zeroed_write_same", "false"},
		{"client_mount_timeout", secs(opts.ConnectTimeout)},
		{"rados_mon_op_timeout", secs(opts.ConnectTimeout)},
	}
	if opts.OpTimeout > 0 {
		set = append(set, [2]string{"rados_osd_op_timeout", secs(opts.OpTimeout)})
	}
	if opts.Keyring != "" {
		set = append(set, [2]string{"keyring", opts.Keyring})
	}
	for _, kv := range set {
		if err := conn.SetConfigOption(kv[0], kv[1]); err != nil {
			conn.Shutdown()
			return nil, fmt.Errorf("rbd: setting %s=%s: %w", kv[0], kv[1], err)
		}
	}
	if err := conn.Connect(); err != nil {
		conn.Shutdown()
		return nil, describe(err, opts, fmt.Sprintf("connecting as client.%s with %s", opts.Client, opts.ConfFile))
	}
	return conn, nil
}

// describe turns the errno of a failed connect or cluster request into
// one of the package's errors where it names a configuration problem, and
// otherwise wraps it with what was being done.
func describe(err error, opts Options, doing string) error {
	switch errnoOf(err) {
	case syscall.ETIMEDOUT:
		mon, _ := monHost(opts)
		return configErr(ErrUnreachable, err, "no monitor answered within %v (mon_host %s in %s)",
			opts.ConnectTimeout, mon, opts.ConfFile)
	case syscall.EACCES, syscall.EPERM:
		kr := opts.Keyring
		if kr == "" {
			kr = "the keyring ceph.conf names"
		}
		return configErr(ErrAuth, err, "%s: client.%s was refused (check its key in %s and its caps: ceph auth get client.%s)",
			doing, opts.Client, kr, opts.Client)
	case syscall.ENOENT:
		if strings.HasPrefix(doing, "connecting") {
			// librados says ENOENT at connect time when it finds no key.
			return configErr(ErrAuth, err, "no key found for client.%s (set keyring)", opts.Client)
		}
	}
	return fmt.Errorf("rbd: %s: %w", doing, err)
}

// monHost reads mon_host for error messages.
func monHost(opts Options) (string, error) {
	conn, err := rados.NewConnWithUser(opts.Client)
	if err != nil {
		return "?", err
	}
	defer conn.Shutdown()
	if err := conn.ReadConfigFile(opts.ConfFile); err != nil {
		return "?", err
	}
	return conn.GetConfigOption("mon_host")
}

// errnoOf extracts the (positive) errno of a go-ceph error, 0 if none.
func errnoOf(err error) syscall.Errno {
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		c := ce.ErrorCode()
		if c < 0 {
			c = -c
		}
		return syscall.Errno(c)
	}
	if errors.Is(err, librbd.ErrNotFound) {
		return syscall.ENOENT
	}
	return 0
}

// createImage makes an image with only the layering feature (see the
// package comment for why not exclusive-lock).
func createImage(ioctx *rados.IOContext, name string, size int64) error {
	ro := librbd.NewRbdImageOptions()
	defer ro.Destroy()
	if err := ro.SetUint64(librbd.ImageOptionFeatures, librbd.FeatureLayering); err != nil {
		return err
	}
	return librbd.CreateImage(ioctx, name, uint64(size), ro)
}

// Spec returns pool[/namespace]/image.
func (b *Backend) Spec() string { return b.spec }

// Size returns the image size in bytes.
func (b *Backend) Size() int64 { return b.size.Load() }

// enter takes the shared lock for one librbd call; the caller must call
// b.mu.RUnlock when err is nil.
func (b *Backend) enter() error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("rbd: %w", backend.ErrClosed)
	}
	return nil
}

func (b *Backend) enterWrite(off, n int64) error {
	if err := b.enter(); err != nil {
		return err
	}
	if b.readOnly {
		b.mu.RUnlock()
		return fmt.Errorf("rbd: %s: %w", b.spec, backend.ErrReadOnly)
	}
	if err := backend.CheckRange(b.size.Load(), off, n); err != nil {
		b.mu.RUnlock()
		return err
	}
	return nil
}

// ReadAt reads len(p) bytes at off (rbd_read).
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	if err := backend.CheckRange(b.size.Load(), off, int64(len(p))); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.img.ReadAt(p, off)
	if err == io.EOF {
		return n, fmt.Errorf("rbd: %s: short read at %d (%d of %d bytes; image shrunk behind our back?): %w",
			b.spec, off, n, len(p), io.ErrUnexpectedEOF)
	}
	if err != nil {
		return n, fmt.Errorf("rbd: %s: read %d at %d: %w", b.spec, len(p), off, err)
	}
	return n, nil
}

// WriteAt writes p at off (rbd_write). With the cache off, the data is on
// the OSDs when it returns.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	if err := b.enterWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	defer b.mu.RUnlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.img.WriteAt(p, off)
	if err == io.EOF {
		return n, fmt.Errorf("rbd: %s: short write at %d (%d of %d bytes): %w", b.spec, off, n, len(p), io.ErrShortWrite)
	}
	if err != nil {
		return n, fmt.Errorf("rbd: %s: write %d at %d: %w", b.spec, len(p), off, err)
	}
	return n, nil
}

// Flush makes every completed write durable (rbd_flush). Its first error is
// returned by every later call.
func (b *Backend) Flush() error {
	b.flush.Lock()
	defer b.flush.Unlock()
	if b.flush.err != nil {
		return b.flush.err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	if b.readOnly {
		return nil
	}
	if err := b.img.Flush(); err != nil {
		b.flush.err = fmt.Errorf("rbd: %s: flush: %w", b.spec, err)
		return b.flush.err
	}
	return nil
}

// Discard releases [off, off+n) (rbd_discard); it reads as zeroes after,
// partial objects included (rbd_skip_partial_discard is off).
func (b *Backend) Discard(off, n int64) error {
	if err := b.enterWrite(off, n); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	return b.discardLocked(off, n)
}

func (b *Backend) discardLocked(off, n int64) error {
	if n == 0 {
		return nil
	}
	if _, err := b.img.Discard(uint64(off), uint64(n)); err != nil {
		return fmt.Errorf("rbd: %s: discard %d at %d: %w", b.spec, n, off, err)
	}
	return nil
}

// zeroSector is the pattern rbd_writesame repeats.
var zeroSector [512]byte

// WriteZeroes makes [off, off+n) read as zeroes. keepAllocated writes them
// (rbd_writesame of a zero sector, which librbd is told not to turn into a
// discard); otherwise it is Discard.
func (b *Backend) WriteZeroes(off, n int64, keepAllocated bool) error {
	if err := b.enterWrite(off, n); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	if !keepAllocated {
		return b.discardLocked(off, n)
	}
	whole := n - n%int64(len(zeroSector))
	if whole > 0 {
		if _, err := b.img.WriteSame(uint64(off), uint64(whole), zeroSector[:], 0); err != nil {
			return fmt.Errorf("rbd: %s: writesame zeroes %d at %d: %w", b.spec, whole, off, err)
		}
	}
	if tail := n - whole; tail > 0 {
		if _, err := b.img.WriteAt(zeroSector[:tail], off+whole); err != nil {
			return fmt.Errorf("rbd: %s: write zeroes %d at %d: %w", b.spec, tail, off+whole, err)
		}
	}
	return nil
}

// Resize grows the image online (rbd_resize); I/O inside the old size goes
// on meanwhile. Shrinking is refused with backend.ErrShrink.
func (b *Backend) Resize(size int64) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.mu.RUnlock()
	if b.readOnly {
		return fmt.Errorf("rbd: %s: %w", b.spec, backend.ErrReadOnly)
	}
	b.resize.Lock()
	defer b.resize.Unlock()
	cur := b.size.Load()
	switch {
	case size < cur:
		return fmt.Errorf("rbd: resize %s from %d to %d: %w", b.spec, cur, size, backend.ErrShrink)
	case size == cur:
		return nil
	}
	if err := b.img.Resize(uint64(size)); err != nil {
		return fmt.Errorf("rbd: resize %s to %d: %w", b.spec, size, err)
	}
	b.size.Store(size)
	return nil
}

// Close closes the image and the cluster connection, after every request
// in flight has returned. A second Close returns nil. Close does not flush.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.img.Close()
	b.ioctx.Destroy()
	b.conn.Shutdown()
	if err != nil {
		return fmt.Errorf("rbd: close %s: %w", b.spec, err)
	}
	return nil
}

// Remove deletes the image (twinblock create's cleanup after a failure
// past the image's creation). The image must not be open anywhere.
func Remove(opts Options) error {
	opts.defaults()
	if err := opts.Check(); err != nil {
		return err
	}
	conn, err := connect(opts)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	ioctx, err := conn.OpenIOContext(opts.Pool)
	if err != nil {
		return describe(err, opts, "remove "+opts.Spec())
	}
	defer ioctx.Destroy()
	ioctx.SetNamespace(opts.Namespace)
	if err := librbd.RemoveImage(ioctx, opts.Image); err != nil {
		return fmt.Errorf("rbd: remove %s: %w", opts.Spec(), err)
	}
	return nil
}
