package durable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/journal"
)

// AppendOptions shape an in-process journal load.
type AppendOptions struct {
	// Dir is a directory on the disk under test; the journal is made in a
	// new subdirectory and removed afterwards.
	Dir string
	// Appenders is how many goroutines append at once, each waiting for
	// its record to be durable before appending the next (closed loop).
	Appenders int
	// Runtime is the measured time; Ramp runs first, unmeasured (the
	// first segments are preallocated then).
	Runtime, Ramp time.Duration
	// PayloadSize is the bytes per record (default 4096).
	PayloadSize int
}

// checkpointEvery is how many records pass between checkpoints: as the
// engine does, the load checkpoints and trims so that segments are
// recycled and the journal does not grow with the run.
const checkpointEvery = 8192

// AppendLoad measures durable journal appends: Appenders goroutines call
// journal.Append with 4 KiB writes for Runtime. With one appender every
// append pays a write and an fdatasync; with many, group commit makes one
// fdatasync cover every record queued meanwhile, so appends/s should grow
// almost with the number of appenders. Rate is appends/s, P50/P99 the
// Append latencies, PerSync the records per fdatasync.
func AppendLoad(ctx context.Context, o AppendOptions) (Measure, error) {
	if o.Appenders <= 0 || o.Runtime <= 0 || o.Ramp < 0 {
		return Measure{}, fmt.Errorf("%w: appenders %d, runtime %s, ramp %s", ErrOptions, o.Appenders, o.Runtime, o.Ramp)
	}
	if o.PayloadSize <= 0 {
		o.PayloadSize = 4096
	}
	dir, err := os.MkdirTemp(o.Dir, "journal-load-")
	if err != nil {
		return Measure{}, fmt.Errorf("durable: journal load: %w", err)
	}
	defer os.RemoveAll(dir)
	j, err := journal.Open(journal.Options{Dir: dir})
	if err != nil {
		return Measure{}, fmt.Errorf("durable: journal load: %w", err)
	}
	payload := make([]byte, o.PayloadSize)
	for i := range payload {
		payload[i] = byte(i*7 + 1)
	}

	var (
		measuring atomic.Bool
		stop      atomic.Bool
		next      atomic.Uint64
		wg        sync.WaitGroup
		errOnce   sync.Once
		firstErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		stop.Store(true)
	}
	lats := make([][]time.Duration, o.Appenders)
	for a := range o.Appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := next.Add(1)
				t := time.Now()
				seq, err := j.Append(journal.Op{Kind: journal.KindWrite, Offset: i * uint64(o.PayloadSize), Length: uint32(o.PayloadSize), Data: payload})
				if err != nil {
					fail(err)
					return
				}
				if measuring.Load() {
					lats[a] = append(lats[a], time.Since(t))
				}
				if seq%checkpointEvery == 0 {
					if err := j.Checkpoint(seq); err != nil {
						fail(err)
						return
					}
					if err := j.Trim(); err != nil {
						fail(err)
						return
					}
				}
			}
		}()
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var before, after journal.Stats
	var elapsed time.Duration
	ok := sleep(o.Ramp)
	if ok {
		before = j.Stats()
		start := time.Now()
		measuring.Store(true)
		ok = sleep(o.Runtime)
		measuring.Store(false)
		after = j.Stats()
		elapsed = time.Since(start)
	}
	stop.Store(true)
	wg.Wait()
	closeErr := j.Close()
	if !ok {
		return Measure{}, fmt.Errorf("durable: journal load: %w", ctx.Err())
	}
	if err := errors.Join(firstErr, closeErr); err != nil {
		return Measure{}, fmt.Errorf("durable: journal load: %w", err)
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	appends := after.DurableSeq - before.DurableSeq
	m := Measure{Rate: float64(appends) / elapsed.Seconds()}
	m.P50, m.P99 = percentiles(all)
	if syncs := after.Syncs - before.Syncs; syncs > 0 {
		m.PerSync = float64(appends) / float64(syncs)
	}
	return m, nil
}
