package vfs

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, f File, b []byte, off int64) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, m *MemFS, name string) []byte {
	t.Helper()
	b, err := m.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMemFSCrashKeepsSyncedDropsUnsyncedEntries(t *testing.T) {
	m := NewMemFS()
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
	write(t, f, []byte("synced"), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := m.SyncDir("/d"); err != nil {
		t.Fatal(err)
	}
	g, _ := m.OpenFile("/d/b", os.O_RDWR|os.O_CREATE, 0o644) // never dir-synced
	write(t, g, []byte("lost"), 0)
	_ = g.Sync()
	if err := m.Rename("/d/a", "/d/c"); err != nil { // not dir-synced either
		t.Fatal(err)
	}
	for seed := range uint64(20) {
		c := m.Crash(rand.New(rand.NewPCG(seed, 1)))
		names, _ := c.List("/d")
		if len(names) != 1 || names[0] != "a" {
			t.Fatalf("after crash: %v, want only the dir-synced entry a", names)
		}
		if got := read(t, c, "/d/a"); string(got) != "synced" {
			t.Fatalf("synced data %q", got)
		}
	}
	// The running FS is unaffected.
	if names, _ := m.List("/d"); len(names) != 2 {
		t.Fatalf("crash changed the live FS: %v", names)
	}
}

func TestMemFSCrashTearsUnsyncedWrites(t *testing.T) {
	m := NewMemFS()
	_ = m.MkdirAll("/d", 0o755)
	f, _ := m.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
	base := bytes.Repeat([]byte{1}, 8*SectorSize)
	write(t, f, base, 0)
	_ = f.Sync()
	_ = m.SyncDir("/d")
	write(t, f, bytes.Repeat([]byte{2}, 8*SectorSize), 0)
	seen := map[string]bool{}
	for seed := range uint64(200) {
		got := read(t, m.Crash(rand.New(rand.NewPCG(seed, 2))), "/d/a")
		if len(got) != len(base) {
			t.Fatalf("size %d", len(got))
		}
		for i, b := range got {
			if b != 1 && b != 2 {
				t.Fatalf("byte %d = %d: neither old nor new", i, b)
			}
		}
		switch {
		case bytes.Equal(got, base):
			seen["none"] = true
		case !bytes.Contains(got, []byte{1}):
			seen["all"] = true
		default:
			seen["partial"] = true
			// Torn inside a sector?
			for s := 0; s < 8; s++ {
				sec := got[s*SectorSize : (s+1)*SectorSize]
				if bytes.Contains(sec, []byte{1}) && bytes.Contains(sec, []byte{2}) {
					seen["torn sector"] = true
				}
			}
		}
	}
	for _, k := range []string{"none", "all", "partial", "torn sector"} {
		if !seen[k] {
			t.Errorf("crash never produced %q", k)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, m.Crash(rand.New(rand.NewPCG(1, 1))), "/d/a"); !bytes.Equal(got, bytes.Repeat([]byte{2}, 8*SectorSize)) {
		t.Fatal("synced write lost")
	}
}

func TestMemFSErrors(t *testing.T) {
	m := NewMemFS()
	if _, err := m.OpenFile("/nope/x", os.O_RDWR|os.O_CREATE, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open in missing dir: %v", err)
	}
	_ = m.MkdirAll("/d", 0o755)
	f, _ := m.OpenFile("/d/x", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0)
	if _, err := m.OpenFile("/d/x", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on existing: %v", err)
	}
	r, _ := m.OpenFile("/d/x", os.O_RDONLY, 0)
	if _, err := r.WriteAt([]byte{1}, 0); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("write to read-only: %v", err)
	}
	_ = f.Close()
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestFailFSFailsExactlyTheNthOp(t *testing.T) {
	for n := int64(0); n < 4; n++ {
		m := NewMemFS()
		_ = m.MkdirAll("/d", 0o755)
		ff := NewFailFS(m, n)
		var errs []error
		f, err := ff.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
		errs = append(errs, err)
		if f == nil {
			f, _ = ff.OpenFile("/d/a", os.O_RDWR|os.O_CREATE, 0o644)
		}
		_, err = f.WriteAt([]byte("x"), 0)
		errs = append(errs, err, f.Sync(), ff.SyncDir("/d"))
		failed := 0
		for i, e := range errs {
			if e != nil {
				failed++
				if !errors.Is(e, ErrInjected) || int64(i) != n {
					t.Fatalf("n=%d: op %d failed with %v", n, i, e)
				}
			}
		}
		if op, ok := ff.Injected(); failed != 1 || !ok || op == "" {
			t.Fatalf("n=%d: %d failures, injected=%v", n, failed, ok)
		}
	}
}

func TestOSFS(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "f")
	f, err := OS.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Allocate(1 << 16); err != nil {
		t.Fatal(err)
	}
	if sz, _ := f.Size(); sz != 1<<16 {
		t.Fatalf("size after Allocate %d", sz)
	}
	write(t, f, []byte("abc"), 100)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := OS.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := OS.Rename(name, name+"2"); err != nil {
		t.Fatal(err)
	}
	names, _ := OS.List(dir)
	if len(names) != 1 || names[0] != "f2" {
		t.Fatalf("list %v", names)
	}
	_ = f.Close()
	if err := OS.Remove(name + "2"); err != nil {
		t.Fatal(err)
	}
}
