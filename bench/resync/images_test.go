package resync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func TestImagesMutateCompare(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const size = 8<<20 + 3*ChunkSize // not a multiple of the 4 MiB write
	if err := makeImages(context.Background(), a, b, size, 42); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) != size || !bytes.Equal(da, db) {
		t.Fatalf("images: %d and %d bytes, equal %v", len(da), len(db), bytes.Equal(da, db))
	}
	if bytes.Count(da[:ChunkSize], []byte{0}) > ChunkSize/64 {
		t.Fatal("image does not look random")
	}
	n := changedChunks(size, 0.05)
	if n != 7 { // 0.05 × 131 chunks, rounded
		t.Fatalf("changedChunks = %d, want 7", n)
	}
	offs, err := mutate(b, size, n, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != n {
		t.Fatalf("%d chunks rewritten, want %d", len(offs), n)
	}
	db, _ = os.ReadFile(b)
	// Exactly the chunks returned differ, in every 4 KiB block.
	changed := map[int64]bool{}
	for _, o := range offs {
		if o%ChunkSize != 0 || changed[o] {
			t.Fatalf("bad or repeated offset %d", o)
		}
		changed[o] = true
	}
	for off := int64(0); off < size; off += 4096 {
		same := bytes.Equal(da[off:off+4096], db[off:off+4096])
		if changed[off/ChunkSize*ChunkSize] == same {
			t.Fatalf("4 KiB block at %d: equal %v, chunk rewritten %v", off, same, changed[off/ChunkSize*ChunkSize])
		}
	}
	if err := compareChunks(a, b, offs); !errors.Is(err, ErrCheck) {
		t.Fatalf("compare after mutate: %v, want ErrCheck", err)
	}
	if err := os.WriteFile(b, da, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := compareChunks(a, b, offs); err != nil {
		t.Fatalf("compare of equal images: %v", err)
	}
	// Another seed picks other chunks.
	offs2, err := mutate(b, size, n, 8)
	if err != nil {
		t.Fatal(err)
	}
	if slicesEqual(offs, offs2) {
		t.Fatalf("seeds 7 and 8 picked the same chunks %v", offs)
	}
	if _, err := mutate(b, size, int(size/ChunkSize)+1, 1); !errors.Is(err, ErrOptions) {
		t.Fatalf("more chunks than the image holds: %v", err)
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadOnce(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const size = 9 << 20
	if err := makeImages(context.Background(), a, b, size, 1); err != nil {
		t.Fatal(err)
	}
	for _, direct := range []bool{false, true} {
		for _, depth := range []int{1, 4} {
			d, n, err := readOnce(context.Background(), a, direct, depth)
			if direct && errors.Is(err, syscall.EINVAL) {
				t.Logf("O_DIRECT not supported on %s: %v", dir, err)
				continue
			}
			if err != nil || n != size || d <= 0 {
				t.Fatalf("readOnce(direct=%v, depth %d): %v, %d bytes in %v", direct, depth, err, n, d)
			}
		}
	}
	d, n, err := readTogether(context.Background(), a, b)
	if err != nil || n != 2*size || d <= 0 {
		t.Fatalf("readTogether: %v, %d bytes in %v", err, n, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := readOnce(ctx, a, false, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	if buf := alignedBuf(ioSize); len(buf) != ioSize || uintptrOf(buf)%4096 != 0 {
		t.Fatal("alignedBuf not aligned")
	}
}

func TestDropCachesError(t *testing.T) {
	old := dropCachesPath
	defer func() { dropCachesPath = old }()
	dropCachesPath = filepath.Join(t.TempDir(), "no", "such", "file")
	if err := dropCaches(); !errors.Is(err, ErrDropCaches) {
		t.Fatalf("dropCaches into a missing path: %v", err)
	}
}

func TestParseCPU(t *testing.T) {
	in := "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1 2\n"
	s, err := parseCPU(bufio.NewScanner(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	if s.total != 1000 || s.busy != 160 {
		t.Fatalf("got %+v, want total 1000 busy 160", s)
	}
	if f := cpuBusy(cpuSnapshot{busy: 100, total: 1000}, cpuSnapshot{busy: 150, total: 1100}); f != 0.5 {
		t.Fatalf("cpuBusy = %v", f)
	}
	if f := cpuBusy(s, s); f != -1 {
		t.Fatalf("no time passed: %v", f)
	}
	if _, err := parseCPU(bufio.NewScanner(strings.NewReader("cpu x 1 2 3 4\n"))); err == nil {
		t.Fatal("bad number accepted")
	}
	if _, err := parseCPU(bufio.NewScanner(strings.NewReader("intr 1\n"))); err == nil {
		t.Fatal("no cpu line accepted")
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// Field 2 may hold spaces and parentheses.
	line := "1234 (twin (b) lock) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 100 0 0"
	if got := parseProcStatCPU(line); got != 3.25 {
		t.Fatalf("got %v, want 3.25", got)
	}
	for _, bad := range []string{"", "1234 (x", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b"} {
		if got := parseProcStatCPU(bad); got != -1 {
			t.Errorf("%q: %v, want -1", bad, got)
		}
	}
	if os.Getpid() > 0 {
		b, err := os.ReadFile("/proc/self/stat")
		if err == nil && parseProcStatCPU(string(b)) < 0 {
			t.Fatalf("cannot parse our own /proc/self/stat: %q", b)
		}
	}
}
