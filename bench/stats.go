package bench

import (
	"slices"
	"time"
)

// Median returns the median of xs (the mean of the two middle values for an
// even count), or 0 for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// MedianResult takes the median of each field on its own. The result need
// not be one of the samples: with a noisy machine the median IOPS and the
// median p99 may come from different runs, which is what we want to
// compare.
func MedianResult(rs []Result) Result {
	pick := func(f func(Result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return Median(xs)
	}
	return Result{
		IOPS: pick(func(r Result) float64 { return r.IOPS }),
		MBps: pick(func(r Result) float64 { return r.MBps }),
		P50:  time.Duration(pick(func(r Result) float64 { return float64(r.P50) })),
		P99:  time.Duration(pick(func(r Result) float64 { return float64(r.P99) })),
		IOs:  int64(pick(func(r Result) float64 { return float64(r.IOs) })),
	}
}
