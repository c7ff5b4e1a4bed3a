// Package e2e tests the real twinblock binary with real NBD clients.
//
// TestMain builds ./cmd/twinblock once (without -race: the race detector
// applies to the test code, not to the server under test). Each test then
// starts `twinblock serve` as a subprocess on a free loopback port (and a
// unix socket when it needs one), drives it with the clients a hypervisor
// or an admin would use, and stops it with SIGTERM, asserting a clean exit:
//
//	nbdinfo    advertised flags, sizes, block sizes, export list
//	qemu-io    patterns, FUA, write-zeroes, discard, errors mid-session
//	qemu-img   convert in and out, compare
//	nbdcopy    copy in and out with sparse regions, multi-conn
//	nbdsh      every command, out-of-range and read-only errors from the
//	           server itself (libnbd's client-side checks switched off),
//	           FUA writes in flight across a graceful shutdown
//	fio        randwrite at queue depth 32 on two connections, crc32c verify
//	ext4       mkfs, mount, files, fsck, through nbdfuse and a loop device
//	CLI        create, config errors, missing backing files
//
// # Contract
//
//   - Every client command runs under a timeout (exec.CommandContext, whole
//     process group killed), so a hung client or server fails the test
//     instead of hanging the suite.
//   - A test skips only when a client binary (or, for ext4, root, /dev/fuse
//     or loop devices) is missing, naming what is missing; `make test`
//     installs the clients, so in CI nothing skips.
//   - Everything listens on 127.0.0.1 or a unix socket in the test's
//     temporary directory. Mounts and loop devices are undone in t.Cleanup
//     even when the test fails.
//   - When a test fails, the server's stderr is printed.
//
// Run with:
//
//	go test -race -count=1 ./test/e2e/
//
// TWINBLOCK_E2E_BIN=/path/to/twinblock tests that binary instead of
// building one.
//
// Pair tests (pair_test.go) run two real daemons with mutual TLS on
// loopback, optionally through the bench/proxy latency/cut proxy: clean stop
// and promote, kill -9 of the primary at 20 random points (odd points also
// drop the link first, like a whole site failing) with an acknowledged-write
// oracle, link cut and blackhole with catch-up, overlapping writes from two
// connections, refusals (other CA, uuid, size, garbage), and a role switch
// by CLI. Images are compared byte for byte.
//
// Resync tests (resync_test.go): pairs created with `create --existing`
// over differing data (1% of chunks, and entirely different) sync by
// themselves with bytes on the wire counted by the proxy; an outage past
// replication.retain under a verified load ends in a dirty-region resync;
// a rate-limited resync interrupted by kill -9 of either node resumes;
// verify finds bytes flipped behind the daemon's back (table, --json,
// exit 1), --repair fixes them, and verify under a write load reports
// nothing; a full resync runs under a verified write load.
package e2e
