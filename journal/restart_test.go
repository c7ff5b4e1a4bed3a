package journal

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twinblock/twinblock/journal/vfs"
)

func TestRestart(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := testOpts(fs)
	j := mustOpen(t, opts)
	rng := rand.New(rand.NewPCG(3, 4))
	model := map[uint64]Op{}
	appendN(t, j, rng, 60, model)
	if err := j.Restart(5000); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Restart with records above the checkpoint: %v", err)
	}
	if err := j.Checkpoint(60); err != nil {
		t.Fatal(err)
	}
	if err := j.Restart(5000); err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.FirstSeq != 5000 || st.LastSeq != 4999 || st.DurableSeq != 4999 || st.CheckpointSeq != 4999 || st.Segments != 1 {
		t.Fatalf("after restart: %+v", st)
	}
	if _, err := j.NewReader(60); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("reader of a dropped record: %v", err)
	}
	model = map[uint64]Op{}
	appendN(t, j, rng, 40, model)
	if last, err := checkReplay(j, 5000, model); err != nil || last != 5039 {
		t.Fatalf("replay: %d %v", last, err)
	}
	mustClose(t, j)
	j = mustOpen(t, opts)
	if st := j.Stats(); st.FirstSeq != 5000 || st.DurableSeq != 5039 || st.CheckpointSeq != 4999 {
		t.Fatalf("after reopen: %+v", st)
	}
	if last, err := checkReplay(j, 5000, model); err != nil || last != 5039 {
		t.Fatalf("replay after reopen: %d %v", last, err)
	}
	// Going back to a lower numbering is allowed too (a target that was
	// ahead of its new primary).
	if err := j.Checkpoint(5039); err != nil {
		t.Fatal(err)
	}
	if err := j.Restart(7); err != nil {
		t.Fatal(err)
	}
	if seq, err := j.Append(Op{Kind: KindTrim, Length: 512}); err != nil || seq != 7 {
		t.Fatalf("append after restart: %d %v", seq, err)
	}
	mustClose(t, j)
}

// TestRestartCrash crashes the filesystem at every step of a Restart (by
// failing the Nth operation, then keeping a random part of what was not
// synced) and reopens: the journal is always either empty at the old
// numbering or at the new one, never corrupt.
func TestRestartCrash(t *testing.T) {
	for n := int64(1); ; n++ {
		base := vfs.NewMemFS()
		opts := testOpts(base)
		j := mustOpen(t, opts)
		rng := rand.New(rand.NewPCG(uint64(n), 5))
		appendN(t, j, rng, 50, map[uint64]Op{})
		if err := j.Checkpoint(50); err != nil {
			t.Fatal(err)
		}
		if err := j.Trim(); err != nil {
			t.Fatal(err)
		}
		mustClose(t, j)
		ff := vfs.NewFailFS(base, -1)
		opts.FS = ff
		j = mustOpen(t, opts)
		ff.SetFailAt(ff.Ops() + n)
		rerr := j.Restart(1000)
		_, injected := ff.Injected()
		if rerr == nil && injected && !failsSoon(j) {
			// The failure hit the preallocator, which Restart kicks as
			// it returns: it must still fail the journal.
			t.Fatalf("op %d: injected failure swallowed", n)
		}
		_ = j.Close()
		for seed := range 4 {
			crashed := base.Crash(rand.New(rand.NewPCG(uint64(n), uint64(seed))))
			o := testOpts(crashed)
			j2, err := Open(o)
			if err != nil {
				t.Fatalf("op %d seed %d: reopen: %v", n, seed, err)
			}
			st := j2.Stats()
			if st.DurableSeq != 50 && st.DurableSeq != 999 {
				t.Fatalf("op %d seed %d: durable %d, want 50 (old) or 999 (restarted)", n, seed, st.DurableSeq)
			}
			if rerr == nil && st.DurableSeq != 999 {
				t.Fatalf("op %d seed %d: Restart returned nil but the crash lost it: %+v", n, seed, st)
			}
			if seq, err := j2.Append(Op{Kind: KindTrim, Length: 512}); err != nil || seq != st.DurableSeq+1 {
				t.Fatalf("op %d seed %d: append after reopen: %d %v", n, seed, seq, err)
			}
			mustClose(t, j2)
		}
		if !injected {
			t.Logf("swept %d failure points", n-1)
			return // Restart ran to the end without reaching op n
		}
	}
}

// failsSoon reports whether j is failed within a few seconds (a failure
// in its background preallocator lands a moment after it happens).
func failsSoon(j *Journal) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		j.mu.Lock()
		failed := j.mu.failed != nil
		j.mu.Unlock()
		if failed {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}
