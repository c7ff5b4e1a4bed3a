// Package bench measures NBD servers with fio and compares twinblock with
// baselines run in the same session.
//
// # Using it
//
// The CLI (`twinblock bench nbd`, or `make bench-nbd`) calls Run:
//
//	rep, err := bench.Run(ctx, bench.Options{
//		Twinblock: exe,               // the twinblock binary to launch
//		Runtime:   10 * time.Second,  // measured part of each sample
//		RampTime:  2 * time.Second,
//		Repeat:    3,                 // samples per cell; medians are reported
//		Progress:  os.Stderr,
//	})
//	if rep != nil {
//		rep.WriteFiles("docs/bench")  // nbd.md, nbd.json, nbd.svg
//	}
//
// Run starts three servers, each with a 1 GiB in-memory disk, each
// listening on loopback TCP and on a unix socket:
//
//   - twinblock: the real binary as a child process,
//     `twinblock serve --name vol0 --backend mem ...` (TwinblockServer);
//   - nbdkit: the memory plugin, one process per transport (NbdkitServer);
//   - gonbd: go-nbd's stock server and memory backend, in this process
//     (GoNBDServer).
//
// It then runs every workload of Workloads over every transport against
// every server, Repeat times. Rounds are the outer loop and servers the
// inner one (A, B, C, A, B, C, …) so that slow drift of a noisy machine
// hits all servers alike. Before the first sample the whole region of
// every server is written once over every transport, so reads return data
// rather than holes and writes overwrite allocated memory everywhere.
//
// The pieces are usable on their own: FioJob runs one fio job and
// ParseFio decodes fio's --output-format=json (it is a decoder of
// untrusted input and has a fuzz target); Median and MedianResult; the
// launchers behind the Server interface; Report.Table, Report.Markdown
// and Report.SVG.
//
// bench/durable (twinblock bench journal and pair) builds on the same
// plumbing rather than repeating it: StartProcess and Process (a child in
// its own process group with Pdeathsig, its output tail, Stop with
// SIGTERM then SIGKILL), ChildProcAttr, RunFio (fio under a timeout, its
// messages quoted on failure), FioPercentile, TailBuffer and OneLine,
// ProbeNBD and FreeTCPAddr, MedianFunc and MedianOf, and the report
// helpers FormatCount, FormatLatency, FormatBytes, WriteJSON, LoadAvg,
// KernelRelease, CPUModel and ProcField. Their errors carry no sentinel;
// each caller wraps them with its own.
//
// # Contract
//
//   - Nothing hangs: every fio process runs under a timeout derived from its
//     runtime (FioJob.Timeout), every server start is bounded by a start
//     timeout, and ctx cancellation stops fio and every server.
//   - A server that does not start yields an error wrapping ErrServerStart
//     that names the server and quotes the end of its output.
//   - A failed sample does not abort the run: it is recorded with its
//     error, medians use the samples that succeeded, and Run returns the
//     report with an error wrapping ErrSamples.
//   - Everything Run starts is stopped before it returns. Child servers
//     also get SIGKILL if the harness process dies (Pdeathsig; nbdkit
//     additionally runs with --exit-with-parent).
//   - Numbers are only comparable within one run: the report carries
//     ratios against nbdkit from the same run, never absolute targets.
package bench
