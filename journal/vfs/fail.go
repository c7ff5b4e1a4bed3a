package vfs

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// ErrInjected is the error FailFS injects.
var ErrInjected = errors.New("vfs: injected error")

// FailFS wraps an FS and fails exactly one operation: the one with index
// FailAt (0-based), counting every operation on the FS and on every file it
// opened (OpenFile, Remove, Rename, List, MkdirAll, SyncDir, ReadAt, WriteAt,
// Sync, Truncate, Allocate, Size, Close). The failed operation has no
// effect. Later operations succeed again, which checks that callers do not
// forget an error because things seem fine afterwards.
//
// The pebble-style sweep: for i := 0; ; i++ { run with NewFailFS(fs, i);
// stop once !Injected() }.
type FailFS struct {
	inner FS
	mu    struct {
		sync.Mutex
		n        int64
		failAt   int64
		injected string // operation that was failed, "" if none
	}
}

// NewFailFS returns a FailFS failing operation failAt; a negative failAt
// never fails (to count operations).
func NewFailFS(inner FS, failAt int64) *FailFS {
	f := &FailFS{inner: inner}
	f.mu.failAt = failAt
	return f
}

// Ops returns how many operations have been counted.
func (f *FailFS) Ops() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.n
}

// Injected reports whether the failure was injected, and into which
// operation ("Sync /dir/x", ...).
func (f *FailFS) Injected() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mu.injected, f.mu.injected != ""
}

func (f *FailFS) op(name, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.mu.n
	f.mu.n++
	if i != f.mu.failAt {
		return nil
	}
	f.mu.injected = name + " " + path
	return fmt.Errorf("%w (operation %d: %s %s)", ErrInjected, i, name, path)
}

func (f *FailFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if err := f.op("OpenFile", name); err != nil {
		return nil, err
	}
	file, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &failFile{fs: f, f: file, name: name}, nil
}

func (f *FailFS) Remove(name string) error {
	if err := f.op("Remove", name); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

func (f *FailFS) Rename(oldname, newname string) error {
	if err := f.op("Rename", oldname); err != nil {
		return err
	}
	return f.inner.Rename(oldname, newname)
}

func (f *FailFS) List(dir string) ([]string, error) {
	if err := f.op("List", dir); err != nil {
		return nil, err
	}
	return f.inner.List(dir)
}

func (f *FailFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := f.op("MkdirAll", dir); err != nil {
		return err
	}
	return f.inner.MkdirAll(dir, perm)
}

func (f *FailFS) SyncDir(dir string) error {
	if err := f.op("SyncDir", dir); err != nil {
		return err
	}
	return f.inner.SyncDir(dir)
}

type failFile struct {
	fs   *FailFS
	f    File
	name string
}

func (ff *failFile) ReadAt(p []byte, off int64) (int, error) {
	if err := ff.fs.op("ReadAt", ff.name); err != nil {
		return 0, err
	}
	return ff.f.ReadAt(p, off)
}

func (ff *failFile) WriteAt(p []byte, off int64) (int, error) {
	if err := ff.fs.op("WriteAt", ff.name); err != nil {
		return 0, err
	}
	return ff.f.WriteAt(p, off)
}

func (ff *failFile) Sync() error {
	if err := ff.fs.op("Sync", ff.name); err != nil {
		return err
	}
	return ff.f.Sync()
}

func (ff *failFile) Truncate(size int64) error {
	if err := ff.fs.op("Truncate", ff.name); err != nil {
		return err
	}
	return ff.f.Truncate(size)
}

func (ff *failFile) Allocate(size int64) error {
	if err := ff.fs.op("Allocate", ff.name); err != nil {
		return err
	}
	return ff.f.Allocate(size)
}

func (ff *failFile) Size() (int64, error) {
	if err := ff.fs.op("Size", ff.name); err != nil {
		return 0, err
	}
	return ff.f.Size()
}

// Close closes the underlying file even when the failure is injected, so
// that an injected Close error does not leak the file; the error is still
// reported.
func (ff *failFile) Close() error {
	ierr := ff.fs.op("Close", ff.name)
	err := ff.f.Close()
	if ierr != nil {
		return ierr
	}
	return err
}

// SetFailAt makes operation n (counted from the FailFS's creation) the one
// that fails; a negative n disarms it.
func (f *FailFS) SetFailAt(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.failAt = n
}
