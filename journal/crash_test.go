package journal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twinblock/twinblock/journal/vfs"
)

// TestCrash runs concurrent appenders (Append and Submit), checkpoints and
// trims against a MemFS, "crashes" it at a random point (keeping what was
// synced plus a random, torn part of the rest), reopens and checks:
// every record reported durable is present and intact, sequence numbers are
// contiguous, nothing is invented and nothing after a torn record is
// replayed (the model would not match), and appending continues. Several
// crash/recover rounds per seed. Goroutine scheduling is not deterministic,
// but the seed fixes the workload and the crash image choices; it is
// printed on failure.
func TestCrash(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 30
	}
	if s := os.Getenv("JOURNAL_CRASH_SEEDS"); s != "" {
		fmt.Sscan(s, &seeds)
	}
	for seed := range uint64(seeds) {
		if err := crashRun(seed); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func crashRun(seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0xc0ffee))
	fs := vfs.NewMemFS()
	opts := testOpts(fs)
	opts.SegmentSize = []int64{8 << 10, 16 << 10, 64 << 10}[rng.IntN(3)]
	opts.MaxPayload = 2048
	opts.SkipZeroFill = rng.IntN(2) == 0
	j, err := Open(opts)
	if err != nil {
		return err
	}
	model := map[uint64]Op{}
	var mu sync.Mutex
	for round := range 3 {
		var stop atomic.Bool
		var wg sync.WaitGroup
		appErr := make(chan error, 4)
		for a := range 3 {
			wg.Add(1)
			arng := rand.New(rand.NewPCG(seed, uint64(round*10+a)))
			async := a == 2
			go func() {
				defer wg.Done()
				for !stop.Load() {
					op := randOp(arng, opts.MaxPayload)
					mu.Lock() // the model must know a seq before anyone can observe it durable
					var seq uint64
					var err error
					if async {
						seq, err = j.Submit(op)
					} else {
						seq, err = j.submit(op, false)
					}
					if err == nil {
						model[seq] = cloneOp(op)
					}
					mu.Unlock()
					if err == nil && !async {
						err = j.WaitDurable(seq)
					}
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							appErr <- err
						}
						return
					}
				}
			}()
		}
		// The test goroutine appends too, and checkpoints and trims.
		for range 5 + rng.IntN(40) {
			mu.Lock()
			op := randOp(rng, opts.MaxPayload)
			seq, err := j.submit(op, false)
			if err == nil {
				model[seq] = cloneOp(op)
			}
			mu.Unlock()
			if err == nil {
				err = j.WaitDurable(seq)
			}
			if err != nil {
				return fmt.Errorf("append: %w", err)
			}
			if rng.IntN(8) == 0 {
				d := j.DurableSeq()
				if err := j.Checkpoint(d - min(d, uint64(rng.IntN(5)))); err != nil {
					return fmt.Errorf("checkpoint: %w", err)
				}
				if rng.IntN(2) == 0 {
					j.SetRetain("peer", d-min(d, uint64(rng.IntN(20))))
				}
				if err := j.Trim(); err != nil {
					return fmt.Errorf("trim: %w", err)
				}
			}
		}
		durable := j.DurableSeq()
		ckpt := j.Stats().CheckpointSeq
		crashed := fs.Crash(rng)
		// The old process keeps running against the old FS until it is
		// stopped; nothing it does reaches the crash image.
		stop.Store(true)
		if err := j.Close(); err != nil {
			return fmt.Errorf("close: %w", err)
		}
		wg.Wait()
		select {
		case err := <-appErr:
			return fmt.Errorf("appender: %w", err)
		default:
		}

		fs = crashed
		opts.FS = fs
		if j, err = Open(opts); err != nil {
			return fmt.Errorf("round %d: reopen after crash: %w", round, err)
		}
		st := j.Stats()
		if st.DurableSeq < durable {
			return fmt.Errorf("round %d: lost acknowledged records: durable %d after crash, %d before", round, st.DurableSeq, durable)
		}
		if st.CheckpointSeq < ckpt {
			return fmt.Errorf("round %d: checkpoint went back from %d to %d", round, ckpt, st.CheckpointSeq)
		}
		// Records after the recovered end were never durable in this
		// world; their sequence numbers will be reused.
		for s := range model {
			if s > st.LastSeq {
				delete(model, s)
			}
		}
		// Replay everything retained, not only what recovery walked: the
		// segments before the checkpoint must still read back whole.
		if last, err := checkReplay(j, st.FirstSeq, model); err != nil || last != st.DurableSeq {
			return fmt.Errorf("round %d: replay %d-%d (checkpoint %d, durable %d): %v", round, st.FirstSeq, last, st.CheckpointSeq, st.DurableSeq, err)
		}
	}
	// Final: append, clean close, reopen, everything retained is intact.
	appendRng := rand.New(rand.NewPCG(seed, 99))
	for range 10 {
		op := randOp(appendRng, opts.MaxPayload)
		seq, err := j.Append(op)
		if err != nil {
			return fmt.Errorf("append after recovery: %w", err)
		}
		model[seq] = cloneOp(op)
	}
	if err := j.Close(); err != nil {
		return err
	}
	if j, err = Open(opts); err != nil {
		return fmt.Errorf("final reopen: %w", err)
	}
	defer j.Close()
	st := j.Stats()
	if _, err := checkReplay(j, st.FirstSeq, model); err != nil {
		return fmt.Errorf("final replay: %w", err)
	}
	return nil
}
