package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestNbdcopy copies into and out of an export with nbdcopy over four
// connections (multi-conn) with many requests in flight. The source has a
// hole, which nbdcopy turns into zeroing requests: over a pre-filled
// export those must really zero.
func TestNbdcopy(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdcopy")
	dir := t.TempDir()
	s := memServer(t, "64M", false)
	uri := s.URI("vol0")
	copyArgs := []string{"--connections=4", "--requests=32", "--flush"}

	fill := filepath.Join(dir, "fill.img")
	writeFile(t, fill, bytes.Repeat([]byte{0xee}, 64*mib))
	mustRun(t, "nbdcopy", append(copyArgs, fill, uri)...)

	// 16 MiB random, an 8 MiB hole, 16 MiB random: 40 MiB, sparse.
	src := filepath.Join(dir, "src.img")
	a, b := randomBytes(16*mib, 11), randomBytes(16*mib, 12)
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(a); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 24*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "nbdcopy", append(copyArgs, src, uri)...)

	out := filepath.Join(dir, "out.img")
	mustRun(t, "nbdcopy", append(copyArgs, uri, out)...)
	got := readFile(t, out)
	if len(got) != 64*mib {
		t.Fatalf("copied out %d bytes, want %d", len(got), 64*mib)
	}
	requireEqualData(t, "export[0:40M] vs source", got[:40*mib], readFile(t, src))
	if ok, at := allBytes(got[16*mib:24*mib], 0); !ok {
		t.Errorf("the source's hole did not zero the export (offset %d)", 16*mib+at)
	}
	if ok, at := allBytes(got[40*mib:], 0xee); !ok {
		t.Errorf("nbdcopy changed the export beyond the source at offset %d", 40*mib+at)
	}
	s.Stop()
}
