// Package vfs is the small filesystem interface through which the journal
// does every disk access, with three implementations: OS (the real thing),
// MemFS (in memory, able to simulate a power loss) and FailFS (a wrapper that
// fails the Nth operation).
//
// Contract of FS:
//   - Paths are ordinary slash-separated paths; List returns base names.
//   - OpenFile understands os.O_RDONLY, os.O_RDWR, os.O_CREATE, os.O_EXCL and
//     os.O_TRUNC. Missing files give an error wrapping fs.ErrNotExist.
//   - A created, renamed or removed directory entry is durable only after
//     SyncDir on its directory. File contents are durable only after
//     File.Sync (fdatasync semantics: data plus the metadata needed to read
//     it back, such as the size).
//   - An error from Sync or SyncDir means the state of the file on disk is
//     unknown; callers must not retry and assume success (see the journal's
//     fsync rules).
//
// Files may be used from several goroutines at once: ReadAt and WriteAt are
// safe to call concurrently (as with os.File) on non-overlapping ranges.
package vfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// FS is the filesystem the journal runs on.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	// List returns the sorted base names of the entries of dir.
	List(dir string) ([]string, error)
	MkdirAll(dir string, perm os.FileMode) error
	// SyncDir makes the directory's entries (creates, renames, removes)
	// durable.
	SyncDir(dir string) error
}

// File is an open file.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written data durable (fdatasync).
	Sync() error
	Truncate(size int64) error
	// Allocate reserves space so that the file is at least size bytes long
	// and writes below size do not fail for lack of space. The new bytes
	// read as zeroes.
	Allocate(size int64) error
	Size() (int64, error)
	Close() error
}

// OS is the FS of the operating system.
var OS FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error {
	return os.MkdirAll(dir, perm)
}

func (osFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

type osFile struct{ f *os.File }

func (o osFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o osFile) Truncate(size int64) error                { return o.f.Truncate(size) }
func (o osFile) Close() error                             { return o.f.Close() }

// Sync uses fdatasync: the journal only needs the data and the size, and
// skipping the mtime update saves a metadata write per group commit.
func (o osFile) Sync() error {
	for {
		err := unix.Fdatasync(int(o.f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: o.f.Name(), Err: err}
		}
		return nil
	}
}

func (o osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Allocate uses fallocate so that later writes cannot fail with ENOSPC; on
// filesystems without it the file is only extended (sparse).
func (o osFile) Allocate(size int64) error {
	err := unix.Fallocate(int(o.f.Fd()), 0, 0, size)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return &os.PathError{Op: "fallocate", Path: o.f.Name(), Err: err}
	}
	cur, serr := o.Size()
	if serr != nil {
		return serr
	}
	if cur >= size {
		return nil
	}
	return o.f.Truncate(size)
}
