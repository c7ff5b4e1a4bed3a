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

// MedianFunc returns the median of f over xs: the median of one field of
// a set of samples.
func MedianFunc[T any](xs []T, f func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	return Median(vs)
}

// MedianOf collects the results of the samples that have one (result
// returns nil for a failed sample) and returns how many there were and
// median of them, or nil when there were none.
func MedianOf[S, R any](samples []S, result func(S) *R, median func([]R) R) (ok int, m *R) {
	var rs []R
	for _, s := range samples {
		if r := result(s); r != nil {
			rs = append(rs, *r)
		}
	}
	if len(rs) == 0 {
		return 0, nil
	}
	med := median(rs)
	return len(rs), &med
}

// MedianResult takes the median of each field on its own. The result need
// not be one of the samples: with a noisy machine the median IOPS and the
// median p99 may come from different runs, which is what we want to
// compare.
func MedianResult(rs []Result) Result {
	return Result{
		IOPS: MedianFunc(rs, func(r Result) float64 { return r.IOPS }),
		MBps: MedianFunc(rs, func(r Result) float64 { return r.MBps }),
		P50:  time.Duration(MedianFunc(rs, func(r Result) float64 { return float64(r.P50) })),
		P99:  time.Duration(MedianFunc(rs, func(r Result) float64 { return float64(r.P99) })),
		IOs:  int64(MedianFunc(rs, func(r Result) float64 { return float64(r.IOs) })),
	}
}
