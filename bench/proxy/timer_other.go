//go:build !linux

package proxy

import "time"

// fineTimer falls back to Go timers where there is no timerfd.
type fineTimer struct{}

func newFineTimer() *fineTimer { return nil }

func (t *fineTimer) sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

func (t *fineTimer) close() {}
