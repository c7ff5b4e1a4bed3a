package journal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twinblock/twinblock/journal/vfs"
)

const testDir = "/j"

func testOpts(fs vfs.FS) Options {
	return Options{Dir: testDir, FS: fs, SegmentSize: 16 << 10, MaxPayload: 4096, MaxBatch: 64 << 10}
}

// randOp returns a random operation; writes carry random bytes.
func randOp(rng *rand.Rand, maxPayload int) Op {
	switch rng.IntN(6) {
	case 0:
		return Op{Kind: KindTrim, Offset: rng.Uint64N(1 << 30), Length: 1 + rng.Uint32N(1<<20)}
	case 1:
		return Op{Kind: KindZero, Offset: rng.Uint64N(1 << 30), Length: 1 + rng.Uint32N(1<<20), NoHole: rng.IntN(2) == 0}
	}
	n := 1 + rng.IntN(maxPayload)
	if rng.IntN(2) == 0 {
		n = min(maxPayload, 4096)
	}
	d := make([]byte, n)
	for i := range d {
		d[i] = byte(rng.Uint32())
	}
	return Op{Kind: KindWrite, Offset: rng.Uint64N(1 << 30), Length: uint32(n), Data: d}
}

func cloneOp(op Op) Op {
	op.Data = bytes.Clone(op.Data)
	return op
}

func sameOp(a, b Op) bool {
	return a.Kind == b.Kind && a.Offset == b.Offset && a.Length == b.Length &&
		a.NoHole == b.NoHole && bytes.Equal(a.Data, b.Data)
}

// checkReplay replays [from, DurableSeq] and compares every record with
// the model: contiguous sequence numbers, identical content, nothing
// invented.
func checkReplay(j *Journal, from uint64, model map[uint64]Op) (uint64, error) {
	next := from
	err := j.Replay(from, func(seq uint64, op Op) error {
		if seq != next {
			return fmt.Errorf("replayed seq %d, want %d", seq, next)
		}
		next++
		want, ok := model[seq]
		if !ok {
			return fmt.Errorf("seq %d replayed but never appended (invented)", seq)
		}
		if !sameOp(want, op) {
			return fmt.Errorf("seq %d differs: got %s off=%d len=%d, want %s off=%d len=%d",
				seq, op.Kind, op.Offset, op.Length, want.Kind, want.Offset, want.Length)
		}
		return nil
	})
	return next - 1, err
}

func mustOpen(t testing.TB, opts Options) *Journal {
	t.Helper()
	j, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

func mustClose(t testing.TB, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// appendN appends n random ops one by one (each synced on its own, so
// every record's syncedThrough is seq-1) and records them in model.
func appendN(t testing.TB, j *Journal, rng *rand.Rand, n int, model map[uint64]Op) {
	t.Helper()
	for range n {
		op := randOp(rng, j.opts.MaxPayload)
		seq, err := j.Append(op)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		model[seq] = cloneOp(op)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
