package file_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/faulty"
	"github.com/twinblock/twinblock/engine/backend/file"
)

func create(t *testing.T, size int64) *file.Backend {
	t.Helper()
	b, err := file.Create(filepath.Join(t.TempDir(), "vol"), size, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return create(t, size) })
}

func TestContractFaultyNoFaults(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend { return faulty.New(create(t, size)) })
}

// blocks returns the 512-byte blocks allocated to path.
func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

func readAll(t *testing.T, b backend.Backend, off, n int64) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := b.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateIsSparse(t *testing.T) {
	b := create(t, 1<<30)
	defer b.Close()
	if b.Size() != 1<<30 {
		t.Fatalf("Size() = %d", b.Size())
	}
	if got := blocks(t, b.Path()); got > 8 {
		t.Fatalf("a new 1 GiB volume has %d blocks allocated, want ~0", got)
	}
}

func TestDiscardPunchesHoles(t *testing.T) {
	const size = 4 << 20
	b := create(t, size)
	defer b.Close()
	data := bytes.Repeat([]byte{0xee}, size)
	if _, err := b.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// Flush so delayed allocation has really allocated the blocks.
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	full := blocks(t, b.Path())
	if full < size/512 {
		t.Fatalf("%d blocks after writing %d bytes", full, size)
	}

	if err := b.Discard(1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	afterDiscard := blocks(t, b.Path())
	if full-afterDiscard < (1<<20)/512 {
		t.Fatalf("Discard of 1 MiB freed %d blocks, want >= %d", full-afterDiscard, (1<<20)/512)
	}

	// WriteZeroes without keepAllocated punches too.
	if err := b.WriteZeroes(2<<20, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	afterPunch := blocks(t, b.Path())
	if afterDiscard-afterPunch < (1<<20)/512 {
		t.Fatalf("WriteZeroes(punch) of 1 MiB freed %d blocks", afterDiscard-afterPunch)
	}

	// With keepAllocated the blocks stay.
	if err := b.WriteZeroes(3<<20, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if got := blocks(t, b.Path()); got < afterPunch {
		t.Fatalf("WriteZeroes(keep) freed blocks: %d -> %d", afterPunch, got)
	}

	got := readAll(t, b, 0, size)
	want := append(bytes.Repeat([]byte{0xee}, 1<<20), make([]byte, 3<<20)...)
	if !bytes.Equal(got, want) {
		t.Fatal("contents after discard/zeroing differ from the expected")
	}
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol")
	b, err := file.Create(path, 1<<20, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("keep me"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := file.Open(path, file.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got := readAll(t, ro, 4096, 7); string(got) != "keep me" {
		t.Fatalf("read %q", got)
	}
	checks := map[string]error{
		"WriteAt":     func() error { _, err := ro.WriteAt([]byte("x"), 4096); return err }(),
		"Discard":     ro.Discard(0, 8192),
		"WriteZeroes": ro.WriteZeroes(0, 8192, true),
		"Resize":      ro.Resize(2 << 20),
		"helper":      backend.Discard(ro, 0, 8192),
	}
	for name, err := range checks {
		if !errors.Is(err, backend.ErrReadOnly) {
			t.Errorf("%s on a read-only backend: err = %v, want ErrReadOnly", name, err)
		}
	}
	if err := ro.Flush(); err != nil {
		t.Errorf("Flush on a read-only backend: %v", err)
	}
	if got := readAll(t, ro, 4096, 7); string(got) != "keep me" {
		t.Fatalf("read-only backend changed data: %q", got)
	}
	if _, err := file.Create(path, 1<<20, file.Options{ReadOnly: true, Overwrite: true}); !errors.Is(err, backend.ErrConfig) {
		t.Fatalf("Create(ReadOnly): err = %v, want ErrConfig", err)
	}
}

func TestCreateRefusesToClobber(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := file.Create(path, 1<<20, file.Options{})
	if !errors.Is(err, file.ErrExists) || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over a non-empty file: err = %v, want ErrExists and fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "precious" {
		t.Fatalf("refused Create changed the file: %q", got)
	}

	b, err := file.Create(path, 1<<20, file.Options{Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != 1<<20 {
		t.Fatalf("Size() = %d", b.Size())
	}
	if got := readAll(t, b, 0, 16); !bytes.Equal(got, make([]byte, 16)) {
		t.Fatalf("overwritten volume starts with %q, want zeroes", got)
	}

	// An existing empty file is simply reused.
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := file.Create(empty, 4096, file.Options{})
	if err != nil {
		t.Fatalf("Create over an empty file: %v", err)
	}
	e.Close()
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := file.Create(filepath.Join(dir, "neg"), -1, file.Options{}); !errors.Is(err, backend.ErrConfig) {
		t.Errorf("negative size: err = %v", err)
	}
	if _, err := file.Create(filepath.Join(dir, "missing", "vol"), 4096, file.Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: err = %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := file.Open(filepath.Join(dir, "nope"), file.Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
	if _, err := file.Open(dir, file.Options{ReadOnly: true}); !errors.Is(err, backend.ErrConfig) {
		t.Errorf("directory: err = %v, want ErrConfig", err)
	}
	if _, err := file.Open("/dev/null", file.Options{}); !errors.Is(err, backend.ErrConfig) {
		t.Errorf("character device: err = %v, want ErrConfig", err)
	}
}

func TestReopenKeepsDataAndSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol")
	b, err := file.Create(path, 1<<20, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("hello"), 1<<20-5); err != nil {
		t.Fatal(err)
	}
	if err := b.Resize(3 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("world"), 3<<20-5); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, err = file.Open(path, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != 3<<20 {
		t.Fatalf("reopened Size() = %d", b.Size())
	}
	if got := readAll(t, b, 1<<20-5, 5); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
	if got := readAll(t, b, 3<<20-5, 5); string(got) != "world" {
		t.Fatalf("got %q", got)
	}
}

func TestShortReadAfterExternalTruncate(t *testing.T) {
	b := create(t, 1<<20)
	defer b.Close()
	if err := os.Truncate(b.Path(), 4096); err != nil {
		t.Fatal(err)
	}
	_, err := b.ReadAt(make([]byte, 8192), 0)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read past a truncated end: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestClose(t *testing.T) {
	b := create(t, 1<<20)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if _, err := b.WriteAt([]byte{1}, 0); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("WriteAt after Close: %v", err)
	}
	if err := b.Flush(); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if err := b.Discard(0, 1); !errors.Is(err, backend.ErrClosed) {
		t.Errorf("Discard after Close: %v", err)
	}
}

// run runs an external command under a timeout and returns its trimmed
// output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// loopDevice attaches a new image file of the given size to a loop device
// and detaches it at cleanup. It skips the test where that is impossible
// (not root, no loop driver, a container without /dev/loop-control).
func loopDevice(t *testing.T, size int64) (dev, img string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	img = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	dev, err := run(t, "losetup", "--find", "--show", img)
	if err != nil {
		t.Skipf("cannot attach a loop device: %v: %s", err, dev)
	}
	t.Cleanup(func() {
		if out, err := run(t, "losetup", "--detach", dev); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, img
}

// noResize hides Resizer: a block device cannot grow from inside, so the
// suite's growth test does not apply (TestBlockDeviceResize covers it).
type noResize struct {
	backend.Backend
	backend.Discarder
	backend.Zeroer
}

func TestContractBlockDevice(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		dev, _ := loopDevice(t, size)
		b, err := file.Open(dev, file.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !b.IsBlockDevice() {
			t.Fatalf("%s not detected as a block device", dev)
		}
		return noResize{b, b, b}
	})
}

func TestBlockDeviceDiscardFreesBackingBlocks(t *testing.T) {
	const size = 4 << 20
	dev, img := loopDevice(t, size)
	b, err := file.Open(dev, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt(bytes.Repeat([]byte{0x5a}, size), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	full := blocks(t, img)
	// An unaligned range: the edges are written, the middle discarded.
	if err := b.Discard(1<<20+100, 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := blocks(t, img); full-got < (1<<20)/512 {
		t.Errorf("discarding 2 MiB of the device freed only %d blocks of its image", full-got)
	}
	got := readAll(t, b, 0, size)
	want := bytes.Repeat([]byte{0x5a}, size)
	clear(want[1<<20+100 : 3<<20+100])
	if !bytes.Equal(got, want) {
		t.Fatal("device contents after Discard differ from the expected")
	}
}

func TestBlockDeviceResize(t *testing.T) {
	dev, img := loopDevice(t, 1<<20)
	b, err := file.Open(dev, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Resize(2 << 20); !errors.Is(err, backend.ErrOutOfRange) {
		t.Fatalf("Resize beyond the device: err = %v, want ErrOutOfRange", err)
	}
	// Grow the device the way an admin would, then follow it.
	if err := os.Truncate(img, 2<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "losetup", "--set-capacity", dev); err != nil {
		t.Fatalf("losetup --set-capacity: %v: %s", err, out)
	}
	if err := b.Resize(2 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("end"), 2<<20-3); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, 2<<20-3, 3); string(got) != "end" {
		t.Fatalf("got %q", got)
	}
	if err := b.Resize(1 << 20); !errors.Is(err, backend.ErrShrink) {
		t.Fatalf("shrink: err = %v, want ErrShrink", err)
	}
}

func TestBlockDeviceOpenIsExclusive(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20)
	b, err := file.Open(dev, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A second read-write open must fail while the first holds the claim.
	if b2, err := file.Open(dev, file.Options{}); err == nil {
		b2.Close()
		t.Fatal("second read-write Open of a claimed block device succeeded")
	} else if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second Open: err = %v, want EBUSY", err)
	}
}

func TestStartWriteback(t *testing.T) {
	b := create(t, 8<<20)
	data := bytes.Repeat([]byte{0x5a}, 4<<20)
	if _, err := b.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	var wb backend.Writebacker = b
	if err := wb.StartWriteback(); err != nil {
		t.Fatalf("StartWriteback: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := b.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after writeback: %v", err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.StartWriteback(); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("StartWriteback after Close: %v, want ErrClosed", err)
	}
}
