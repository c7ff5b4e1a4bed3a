// Package nbd is twinblock's Network Block Device server and a Go NBD
// client. The server knows only the small Device interface; the engine (or
// a test) implements it. The client exists for tests and benchmarks.
//
// # Serving a device
//
//	srv := nbd.NewServer(nbd.ServerOptions{Logger: log})
//	if err := srv.AddExport(&nbd.Export{Name: "vol0", Device: dev}); err != nil {
//		return err
//	}
//	ln, _ := net.Listen("tcp", "127.0.0.1:10809")
//	go srv.Serve(ln)            // returns ErrServerClosed after Shutdown
//	sock, _ := net.Listen("unix", "/run/twinblock/vol0.sock")
//	go srv.Serve(sock)          // any number of listeners
//	...
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	srv.Shutdown(ctx)           // answers what is in flight, then closes
//
// Clients reach it as nbd://127.0.0.1:10809/vol0 or
// nbd+unix:///vol0?socket=/run/twinblock/vol0.sock.
//
// # Talking to it from Go
//
//	c, err := nbd.Dial(ctx, "tcp", "127.0.0.1:10809", nbd.ClientOptions{ExportName: "vol0"})
//	err = c.WriteAt(buf, 0, true)   // FUA write
//	err = c.ReadAt(buf, 0)
//	var e *nbd.Error
//	if errors.As(err, &e) { ... e.Code ... } // or errors.Is(err, nbd.ErrInvalid)
//	c.Close()                       // waits for in-flight requests, sends DISC
//
// Every Client method may be called from many goroutines; each request is
// in flight independently and matched to its reply by handle. Client.Do
// sends any raw request (any type, flags, offset, length, payload) and
// returns the raw error code, so tests can reach every server error path.
//
// # Handshake
//
// Fixed newstyle only: the server offers FIXED_NEWSTYLE and NO_ZEROES and
// hangs up on a client that does not set FIXED_NEWSTYLE or sets an unknown
// flag. Options:
//
//   - NBD_OPT_GO / NBD_OPT_INFO: NBD_INFO_EXPORT (size, transmission
//     flags), NBD_INFO_NAME and NBD_INFO_DESCRIPTION when asked for, and
//     always NBD_INFO_BLOCK_SIZE: minimum 1, preferred 4096, maximum
//     ServerOptions.MaxBlockSize (32 MiB by default). An unknown export
//     gets NBD_REP_ERR_UNKNOWN and haggling continues; malformed data gets
//     NBD_REP_ERR_INVALID.
//   - NBD_OPT_EXPORT_NAME: supported for old clients; an unknown name
//     closes the connection, as proto.md requires (the option has no way
//     to carry an error).
//   - NBD_OPT_LIST: one NBD_REP_SERVER per export (name, then the
//     description as the free-form details), sorted by name.
//   - NBD_OPT_ABORT: acknowledged, then the connection closes.
//   - NBD_OPT_STRUCTURED_REPLY is refused with NBD_REP_ERR_UNSUP and the
//     client falls back to simple replies. Structured replies buy sparse
//     reads, partial-read errors and block status. We serve no block status
//     (twinblock devices are fully allocated and replicas must stay
//     byte-identical, so there is no hole map worth sending), and a simple
//     reply is enough for READ: a failed read is answered with the error
//     and no payload before any data is sent. Fewer moving parts on the
//     hot path. For the same reason NBD_OPT_STARTTLS (TLS belongs to the
//     peer link; NBD stays on loopback or a unix socket next to the
//     hypervisor), NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
//     NBD_OPT_EXTENDED_HEADERS and every unknown option get
//     NBD_REP_ERR_UNSUP, and haggling continues.
//   - Option data longer than 64 KiB is skipped without being stored and
//     answered with NBD_REP_ERR_TOO_BIG; no length from the wire is
//     allocated before it is capped.
//
// The empty export name selects the export named "" if one exists, or
// else the only export when exactly one exists; with several exports the
// client must name one (NBD_REP_ERR_UNKNOWN otherwise), so that adding a
// second volume never silently changes what "the default" means.
//
// The handshake is bounded by ServerOptions.HandshakeTimeout (30 s).
//
// # Transmission flags
//
// Writable exports: HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM,
// SEND_WRITE_ZEROES, SEND_CACHE, CAN_MULTI_CONN. Read-only exports:
// HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_CACHE, CAN_MULTI_CONN (FUA, TRIM
// and WRITE_ZEROES are not offered, and their requests get EPERM). The
// word is never zero (libnbd refuses that). CAN_MULTI_CONN is honest
// because Device.Flush covers writes completed on every connection.
// SEND_FAST_ZERO is not advertised: whether zeroing beats writing depends
// on the device behind, and a client that sets NBD_CMD_FLAG_FAST_ZERO
// anyway gets ENOTSUP, the flag's own "not fast" answer, so it falls back
// to ordinary writes. SEND_DF, SEND_RESIZE and BLOCK_STATUS need
// structured replies or online resize and are not offered.
//
// # Requests
//
// READ, WRITE (FUA), FLUSH, TRIM (FUA), WRITE_ZEROES (FUA, NO_HOLE), CACHE
// (Device's optional Cacher; a successful no-op without it), DISC. FUA is
// accepted on every command of a writable export, as proto.md asks.
//
// Up to ServerOptions.MaxInFlight requests (128) per connection run at
// once, each on a worker goroutine (workers are reused; there are never
// more than requests in flight); when all slots are taken the reader
// stops reading, so a fast client is slowed down rather than queued
// without bound. Replies go out in completion order through one writer
// goroutine that flushes its buffer only when no other reply is waiting
// (after yielding once, so that workers about to finish can join in):
// under load ten or more replies share one write system call. Payload buffers come
// from sync.Pool size classes; the request path does not allocate once
// warm. A device that keeps its data in memory can implement Receiver:
// then a WRITE without FUA is handed to it with its payload still in the
// connection, and the payload goes straight into the device's memory, on
// the reading goroutine, with no buffer and no copy in between.
//
// A READ or WRITE that arrives while nothing else runs executes inline,
// on the reading goroutine, and its reply goes out directly: alone (a
// queue-depth-1 client, or the tail of a burst) at any size, and with
// more requests already in the read buffer when it is at most 64 KiB. A
// burst from a high-queue-depth client is then served like an event loop
// (read, run, put the reply in the write buffer; one flush once the read
// buffer is empty, or before the reader could block on the socket). That
// saves the goroutine hand-offs to a worker and to the writer, and often
// a thread wake-up, which are most of the server's share of a round trip
// (QD32 4k writes: +3-8% IOPS, p99 938 µs -> 618 µs over TCP). Larger
// requests with more behind them go to workers, so that reading the next
// payload overlaps copying this one. Two rules keep a slow device from stalling the connection. A
// server-wide guard goroutine looks at the connections every millisecond
// while some run requests inline (backing off to 32 ms when none does) and
// moves the reading role to a new goroutine when an inline request is
// still running at two looks in a row, so a device that blocks (a write
// waiting for its peer, or one that waits for a later request) delays the
// requests behind it by a millisecond or two at most. And a command whose
// inline run took longer than a memory copy would (200 µs plus 250 µs per
// MiB) while the client sent more (bytes in the read buffer or in the
// socket's receive queue, FIONREAD) goes to workers for the next 1024
// requests of that command, doubling at each further slow run up to about
// a million: under concurrent load a journaled or replicated device is
// served by workers, whose waits overlap. A slow run with nothing behind
// it cost nobody (a queue-depth-1 client cannot send before its reply),
// so such a device at queue depth 1 stays inline.
//
// Reads and writes go through net.Conn. Raw read(2)/write(2) on the
// non-blocking socket (skipping the runtime's syscall bookkeeping) were
// tried and measured slower at queue depth 1 on a quiet machine (p50
// 45 µs against 24 µs over TCP, docs/benchmarks.md). Raising SO_RCVLOWAT
// so that a 1 MiB payload is read in one go was also measured slower: the
// reader then copies only after the whole payload has arrived, where
// reading as it comes overlaps its copying with the client's sending.
//
// # Errors never kill a connection
//
// A bad request fails alone, with this code, and the next request is
// served normally:
//
//	unknown command (BLOCK_STATUS, RESIZE, ...)          EINVAL
//	unknown flag, or one not valid for the command
//	  (DF, FUA on a read-only export, ...)               EINVAL
//	WRITE/TRIM/WRITE_ZEROES on a read-only export        EPERM
//	zero length (READ/WRITE/TRIM/WRITE_ZEROES/CACHE)     EINVAL
//	READ/WRITE longer than MaxBlockSize                  EINVAL
//	FLUSH with nonzero offset or length                  EINVAL
//	beyond the end: WRITE, WRITE_ZEROES                  ENOSPC
//	beyond the end: READ, TRIM, CACHE                    EINVAL
//	WRITE_ZEROES with FAST_ZERO                          ENOTSUP
//	request read after Shutdown/RemoveExport began       ESHUTDOWN
//	Device error wrapping ErrInvalid/ErrNoSpace/ErrPerm/
//	  ErrNotSupported/ErrShutdown                        EINVAL/ENOSPC/EPERM/ENOTSUP/ESHUTDOWN
//	any other Device error                               EIO
//
// The payload of a refused WRITE is read and discarded in small chunks so
// the stream stays in step; a huge length never causes a huge allocation
// (buffers are taken only for requests that passed the checks). Only a
// broken stream closes the connection: a bad request magic, EOF in the
// middle of a request, or a failed reply write. (TRIM and WRITE_ZEROES
// carry no payload, so proto.md lets them exceed the maximum block size.)
//
// # Draining
//
// NBD_CMD_DISC: the server stops reading, waits for every request in
// flight, sends their replies, half-closes the socket (so the client reads
// every reply before EOF) and closes. Shutdown and RemoveExport do the
// same on every affected connection: requests already received are
// answered (those not yet started with ESHUTDOWN), in-flight ones finish
// normally. Shutdown's context bounds the wait; when it ends, remaining
// connections are closed at once.
//
// # Observability
//
// Connection open and handshake failures of clients that hung up are
// logged at Debug, selected export and close at Info, protocol violations
// at Warn with the remote address. Server.Stats returns atomic counters
// (requests, bytes, errors, connections) for metrics.
//
// Reference: doc/proto.md of the NBD project (github.com/NetworkBlockDevice/nbd).
// Wire constants come from github.com/pojntfx/go-nbd/pkg/protocol where it
// has them.
package nbd
