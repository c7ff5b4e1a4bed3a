package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// settle flushes every dirty page, so that writeback left by one sample
// (a daemon's backend, fio's file layout) does not land in the next, then
// drops the cached pages of every file under dir (see dropCache). Only
// the drop can fail.
func settle(dir string) error {
	syscall.Sync()
	return dropCache(dir)
}

// dropCache asks the kernel to drop the page cache of every regular file
// under dir (POSIX_FADV_DONTNEED on the whole file; dirty pages were
// written by settle's sync first, so nothing is lost, only cached). This
// is what fio's invalidate=1, its default, does for fio's own files before
// a job: every sample starts from the same cache state whatever the
// sample or the fill before it left. It matters on ext4 since Linux 6.16:
// a small overwrite of a cached large folio walks every buffer head of the
// folio, so after the harness's 1 MiB fill writes (which leave each volume
// cached in large folios) a 4 KiB write costs several times the CPU it
// costs on a page the fill did not leave cached; docs/benchmarks.md
// ("Page cache state") has the measurements.
func dropCache(dir string) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil // a file removed under the walk (a trimmed segment)
			}
			keep(err)
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				keep(err)
			}
			return nil
		}
		defer f.Close()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			keep(&os.PathError{Op: "fadvise DONTNEED", Path: path, Err: err})
		}
		return nil
	})
	keep(err)
	return first
}
