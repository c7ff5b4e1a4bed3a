// Package testenv runs the twinblock binary the way an operator would, for
// the end-to-end suites (test/e2e, and test/ceph under the ceph tag): client
// commands in their own process group under a timeout, `twinblock serve`
// processes started on a free loopback port and stopped with SIGTERM or
// SIGKILL, and nodes (a directory with a twinblock.yaml) driven through the
// CLI with `status --json` polled until a condition holds.
//
// It is a plain (untagged, cgo-free) package so that both suites share one
// copy of this machinery. Every helper takes the test's *testing.T and
// fails it (t.Fatal) on an error the test did not ask about; every wait is
// bounded by the Timeouts it is given.
package testenv
