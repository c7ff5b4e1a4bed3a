package engine

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/twinblock/twinblock/engine/backend"
)

// Errors returned by a Volume, tested with errors.Is.
var (
	ErrReadOnly   = errors.New("engine: volume is read-only")
	ErrOutOfRange = errors.New("engine: range outside the volume")
	ErrClosed     = errors.New("engine: volume closed")
	ErrFailed     = errors.New("engine: volume failed")
)

// VolumeOptions configures a Volume.
type VolumeOptions struct {
	Name     string
	Backend  backend.Backend
	ReadOnly bool
}

// Volume is one exported volume: the object the NBD server calls.
type Volume struct {
	name     string
	be       backend.Backend
	size     uint64
	readOnly bool

	// failed holds the first durability error (a failed backend flush).
	// After it the volume refuses every write and flush: we cannot know
	// what reached the disk, so pretending otherwise would lose data
	// silently (the "fsyncgate" lesson).
	failed atomic.Pointer[error]
	closed atomic.Bool
}

// NewVolume wraps a backend.
func NewVolume(opts VolumeOptions) (*Volume, error) {
	if opts.Backend == nil {
		return nil, fmt.Errorf("engine: volume %q: no backend", opts.Name)
	}
	size := opts.Backend.Size()
	if size <= 0 {
		return nil, fmt.Errorf("engine: volume %q: backend size %d", opts.Name, size)
	}
	return &Volume{name: opts.Name, be: opts.Backend, size: uint64(size), readOnly: opts.ReadOnly}, nil
}

// Name is the volume name.
func (v *Volume) Name() string { return v.name }

// Size is the volume size in bytes.
func (v *Volume) Size() uint64 { return v.size }

// ReadOnly reports whether writes are refused.
func (v *Volume) ReadOnly() bool { return v.readOnly }

func (v *Volume) check(off uint64, n uint64, write bool) error {
	if v.closed.Load() {
		return ErrClosed
	}
	if off > v.size || n > v.size-off {
		return fmt.Errorf("%w: [%d, +%d) of %d", ErrOutOfRange, off, n, v.size)
	}
	if write {
		if v.readOnly {
			return ErrReadOnly
		}
		if p := v.failed.Load(); p != nil {
			return fmt.Errorf("%w: %w", ErrFailed, *p)
		}
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (v *Volume) ReadAt(p []byte, off uint64) error {
	if err := v.check(off, uint64(len(p)), false); err != nil {
		return err
	}
	_, err := v.be.ReadAt(p, int64(off))
	return err
}

// WriteAt writes p at off; with fua it is durable on return.
func (v *Volume) WriteAt(p []byte, off uint64, fua bool) error {
	if err := v.check(off, uint64(len(p)), true); err != nil {
		return err
	}
	if _, err := v.be.WriteAt(p, int64(off)); err != nil {
		return err
	}
	if fua {
		return v.Flush()
	}
	return nil
}

// Trim discards a range; it reads as zeroes afterwards.
func (v *Volume) Trim(off uint64, length uint32, fua bool) error {
	if err := v.check(off, uint64(length), true); err != nil {
		return err
	}
	if err := backend.Discard(v.be, int64(off), int64(length)); err != nil {
		return err
	}
	if fua {
		return v.Flush()
	}
	return nil
}

// WriteZeroes zeroes a range; with noHole the range stays allocated.
func (v *Volume) WriteZeroes(off uint64, length uint32, noHole, fua bool) error {
	if err := v.check(off, uint64(length), true); err != nil {
		return err
	}
	if err := backend.WriteZeroes(v.be, int64(off), int64(length), noHole); err != nil {
		return err
	}
	if fua {
		return v.Flush()
	}
	return nil
}

// Flush makes every completed write durable. A flush error is sticky.
func (v *Volume) Flush() error {
	if err := v.check(0, 0, true); err != nil && !errors.Is(err, ErrReadOnly) {
		return err
	}
	if err := v.be.Flush(); err != nil {
		v.failed.CompareAndSwap(nil, &err)
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	return nil
}

// Close flushes and closes the backend.
func (v *Volume) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	ferr := error(nil)
	if !v.readOnly && v.failed.Load() == nil {
		ferr = v.be.Flush()
	}
	cerr := v.be.Close()
	return errors.Join(ferr, cerr)
}
