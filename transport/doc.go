// Package transport is the peer wire protocol between the two nodes of a
// twinblock volume: framing, handshake, mutual TLS, compression,
// heartbeats and reconnect. It knows nothing of the engine; the engine
// sits on top of Conn (or the Link interface) and decides what to send.
// The byte-level format is specified in docs/formats.md.
//
// # Tutorial
//
// Certificates come from the transport/pki package (or `twinblock certs`):
//
//	base, err := pki.LoadConfig("ca.pem", "a.pem", "a-key.pem")
//
// The secondary listens; the primary dials (in practice whichever side
// comes back first dials, and the roles are in the Hello):
//
//	l, err := transport.Listen(":7789", transport.ListenOptions{ConnOptions: transport.ConnOptions{
//		Hello:  myHello,          // volume, node id, role, generation, journal positions
//		PeerID: "a",              // the peer's node id: checked in its certificate and Hello
//		TLS:    base,
//		Validate: func(local, remote transport.Hello) error {
//			if err := transport.SameVolume(local, remote); err != nil {
//				return err
//			}
//			if local.Role == transport.RolePrimary && remote.Role == transport.RolePrimary {
//				return transport.Refusal(transport.ReasonRoleConflict, "both primary")
//			}
//			return nil
//		},
//	}})
//	conn, err := l.Accept(ctx) // conn.Remote() is the peer's Hello
//
//	conn, remote, err := transport.Dial(ctx, transport.DialOptions{Addr: "b:7789", ConnOptions: opts})
//
// The primary pipelines records and never waits for one before sending the
// next; the secondary acknowledges cumulatively:
//
//	conn.Send(transport.Record{Seq: 42, Kind: transport.KindWrite, Offset: off, Length: n, Data: buf})
//	for {
//		f, err := conn.Recv()
//		if err != nil { break } // ErrPeerTimeout, ErrConnLost, ErrPeerClosed, ErrBadFrame, ErrClosed
//		switch f := f.(type) {
//		case transport.Ack:    // f.DurableSeq: every seq <= it is durable on the peer
//		case transport.Record: // secondary: journal it, then Send(Ack{...})
//		}
//	}
//
// When the link drops, a Redialer (exponential Backoff with jitter) dials
// again until ctx ends; the engine then catches up from its journal.
// Engine tests use Pipe: two real Conns over net.Pipe with the same
// framing, handshake and heartbeats, and PipeLink.Cut to fail the link.
//
// # Contract
//
//   - TLS is mutual TLS 1.3 and is the default. Plain TCP needs an explicit
//     Insecure: true; a nil TLS config without it is ErrOptions. The peer's
//     certificate must chain to the configured CA and name PeerID (see
//     pki.Identities), and its Hello must carry the same node id.
//   - Handshake: dialer sends Hello; listener answers Hello + HelloOK (or
//     Refuse); dialer answers HelloOK (or Refuse). A refusal gives both sides
//     a *RefuseError (errors.Is ErrRefused) with the reason code. Everything
//     else that goes wrong before the Conn exists — TLS failure, garbage on
//     the port, EOF, HandshakeTimeout — is ErrHandshake. Nothing panics and
//     nothing is allocated from an unchecked length.
//   - Send is safe for concurrent use. It validates and encodes the frame
//     (copying its data) in the caller's goroutine, then queues it; frames
//     go out in queue order, so one goroutine's frames keep their order.
//     A full queue blocks Send (SendContext bounds the wait). nil from Send
//     means queued, not delivered: after a link failure, the engine resends
//     from its journal.
//   - Recv must be called from one goroutine. Frames received before a
//     failure are still returned, then the error. Ping, Pong and Goodbye
//     never come out of Recv; byte slices in returned frames belong to the
//     caller.
//   - Heartbeats: a Ping every HeartbeatInterval, answered by the peer's
//     Conn itself. If no byte arrives for Timeout, or a write makes no
//     progress for Timeout, the Conn fails with ErrPeerTimeout. An engine
//     that stops calling Recv for longer than Timeout while the peer keeps
//     sending eventually stalls the peer's writes, and the peer fails the
//     link: keep a Recv loop running.
//   - Close sends Goodbye after the frames already queued (bounded wait),
//     the peer's Recv then returns a *GoodbyeError (ErrPeerClosed). Abort
//     and PipeLink.Cut drop the link without Goodbye: the peer sees
//     ErrConnLost. After any failure the Conn is dead; dial a new one.
//   - Compression (s2 or zstd) is negotiated in the Hello: the dialer's
//     first preference that the listener supports. It is applied per frame
//     to payloads of at least CompressMin bytes, and kept only when it saves
//     at least 1/8 of the payload.
package transport
