package proxy

import (
	"testing"
	"time"
)

// The precise timer never returns early (lower bound only) and tolerates
// non-positive durations, which would disarm a timerfd and block forever.
func TestFineTimer(t *testing.T) {
	ft := newFineTimer()
	defer ft.close()
	for _, d := range []time.Duration{3 * time.Millisecond, 200 * time.Microsecond, time.Millisecond} {
		start := time.Now()
		ft.sleep(d)
		if el := time.Since(start); el < d {
			t.Errorf("sleep(%v) returned after %v", d, el)
		}
	}
	ft.sleep(0)
	ft.sleep(-time.Second)
}
