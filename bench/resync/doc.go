// Package resync benchmarks the checksummed block resync (issue 5):
// `twinblock bench resync`. A pair is created over two existing images
// that differ in a small share of their 64 KiB chunks (the secondary
// created so starts Inconsistent, and the primary gives it a full
// checksummed resync when they first connect); the run measures what
// crosses the peer link and how long the pass takes, against the time this
// machine needs to read the volume once, measured in the same run.
//
// # Using it
//
//	rep, err := resync.Run(ctx, resync.Options{
//		Twinblock: exe,        // the binary the daemons run
//		Dir:       ".",        // the images go here: the disk under test
//		Size:      4 << 30,    // each image
//		Changed:   0.01,       // share of 64 KiB chunks rewritten on b
//		Repeat:    3,          // rounds; the tables show medians
//		Cache:     resync.CacheCold,
//		Progress:  os.Stderr,
//	})
//	if rep != nil {
//		fmt.Print(rep.Table())       // medians, then targets with ✓/✗
//		rep.WriteFiles("docs/bench") // resync.md, resync.json
//	}
//
// The images are written once: a holds Size bytes of pseudo-random data
// (ChaCha8 from Seed) and b a copy of it. Each round then
//
//  1. rewrites round(Changed × chunks) distinct random 64 KiB chunks of b
//     with fresh random data (the previous round's resync made b equal to
//     a again), so exactly those bytes differ;
//  2. creates both volumes anew with `twinblock create --existing` (a
//     primary, b secondary with a's uuid), a dialling b through an
//     in-process bench/proxy that counts every byte of the link;
//  3. measures the baselines: read a's image once in 4 MiB requests with
//     O_DIRECT (one at a time, and 4 in flight like the engine's hash
//     requests) and through the page cache, and read both images at once
//     through the page cache (what the pair has to do at the least when
//     both nodes share this one disk);
//  4. starts b, then a, and polls a's `twinblock status --json` until the
//     resync pass is over and the peer UpToDate; the pass time is the
//     engine's own (resync.elapsed_seconds), the wall time from a's start
//     is kept beside it; then checks that the rewritten chunks now match
//     and that sent_bytes is exactly the rewritten bytes.
//
// Rounds alternate the order of 3 and 4, so slow drift of the machine
// hits both alike.
//
// # Page cache
//
// Both the daemons' file backend and a plain read go through the page
// cache, so its state decides what is measured. With CacheCold (the
// default) every measurement starts after sync(2) and `echo 3 >
// /proc/sys/vm/drop_caches` (needs root; the run fails otherwise rather
// than measure with warm caches by accident): the resync and the buffered
// baselines read from the disk, and the O_DIRECT baseline never uses the
// cache. The target's "read the volume once" is the fastest of the
// O_DIRECT and the buffered cold reads of each round. With CacheWarm both images
// are read into the page cache before each measurement and the baseline
// is the buffered (warm) read: that measures hashing and the protocol
// without the disk.
//
// # Contract
//
//   - Nothing hangs: every command runs under a timeout, every daemon start
//     is bounded by StartTimeout, each resync pass by PassTimeout, and ctx
//     cancellation stops every daemon.
//   - Everything a run starts is stopped before it returns (SIGTERM, then
//     SIGKILL; children also die with the harness). The work directory,
//     with its 2 × Size bytes of images, is removed unless Keep is set.
//   - A failed round does not abort the run: it is recorded with its error,
//     medians use the rounds that succeeded, and the run returns the report
//     with an error wrapping ErrRounds. A round whose resync did not make
//     the rewritten chunks equal, or sent other than the rewritten bytes,
//     is failed.
//   - A target whose inputs did not run is reported as not valid ("n/a"),
//     never as met. Figures are comparable only within one run.
//
// ParseStatus decodes `twinblock status --json` (another program's
// output) and has a fuzz target.
package resync
