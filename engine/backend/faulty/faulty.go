package faulty

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"

	"github.com/twinblock/twinblock/engine/backend"
)

// ErrInjected is wrapped by every error this package makes up.
var ErrInjected = errors.New("faulty: injected fault")

// Op is a set of operation kinds, used to choose which operations a fault
// applies to and which ones are counted.
type Op uint8

// The operation kinds. Size and Close are never counted or failed.
const (
	OpRead Op = 1 << iota
	OpWrite
	OpFlush
	OpDiscard
	OpWriteZeroes
	OpResize

	// OpMutate is every operation that changes data.
	OpMutate = OpWrite | OpDiscard | OpWriteZeroes | OpResize
	// OpAny is every operation except Close, which always passes through.
	OpAny = OpRead | OpMutate | OpFlush
)

const numOps = 6

var opNames = [numOps]string{"read", "write", "flush", "discard", "write-zeroes", "resize"}

func (o Op) String() string {
	var names []string
	for i, n := range opNames {
		if o&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// Backend wraps another backend.Backend and fails operations on demand. It
// always offers Discarder, Zeroer and Resizer: Discard and WriteZeroes go to
// the wrapped backend through the backend package helpers (so they fall back
// to writing zeroes when it lacks the capability), and Resize returns
// backend.ErrNotSupported when it lacks Resizer.
//
// An injected fault is decided before the operation reaches the wrapped
// backend, so a failed operation changed nothing, unless SetTorn made failed
// writes torn.
type Backend struct {
	inner backend.Backend

	mu struct {
		sync.Mutex
		counts   [numOps]int64 // operations seen, per kind
		nthMask  Op            // kinds counted towards nth
		nth      int64         // the remaining count until the armed fault; 0 = none
		failMask Op            // kinds that fail until Heal
		err      error         // what injected faults wrap besides ErrInjected
		torn     bool
		injected int64
	}
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Discarder = (*Backend)(nil)
	_ backend.Zeroer    = (*Backend)(nil)
	_ backend.Resizer   = (*Backend)(nil)
)

// New wraps inner with no fault armed.
func New(inner backend.Backend) *Backend {
	return &Backend{inner: inner}
}

// Inner returns the wrapped backend, for checking its contents directly.
func (b *Backend) Inner() backend.Backend { return b.inner }

// FailNth arms a one-shot fault: counting from this call, the n-th (1-based)
// operation whose kind is in ops fails. Arming again replaces the previous
// one-shot fault. With n <= 0 the one-shot fault is disarmed.
//
// Pebble-style error loops use it to walk every failure point in order: run
// the workload with FailNth(i, OpAny) for i = 1, 2, ... until Injected()
// stays 0.
func (b *Backend) FailNth(n int64, ops Op) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n <= 0 {
		b.mu.nth, b.mu.nthMask = 0, 0
		return
	}
	b.mu.nth, b.mu.nthMask = n, ops
}

// FailAll makes every operation whose kind is in ops fail until Heal (or a
// FailAll with a different set). FailAll(faulty.OpWrite) fails all writes;
// FailAll(faulty.OpFlush) makes Flush fail.
func (b *Backend) FailAll(ops Op) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.failMask = ops
}

// Heal disarms every fault. Counters are kept.
func (b *Backend) Heal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.failMask, b.mu.nth, b.mu.nthMask = 0, 0, 0
}

// SetError makes injected faults also wrap err (for example syscall.EIO or
// syscall.ENOSPC), so errors.Is sees both err and ErrInjected. nil restores
// plain ErrInjected.
func (b *Backend) SetError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.err = err
}

// SetTorn makes an injected write fault tear the write: the first half of
// the data (rounded down to a 512-byte sector) reaches the wrapped backend
// before the error is returned, as a power cut in the middle of a request
// would leave it.
func (b *Backend) SetTorn(torn bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.torn = torn
}

// Count returns how many operations of the kinds in ops were attempted,
// including failed ones.
func (b *Backend) Count(ops Op) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for i, c := range b.mu.counts {
		if ops&(1<<i) != 0 {
			n += c
		}
	}
	return n
}

// Injected returns how many faults were injected so far.
func (b *Backend) Injected() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.injected
}

// check counts op and decides whether it fails. torn is meaningful for
// writes only.
func (b *Backend) check(op Op) (torn bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	idx := bits.TrailingZeros8(uint8(op))
	b.mu.counts[idx]++
	fail := b.mu.failMask&op != 0
	if b.mu.nth > 0 && b.mu.nthMask&op != 0 {
		b.mu.nth--
		if b.mu.nth == 0 {
			b.mu.nthMask = 0
			fail = true
		}
	}
	if !fail {
		return false, nil
	}
	b.mu.injected++
	if b.mu.err != nil {
		return b.mu.torn, fmt.Errorf("%w: %v #%d: %w", ErrInjected, op, b.mu.counts[idx], b.mu.err)
	}
	return b.mu.torn, fmt.Errorf("%w: %v #%d", ErrInjected, op, b.mu.counts[idx])
}

// ReadAt reads from the wrapped backend unless a fault is injected.
func (b *Backend) ReadAt(p []byte, off int64) (int, error) {
	if _, err := b.check(OpRead); err != nil {
		return 0, err
	}
	return b.inner.ReadAt(p, off)
}

// WriteAt writes to the wrapped backend unless a fault is injected.
func (b *Backend) WriteAt(p []byte, off int64) (int, error) {
	torn, err := b.check(OpWrite)
	if err == nil {
		return b.inner.WriteAt(p, off)
	}
	if torn {
		if k := len(p) / 2 &^ 511; k > 0 {
			if n, werr := b.inner.WriteAt(p[:k], off); werr != nil {
				return n, werr
			}
			return k, err
		}
	}
	return 0, err
}

// Flush flushes the wrapped backend unless a fault is injected. The wrapper
// does not make an injected flush error sticky: which layer remembers it is
// exactly what engine tests check.
func (b *Backend) Flush() error {
	if _, err := b.check(OpFlush); err != nil {
		return err
	}
	return b.inner.Flush()
}

// Discard discards on the wrapped backend unless a fault is injected.
func (b *Backend) Discard(off, n int64) error {
	if _, err := b.check(OpDiscard); err != nil {
		return err
	}
	return backend.Discard(b.inner, off, n)
}

// WriteZeroes zeroes on the wrapped backend unless a fault is injected.
func (b *Backend) WriteZeroes(off, n int64, keepAllocated bool) error {
	if _, err := b.check(OpWriteZeroes); err != nil {
		return err
	}
	return backend.WriteZeroes(b.inner, off, n, keepAllocated)
}

// Resize resizes the wrapped backend unless a fault is injected.
func (b *Backend) Resize(size int64) error {
	if _, err := b.check(OpResize); err != nil {
		return err
	}
	r, ok := b.inner.(backend.Resizer)
	if !ok {
		return fmt.Errorf("faulty: resize: %w", backend.ErrNotSupported)
	}
	return r.Resize(size)
}

// Size returns the wrapped backend's size; it never fails.
func (b *Backend) Size() int64 { return b.inner.Size() }

// Close closes the wrapped backend; it never has a fault injected, so tests
// can always release resources.
func (b *Backend) Close() error { return b.inner.Close() }
