// Package proxy is a userspace TCP proxy that makes a loopback link look
// like a WAN: it adds latency, caps bandwidth and cuts, blackholes or
// stalls the link on demand. These machines have no tc netem, so the
// replication tests and benchmarks put it between a primary and its
// secondary. It is byte-transparent: it never parses what it carries
// (TLS goes straight through).
//
// # Using it
//
//	p, err := proxy.Start(proxy.Options{
//		Target:    secondaryAddr,        // where connections are forwarded
//		Latency:   2500 * time.Microsecond, // each way: +5 ms round trip
//		Bandwidth: 100e6,                // bytes/s per direction, 0 = unlimited
//	})
//	defer p.Close()
//	primary.Connect(p.Addr())            // instead of secondaryAddr
//
//	p.Cut()        // every connection reset; reconnects reset at once
//	p.Restore()    // reconnects get through again
//	p.Blackhole()  // connections stay up, every byte vanishes
//	p.Stall()      // nothing moves, nothing is lost
//	p.SetLatency(10 * time.Millisecond)  // live
//	st := p.Stats()                       // bytes, drops, refusals, ...
//
// From the shell, `twinblock proxy --listen 127.0.0.1:7790 --target
// 127.0.0.1:7789 --latency 2.5ms --bandwidth 100M --control
// 127.0.0.1:7791` runs one in the foreground, and
// `curl -X POST 127.0.0.1:7791/cut` drives it (see ControlHandler).
//
// # How delay is applied
//
// Each direction of each connection has a reader, a deliverer and,
// between them, a delay line: a FIFO of chunks, each stamped at read
// time t with its delivery time t+Latency(+jitter). The reader never
// waits for delivery, so many chunks are on the "wire" at once and
// throughput is not limited by latency: 32 requests in flight over a
// 5 ms round trip complete every 5 ms, as on a real WAN, instead of one
// every 5 ms as a sleep-then-forward proxy would give. The deliverer
// writes each chunk when it falls due, in order; chunks that are due
// together go out in one write. On Linux the last 2 ms of each wait are
// timed with a timerfd, because Go timers on an idle runtime fire up to
// about 1 ms late and that would add to every hop (Options.CoarseTimers
// turns this off, as testing/synctest needs). Jitter and live latency
// changes never reorder: a chunk's delivery time is never earlier than
// the previous chunk's. A chunk is what one read returned (at most
// 64 KiB), so message boundaries are not preserved, exactly as with TCP.
//
// The bandwidth cap models the wire's serialization time: a chunk of n
// bytes occupies the wire for n/Bandwidth after the previous one is
// through, and is delivered Latency after it has been sent. The reader
// sleeps while it is ahead of the modelled wire, so a fast sender is
// held back by TCP flow control, not by an ever-growing queue. Moving N
// bytes through a capped direction therefore takes at least
// N/Bandwidth + Latency.
//
// # Faults
//
//   - Cut aborts every connection with a TCP reset (SO_LINGER 0) on both
//     sides. While cut, a new connection is accepted and reset at once
//     and counted in Stats.Refused. Failing fast, as a dead route does
//     once the router has given up, is what makes a client run its
//     reconnect-with-backoff loop; the count lets a test check that it
//     did, without waiting out connect timeouts.
//   - Blackhole keeps connections open and drops every byte in both
//     directions (counted in Stats.BytesDropped), so only timeouts such
//     as heartbeats notice. New connections are accepted and swallowed
//     too (no upstream is dialled). A connection that lost bytes has a
//     hole in its stream and could only deliver garbage later, so when
//     Blackhole ends (Restore, Stall, Cut) such connections are aborted;
//     connections that carried nothing during the blackhole survive.
//   - Stall holds everything: queued and newly read bytes wait, senders
//     block once the socket buffers fill, new connections are accepted
//     but not dialled. Restore delivers everything intact, as TCP would
//     after a short outage.
//   - Restore returns to normal forwarding.
//
// # Contract
//
//   - Bytes of one direction of one connection are delivered intact and
//     in order, or the connection is aborted; never silently changed.
//   - Half-close is forwarded: EOF on one side becomes CloseWrite on the
//     other after the same delay as the data before it, and the
//     connection ends when both directions have ended. A reset read on
//     one side becomes a reset on the other.
//   - A dial failure to Target resets the client (Stats.DialFailures).
//   - All methods are safe for concurrent use. Close aborts every
//     connection and returns after every goroutine of the proxy has
//     exited; a second Close returns ErrClosed.
//   - Options.Listener and Options.Dial let the proxy run over in-memory
//     connections (net.Pipe), which is how the tests check the timing
//     model exactly under testing/synctest's fake clock. A connection
//     type without CloseWrite is closed entirely on EOF.
package proxy
