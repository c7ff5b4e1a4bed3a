// Package durable benchmarks what durability and replication cost:
// `twinblock bench journal` (issue 3: group commit, the journal's overhead
// over a plain write + fdatasync) and `twinblock bench pair` (issue 4: a
// synchronous pair against a standalone volume, on loopback and across a
// simulated WAN). Each is one run that measures its baselines in the same
// session and checks the issues' targets as ratios against them.
//
// # Using it
//
//	rep, err := durable.RunPair(ctx, durable.Options{
//		Twinblock: exe,            // the binary the daemons run
//		Dir:       ".",            // work files go here: the disk under test
//		Runtime:   10 * time.Second,
//		RampTime:  2 * time.Second,
//		Repeat:    3,              // samples per row; tables show medians
//		Pin:       true,           // taskset as the issue says
//		Progress:  os.Stderr,
//	})
//	if rep != nil {
//		fmt.Print(rep.Table())          // rows, then targets with ✓/✗
//		rep.WriteFiles("docs/bench")    // pair.md, pair.json
//	}
//
// RunJournal measures, in rounds (rows interleaved within each round):
//
//   - baseline: fio psync 4 KiB random writes with fdatasync=1 on a file in
//     the work directory;
//   - a standalone file volume (`twinblock create` + `serve`, journal on)
//     over NBD on a unix socket, fio --ioengine=nbd 4k randwrite QD1 and QD32;
//   - journal.Append in this process, 1 and 32 concurrent appenders.
//
// and checks QD32/QD1 IOPS ≥ 10, QD1 p50 ≤ 1.3 × baseline p50, and 32/1
// appenders ≥ 10.
//
// RunPair measures the floor under a replicated write (two fio psync
// streams at once on two files, since both journals of a loopback pair
// share the disk, plus a Go ping-pong on 127.0.0.1), a standalone volume, a
// sync pair on loopback (mutual TLS, file backends), and the pair with a
// `twinblock proxy` adding WANLatency each way between primary and
// secondary, in each of WANModes. With Pin the secondary and the proxy run
// on CPU 1, the primary (or the standalone daemon) and fio on CPU 0. It
// checks pair QD32 ≥ 0.7 × standalone QD32, pair QD1 p50 ≤ 1.3 × floor, and
// WAN sync QD32 ≥ 0.8 × 32 / RTT.
//
// Each configuration's volumes are created once and written in full
// before the first sample. Its daemons are started for each round (the
// secondary first, so the primary's first dial succeeds; a pair is used
// only once `twinblock status --json` says Connected) and stopped after
// it, so only one configuration uses the CPUs and the disk at a time;
// sync(2) runs before every sample so one sample's writeback does not land
// in the next.
//
// The pieces stand alone: PsyncArgs and ParsePsync (fio psync with
// fdatasync, whose latency is write + fdatasync), ParseStatus (`twinblock
// status --json`), LoopbackRTT and AppendLoad; ParsePsync and ParseStatus
// decode other programs' output and have fuzz targets.
//
// # Contract
//
//   - Nothing hangs: every fio run and every twinblock command runs under a
//     timeout, every daemon start is bounded by StartTimeout, and ctx
//     cancellation stops fio and every daemon.
//   - Everything a run starts is stopped before it returns: SIGTERM, then
//     SIGKILL after a grace; children also die with the harness
//     (Pdeathsig). The work directory is removed unless Keep is set.
//   - A failed sample does not abort the run: it is recorded with its error,
//     medians use the samples that succeeded, and the run returns the
//     report with an error wrapping ErrSamples. A pair sample taken while
//     the link was not Connected counts as failed.
//   - A target whose inputs did not run (or all failed) is reported as not
//     valid ("n/a"), never as met.
//   - Numbers are comparable only within one run; the targets are ratios
//     against baselines of the same run (the WAN goal is absolute: it is
//     set by the simulated round trip, not by the machine).
package durable
