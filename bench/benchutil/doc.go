// Package benchutil holds the pieces the benchmark harnesses (bench/durable,
// bench/resync, bench/rbdbench) share: decoding `twinblock status --json`
// arrays under a cap, running a short command under a timeout with its
// error naming the command line, and the head of a report's Markdown.
//
// Each harness keeps its own types and error sentinels; the functions
// here take them as arguments so that the harnesses' outputs (JSON keys,
// Markdown layout, error texts) stay theirs.
package benchutil
