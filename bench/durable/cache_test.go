package durable

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of path that are in the page cache (mincore
// over a read-only mapping).
func resident(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestSettleDropsPageCache(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		t.Skipf("%s is in memory: nothing to drop", dir)
	}
	sub := filepath.Join(dir, "vol0.img.journal")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	files := []string{filepath.Join(dir, "vol0.img"), filepath.Join(sub, "0000000000000001.seg")}
	for _, p := range files {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A file that disappears is not an error (a segment trimmed under
	// the walk); a socket or directory is skipped.
	if err := os.Symlink("gone", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		if n := resident(t, p); n == 0 {
			t.Skipf("%s: freshly written pages not resident; cannot observe the drop here", p)
		}
	}
	if err := settle(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		if n := resident(t, p); n != 0 {
			t.Errorf("%s: %d pages still cached after settle", p, n)
		}
	}
	if err := settle(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing directory")
	}
}
