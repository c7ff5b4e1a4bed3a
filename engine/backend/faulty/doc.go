// Package faulty wraps a backend.Backend and fails operations on demand, so
// engine tests can walk every error path.
//
//	fb := faulty.New(mem.New(1 << 30))
//	fb.FailNth(3, faulty.OpAny)     // the third operation from now fails, once
//	fb.FailAll(faulty.OpWrite)      // every write fails until Heal
//	fb.FailAll(faulty.OpFlush)      // Flush fails
//	fb.SetError(syscall.EIO)        // injected errors also match EIO
//	fb.SetTorn(true)                // failed writes leave their first half behind
//	fb.Heal()
//
// Every injected error wraps ErrInjected (and the SetError error, if any).
// An injected fault is decided before the call reaches the wrapped backend,
// so the failed operation changed nothing, unless SetTorn is on and the
// operation is a write. Count and Injected report how many operations were
// attempted and how many failed, which gives the Pebble-style error loop:
//
//	for i := int64(1); ; i++ {
//		fb := faulty.New(mem.New(size))
//		fb.FailNth(i, faulty.OpAny)
//		runWorkload(fb) // must handle the error at step i
//		if fb.Injected() == 0 {
//			break // every step has failed once
//		}
//	}
//
// The wrapper always offers Discarder, Zeroer and Resizer. Discard and
// WriteZeroes reach the wrapped backend through backend.Discard and
// backend.WriteZeroes (zeroes written if it lacks the capability); Resize
// returns backend.ErrNotSupported if it lacks Resizer. Size and Close are
// never failed. The wrapper does not make a Flush error sticky itself: that
// is the behaviour of the layer under test.
package faulty
