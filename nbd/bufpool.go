package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from power-of-two size classes, 4 KiB to 256 MiB,
// each with its own sync.Pool. A request takes the smallest class that
// fits, so a 4 KiB write costs no allocation once the pool is warm, and a
// 1 MiB read does not pin a 32 MiB buffer. Pools hold *[]byte so that Put
// does not allocate a new interface value for the slice header.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 28 // 256 MiB, the cap on ServerOptions.MaxBlockSize
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// bufClass returns the size-class index for n bytes (n <= 1<<maxBufShift).
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of length n from the pools.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if v := bufPools[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+minBufShift))
	return &b
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	c := bufClass(cap(*b))
	if cap(*b) != 1<<(c+minBufShift) {
		return // not one of ours; let the GC have it
	}
	bufPools[c].Put(b)
}
