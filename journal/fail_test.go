package journal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinblock/twinblock/journal/vfs"
)

// failBase builds the starting state of the sweep: a journal with 6
// records whose last one is torn, so that the first Open has to copy a
// segment aside and cut it.
func failBase(t *testing.T) (*vfs.MemFS, map[uint64]Op) {
	fs := vfs.NewMemFS()
	opts := sweepOpts(fs)
	j := mustOpen(t, opts)
	model := map[uint64]Op{}
	appendN(t, j, rand.New(rand.NewPCG(1, 1)), 6, model)
	mustClose(t, j)
	var seg string
	var off int64
	_ = Inspect(opts, func(e Entry) error {
		if e.Type == EntryRecord && e.Seq == 6 {
			seg, off = e.Segment, e.Offset
		}
		return nil
	})
	img, _ := fs.ReadFile(filepath.Join(testDir, seg))
	img[off+recordHeaderSize] ^= 0xff // payload checksum fails: a torn tail
	if model[6].Kind != KindWrite {
		img[off+8] ^= 0xff // no payload: damage the header
	}
	writeFile(t, fs, filepath.Join(testDir, seg), img)
	delete(model, 6)
	return fs, model
}

func sweepOpts(fs vfs.FS) Options {
	opts := testOpts(fs)
	opts.SegmentSize, opts.MaxPayload = 8<<10, 2048
	return opts
}

// failScenario exercises open+recover (with a cut), append with rotation,
// checkpoint, trim, replay, close, reopen. It returns the first error and
// the highest sequence number acknowledged as durable.
func failScenario(fs vfs.FS, model map[uint64]Op) (acked uint64, err error) {
	opts := sweepOpts(fs)
	rng := rand.New(rand.NewPCG(2, 2))
	for round := range 2 {
		j, err := Open(opts)
		if err != nil {
			return acked, fmt.Errorf("open %d: %w", round, err)
		}
		for i := range 8 {
			op := randOp(rng, opts.MaxPayload)
			seq, err := j.Append(op)
			if err != nil && seq != 0 {
				model[seq] = cloneOp(op) // its fate is unknown
			}
			if err != nil {
				// Every Append error on a valid op is a failure of the
				// journal, and it must be sticky.
				_, err2 := j.Append(op)
				cerr := j.Checkpoint(1)
				_ = j.Close()
				if !errors.Is(err, ErrFailed) || !errors.Is(err2, ErrFailed) || !errors.Is(cerr, ErrFailed) {
					return acked, fmt.Errorf("append error not sticky: %v / %v / %v", err, err2, cerr)
				}
				return acked, err
			}
			model[seq] = cloneOp(op)
			acked = seq
			if i == 4 {
				if err := j.Checkpoint(seq - 1); err != nil {
					_ = j.Close()
					return acked, fmt.Errorf("checkpoint: %w", err)
				}
				if err := j.Trim(); err != nil {
					_ = j.Close()
					return acked, fmt.Errorf("trim: %w", err)
				}
			}
		}
		if _, err := checkReplay(j, j.Stats().CheckpointSeq+1, model); err != nil {
			_ = j.Close()
			return acked, fmt.Errorf("replay: %w", err)
		}
		if err := j.Close(); err != nil {
			return acked, fmt.Errorf("close: %w", err)
		}
	}
	return acked, nil
}

// TestFailEveryOperation is the pebble-style sweep: run the scenario
// failing operation 0, then 1, 2, ... until a run finishes without
// reaching the failure. Every injected error must surface, and whatever
// was acknowledged must survive (checked on a crash image of the
// underlying FS).
func TestFailEveryOperation(t *testing.T) {
	var ops int64
	for i := int64(0); ; i++ {
		if i > 5000 {
			t.Fatal("sweep does not terminate")
		}
		mem, model := failBase(t)
		ffs := vfs.NewFailFS(mem, i)
		acked, err := failScenario(ffs, model)
		op, injected := ffs.Injected()
		if !injected {
			if err != nil {
				t.Fatalf("run without failure: %v", err)
			}
			ops = i
			break
		}
		if err == nil {
			t.Fatalf("op %d (%s): injected error was swallowed", i, op)
		}
		if !errors.Is(err, vfs.ErrInjected) {
			t.Fatalf("op %d (%s): error does not wrap the injected one: %v", i, op, err)
		}
		if strings.HasPrefix(op, "Sync") && strings.Contains(err.Error(), "append") && !errors.Is(err, ErrFailed) {
			t.Fatalf("op %d (%s): sync failure did not fail the journal: %v", i, op, err)
		}
		// Recovery from the on-disk state after the failure, including a
		// power loss right now.
		crashed := mem.Crash(rand.New(rand.NewPCG(uint64(i), 3)))
		opts := sweepOpts(crashed)
		j, oerr := Open(opts)
		if oerr != nil {
			t.Fatalf("op %d (%s): reopen after failure: %v", i, op, oerr)
		}
		st := j.Stats()
		if st.DurableSeq < acked {
			t.Fatalf("op %d (%s): acked %d, durable after reopen %d", i, op, acked, st.DurableSeq)
		}
		for s := range model {
			if s > st.LastSeq {
				delete(model, s)
			}
		}
		if _, err := checkReplay(j, st.CheckpointSeq+1, model); err != nil {
			t.Fatalf("op %d (%s): replay after failure: %v", i, op, err)
		}
		mustClose(t, j)
	}
	t.Logf("swept %d operations", ops)
	if ops < 100 {
		t.Fatalf("scenario too small: %d operations", ops)
	}
}
