package testenv

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
)

// ErrDevice passes writes and reads to a device and keeps the first error:
// ackload stops quietly at a write error (what a crash test wants), while a
// test of a healthy volume must see that none happened.
type ErrDevice struct {
	Dev ackload.Device
	mu  struct {
		sync.Mutex
		err error
	}
}

func (d *ErrDevice) WriteAt(p []byte, off uint64, fua bool) error {
	return d.note(d.Dev.WriteAt(p, off, fua))
}

func (d *ErrDevice) ReadAt(p []byte, off uint64) error { return d.note(d.Dev.ReadAt(p, off)) }

func (d *ErrDevice) note(err error) error {
	if err == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.err == nil {
		d.mu.err = err
	}
	return err
}

// Err is the first error the device returned, nil if none.
func (d *ErrDevice) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.err
}

// LoadOptions is the verified load of the suites: 4 KiB blocks, as many
// writes as fit in d.
func LoadOptions(seed, base uint64, blocks, workers int, d time.Duration) ackload.Options {
	return ackload.Options{BlockSize: 4096, Blocks: blocks, Base: base, Workers: workers,
		MaxOps: 1 << 30, Duration: d, Seed: seed}
}

// RunCleanLoad runs a verified load (bounded by its duration plus slack)
// that must not see a single error.
func RunCleanLoad(t *testing.T, dev ackload.Device, o ackload.Options, slack time.Duration) *ackload.Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), o.Duration+slack)
	defer cancel()
	d := &ErrDevice{Dev: dev}
	l, err := ackload.Run(ctx, d, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Err(); err != nil {
		t.Fatalf("write load: %v (after %d acknowledged writes)", err, l.Acked)
	}
	if l.Acked == 0 {
		t.Fatal("write load: nothing was acknowledged")
	}
	return l
}

// StartLoad runs a verified load in the background, bounded by its
// duration plus slack; cancel ends it early, wait returns its log and the
// first error (of the run or of the device).
func StartLoad(dev ackload.Device, o ackload.Options, slack time.Duration) (cancel func(), wait func() (*ackload.Log, error)) {
	ctx, cancelCtx := context.WithTimeout(context.Background(), o.Duration+slack)
	d := &ErrDevice{Dev: dev}
	var l *ackload.Log
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		l, runErr = ackload.Run(ctx, d, o)
	}()
	return cancelCtx, func() (*ackload.Log, error) {
		<-done
		cancelCtx()
		if runErr != nil {
			return l, runErr
		}
		return l, d.Err()
	}
}

// VerifyOn checks every acknowledged write of l through dev, a client of
// node n, and fails the test, with n's log, if one is missing or none was
// checked.
func VerifyOn(t *testing.T, n *Node, dev ackload.Device, l *ackload.Log, what string) ackload.Result {
	t.Helper()
	res, err := l.Verify(dev)
	if err != nil {
		t.Fatalf("%s: verify on %s: %v\nserver log of %s:\n%s", what, n.Name, err, n.Name, n.Log())
	}
	if res.Acked == 0 {
		t.Fatalf("%s: verify on %s checked no acknowledged block: %+v", what, n.Name, res)
	}
	return res
}

// EnvCount is the positive integer in the environment variable env, or def
// (a test's default number of rounds that a longer run raises).
func EnvCount(env string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
		return n
	}
	return def
}
