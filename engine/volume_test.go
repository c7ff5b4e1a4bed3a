package engine

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/faulty"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/journal/vfs"
)

// quiet discards engine logs; TWINBLOCK_TEST_LOG=1 shows them.
var quiet = func() *slog.Logger {
	if os.Getenv("TWINBLOCK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}()

func openMemJournalVolume(t *testing.T, fs vfs.FS, be backend.Backend) (*Volume, error) {
	t.Helper()
	j, err := journal.Open(journal.Options{Dir: "/j", FS: fs, SegmentSize: 256 << 10, MaxPayload: 64 << 10})
	if err != nil {
		return nil, err
	}
	v, err := OpenVolume(VolumeOptions{Name: "t", Backend: be, Journal: j, Logger: quiet,
		CheckpointBytes: 64 << 10, CheckpointInterval: time.Millisecond, JournalMaxBytes: 512 << 10})
	if err != nil {
		j.Close()
		return nil, err
	}
	return v, nil
}

func TestVolumeBasics(t *testing.T) {
	v, err := openMemJournalVolume(t, vfs.NewMemFS(), mem.New(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	data := bytes.Repeat([]byte{0xab}, 8192)
	if err := v.WriteAt(data, 4096, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := v.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if err := v.Trim(4096, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteZeroes(8192, 2048, true, true); err != nil {
		t.Fatal(err)
	}
	if err := v.ReadAt(got, 4096); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8192)
	copy(want[6144:], data[:2048])
	if !bytes.Equal(got, want) {
		t.Fatalf("after trim+zero: got %x...", got[:16])
	}
	if err := v.WriteAt(data, 1<<20-4096, false); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("out of range write: %v", err)
	}
	if err := v.ReadAt(got, 1<<20); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("out of range read: %v", err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestVolumeReadOnly(t *testing.T) {
	v, err := OpenVolume(VolumeOptions{Name: "ro", Backend: mem.New(1 << 20), ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, err := range []error{
		v.WriteAt([]byte{1}, 0, false), v.Trim(0, 4096, false), v.WriteZeroes(0, 4096, false, false),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Fatalf("write to read-only volume: %v", err)
		}
	}
	if err := v.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
}

// An fsync error anywhere in the journal fails the volume for good: the
// write that hit it and every later write and flush get an error, never a
// silent success.
func TestVolumeJournalSyncFailureIsSticky(t *testing.T) {
	// Count operations of a clean run, then fail each Sync in turn.
	for failAt := int64(0); ; failAt++ {
		ffs := vfs.NewFailFS(vfs.NewMemFS(), failAt)
		v, err := openMemJournalVolume(t, ffs, mem.New(1<<20))
		if err != nil {
			if _, inj := ffs.Injected(); !inj {
				t.Fatalf("failAt %d: open failed without injection: %v", failAt, err)
			}
			continue
		}
		var firstErr error
		for i := 0; i < 200 && firstErr == nil; i++ {
			firstErr = v.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), uint64(i%64)*4096, false)
		}
		op, injected := ffs.Injected()
		if !injected {
			v.Close()
			if failAt < 10 {
				t.Fatalf("sweep ended after %d ops: too few to be a sweep", failAt)
			}
			return // every operation of the run has been failed once
		}
		if firstErr == nil {
			// The failure hit a background operation (preallocation,
			// checkpoint) that does not fail the volume; that is only
			// allowed for operations that are not syncs of data.
			if strings.HasPrefix(op, "Sync") || strings.HasPrefix(op, "SyncDir") {
				// The background operation may still be on its way from
				// the failed sync to failing the volume: give it a moment.
				err := v.WriteAt(make([]byte, 4096), 0, false)
				if err == nil && !failsSoon(v) {
					t.Fatalf("failAt %d (%s): sync failure swallowed", failAt, op)
				}
			}
			v.Close()
			continue
		}
		if !errors.Is(firstErr, ErrFailed) {
			t.Fatalf("failAt %d (%s): write error %v does not wrap ErrFailed", failAt, op, firstErr)
		}
		if err := v.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, ErrFailed) {
			t.Fatalf("failAt %d (%s): write after failure: %v", failAt, op, err)
		}
		if err := v.Flush(); !errors.Is(err, ErrFailed) {
			t.Fatalf("failAt %d (%s): flush after failure: %v", failAt, op, err)
		}
		v.Close()
	}
}

// A backend write error fails the volume, and the journal still holds the
// record: a restart replays it.
func TestVolumeBackendErrorFailsVolumeAndReplays(t *testing.T) {
	fs := vfs.NewMemFS()
	inner := mem.New(1 << 20)
	fb := faulty.New(noClose{inner})
	v, err := openMemJournalVolume(t, fs, fb)
	if err != nil {
		t.Fatal(err)
	}
	fb.FailAll(faulty.OpWrite)
	data := bytes.Repeat([]byte{0x5a}, 4096)
	if err := v.WriteAt(data, 0, false); !errors.Is(err, ErrFailed) {
		t.Fatalf("write with failing backend: %v", err)
	}
	if err := v.WriteAt(data, 4096, false); !errors.Is(err, ErrFailed) {
		t.Fatalf("later write: %v", err)
	}
	v.Close()
	fb.Heal()
	v2, err := openMemJournalVolume(t, fs, faulty.New(noClose{inner}))
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	got := make([]byte, 4096)
	if err := v2.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replayed data missing: %v", err)
	}
}

// The journal stays bounded: a long write load with a small bound keeps
// checkpointing and trimming instead of growing.
func TestVolumeJournalBounded(t *testing.T) {
	fs := vfs.NewMemFS()
	v, err := openMemJournalVolume(t, fs, mem.New(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(g)}, 4096)
			for i := 0; i < 1000; i++ {
				if err := v.WriteAt(buf, uint64((g*1000+i)%256)*4096, false); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	st := v.Journal().Stats()
	// 4000 x 4 KiB = ~16 MiB written; the journal must hold far less.
	if st.Bytes > 2<<20 {
		t.Fatalf("journal holds %d bytes after 16 MiB of writes with a 512 KiB bound", st.Bytes)
	}
	if st.CheckpointSeq == 0 {
		t.Fatalf("no checkpoint happened")
	}
}

// noClose keeps a backend usable across a volume's Close (a "restart").
type noClose struct{ backend.Backend }

func (noClose) Close() error { return nil }

// ReceiveWrite takes a payload straight into a journal-less volume whose
// backend is a backend.Receiver, checks the range and the read-only flag
// first, and declines (reading nothing) on a journaled volume, whose
// writes need their payload for the record.
func TestVolumeReceiveWrite(t *testing.T) {
	v, err := OpenVolume(VolumeOptions{Name: "m", Backend: mem.New(1 << 20), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	data := bytes.Repeat([]byte("received"), 1024)
	handled, err := v.ReceiveWrite(bytes.NewReader(data), 4096, uint32(len(data)))
	if !handled || err != nil {
		t.Fatalf("ReceiveWrite = %v, %v", handled, err)
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	r := bytes.NewReader(data)
	if handled, err := v.ReceiveWrite(r, 1<<20-4096, 8192); !handled || !errors.Is(err, ErrOutOfRange) || r.Len() != len(data) {
		t.Fatalf("out of range: %v, %v, %d bytes read", handled, err, len(data)-r.Len())
	}

	ro, err := OpenVolume(VolumeOptions{Name: "ro", Backend: mem.New(1 << 20), ReadOnly: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if handled, err := ro.ReceiveWrite(bytes.NewReader(data), 0, 4096); !handled || !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only: %v, %v", handled, err)
	}

	jv, err := openMemJournalVolume(t, vfs.NewMemFS(), mem.New(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer jv.Close()
	r = bytes.NewReader(data)
	if handled, err := jv.ReceiveWrite(r, 0, 4096); handled || err != nil || r.Len() != len(data) {
		t.Fatalf("journaled volume: %v, %v, %d bytes read", handled, err, len(data)-r.Len())
	}
}

// failsSoon reports whether v fails within a few seconds.
func failsSoon(v *Volume) bool {
	deadline := time.Now().Add(5 * time.Second)
	for v.Err() == nil {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
