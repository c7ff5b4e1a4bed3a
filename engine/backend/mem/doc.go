// Package mem is a sparse in-memory backend.Backend for tests and
// benchmarks.
//
//	b := mem.New(10 << 30) // a "10 GiB" volume that uses no memory yet
//	b.WriteAt(p, off)      // allocates the 1 MiB chunks it touches
//	b.Allocated()          // bytes actually held
//
// Storage is a two-level table of fixed ChunkSize (1 MiB) chunks: a top
// level of segments (1024 chunk pointers each, 1 GiB of volume) and, in
// each segment, atomic chunk pointers. A chunk is allocated on its first
// write; never-written chunks read as zeroes; Discard and
// WriteZeroes(keep=false) free the chunks they cover entirely and zero the
// covered part of the others. WriteZeroes(keep=true) zeroes allocated
// chunks in place and leaves unallocated ones alone (memory has no
// allocation to keep, and zeroing a whole volume must not cost its size in
// RAM).
//
// The hot path takes no global lock: a request loads the table and chunk
// pointers atomically and locks only the chunk it copies into or out of
// (an RWMutex, so reads of one chunk run in parallel). The only allocation
// is a chunk's first touch. Installing a segment and growing the table
// (Resize) take a mutex; a grown table is a new copy published atomically,
// and segments are only installed under that mutex, so none can be lost in
// a copy. This is what lets the NBD benchmarks use mem as an ideal device
// without it becoming the bottleneck.
//
// Flush does nothing. Resize only grows (backend.ErrShrink). After Close the
// memory is released and every call returns backend.ErrClosed.
package mem
