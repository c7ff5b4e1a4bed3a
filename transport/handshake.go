package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twinblock/twinblock/transport/pki"
)

// Dial connects to o.Addr, runs TLS (unless Insecure) and the Hello
// exchange, and returns the Conn and the peer's Hello. Everything up to a
// usable Conn is bounded by HandshakeTimeout and ctx.
func Dial(ctx context.Context, o DialOptions) (*Conn, Hello, error) {
	opts, err := o.ConnOptions.normalize()
	if err != nil {
		return nil, Hello{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{KeepAlive: 15 * time.Second}
	}
	nc, err := d.DialContext(hctx, "tcp", o.Addr)
	if err != nil {
		return nil, Hello{}, fmt.Errorf("%w: dial %s: %w", ErrHandshake, o.Addr, err)
	}
	return handshake(hctx, nc, opts, true, nil)
}

// DialConn runs the dialer's side of the handshake over an existing
// connection (a custom dialer, a proxy, net.Pipe). It takes ownership of
// nc: on error nc is closed.
func DialConn(ctx context.Context, nc net.Conn, o ConnOptions) (*Conn, Hello, error) {
	opts, err := o.normalize()
	if err != nil {
		nc.Close()
		return nil, Hello{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	return handshake(hctx, nc, opts, true, nil)
}

// Handshake runs the listener's side over an accepted connection and
// returns the Conn and the dialer's Hello. It takes ownership of nc: on
// error nc is closed. Listener.Accept calls it for you.
func Handshake(ctx context.Context, nc net.Conn, o ListenOptions) (*Conn, Hello, error) {
	opts, err := o.ConnOptions.normalize()
	if err != nil {
		nc.Close()
		return nil, Hello{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, opts.HandshakeTimeout)
	defer cancel()
	return handshake(hctx, nc, opts, false, o.HelloFor)
}

// hs holds the state of one handshake in progress.
type hs struct {
	opts   ConnOptions
	dialer bool
	raw    net.Conn // the TCP (or pipe) connection; closing it ends everything
	conn   net.Conn // raw, or the TLS connection over it
	dio    *deadlineIO
	br     *bufio.Reader
	bw     *bufio.Writer
	fr     *FrameReader
}

func handshake(ctx context.Context, nc net.Conn, opts ConnOptions, dialer bool, helloFor func(Hello) (Hello, error)) (c *Conn, remote Hello, err error) {
	h := &hs{opts: opts, dialer: dialer, raw: nc, conn: nc}
	dl, _ := ctx.Deadline()
	nc.SetDeadline(dl)
	// Cancelling ctx must unblock any read or write in progress.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		if err != nil {
			nc.Close()
			if errors.Is(ctx.Err(), context.Canceled) && !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%w: %w", err, context.Canceled)
			}
		}
	}()
	if !opts.Insecure {
		if err := h.startTLS(ctx); err != nil {
			return nil, Hello{}, err
		}
	}
	h.dio = &deadlineIO{nc: h.conn}
	h.br = bufio.NewReaderSize(h.dio, opts.BufferSize)
	h.bw = bufio.NewWriterSize(h.dio, opts.BufferSize)
	h.fr = NewFrameReader(h.br, ReaderOptions{MaxPayload: opts.MaxPayload, Version: Version1, Codecs: opts.Codecs})

	var local Hello
	var ok HelloOK
	if dialer {
		local, remote, ok, err = h.runDialer()
	} else {
		local, remote, ok, err = h.runListener(helloFor)
	}
	if err != nil {
		return nil, Hello{}, err
	}
	// Detach from ctx before the Conn starts: if the cancel callback has
	// already fired (or is firing), the connection's deadline is poisoned.
	if !stop() {
		return nil, Hello{}, fmt.Errorf("%w: %w", ErrHandshake, context.Cause(ctx))
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, Hello{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return newConn(h, local, remote, ok), remote, nil
}

// startTLS runs the TLS handshake. The listener first peeks at the first
// bytes so that a plain client or an HTTP probe gets a clear diagnosis
// instead of crypto/tls's generic "first record does not look like a TLS
// handshake".
func (h *hs) startTLS(ctx context.Context) error {
	if h.dialer {
		cfg, err := pki.ClientConfig(h.opts.TLS, h.opts.PeerID)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrOptions, err)
		}
		tc := tls.Client(h.raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return h.ioErr("TLS", err, "is the peer listening without TLS (Insecure)?")
		}
		h.conn = tc
		return nil
	}
	cfg, err := pki.ServerConfig(h.opts.TLS, h.opts.PeerID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	br := bufio.NewReaderSize(h.raw, 4096)
	first, err := br.Peek(4)
	if err != nil {
		return h.ioErr("TLS", err, "")
	}
	if !(first[0] == 0x16 && first[1] == 0x03) {
		var what string
		switch {
		case binary.BigEndian.Uint32(first) == Magic:
			what = "peer speaks the plain protocol (Insecure) but this listener requires TLS"
		case first[0] >= 0x14 && first[0] <= 0x17:
			what = "a TLS record that is not a ClientHello"
		default:
			what = DescribeGarbage(first)
		}
		return fmt.Errorf("%w: %w: %s", ErrHandshake, ErrBadFrame, what)
	}
	tc := tls.Server(&peekedConn{Conn: h.raw, r: br}, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return h.ioErr("TLS", err, "")
	}
	h.conn = tc
	return nil
}

// peekedConn replays bytes already buffered by a peek.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// ioErr turns an error of the handshake phase into an ErrHandshake error
// with a hint for the usual causes.
func (h *hs) ioErr(phase string, err error, eofHint string) error {
	switch {
	case errors.Is(err, ErrBadFrame):
		return fmt.Errorf("%w: %s: %w", ErrHandshake, phase, err)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s: timeout after %v: %w", ErrHandshake, phase, h.opts.HandshakeTimeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if eofHint != "" {
			return fmt.Errorf("%w: %s: peer closed the connection (%s): %w", ErrHandshake, phase, eofHint, err)
		}
		return fmt.Errorf("%w: %s: peer closed the connection: %w", ErrHandshake, phase, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrHandshake, phase, err)
}

func (h *hs) send(frames ...Frame) error {
	for _, f := range frames {
		b, _, err := AppendFrame(nil, f, EncodeOptions{Version: Version1, MaxPayload: h.opts.MaxPayload})
		if err != nil {
			return err
		}
		if _, err := h.bw.Write(b); err != nil {
			return h.ioErr("send "+f.Type().String(), err, "")
		}
	}
	if err := h.bw.Flush(); err != nil {
		return h.ioErr("send", err, "")
	}
	return nil
}

// recv reads one handshake frame; a Refuse becomes a *RefuseError.
func (h *hs) recv(want FrameType, eofHint string) (Frame, error) {
	raw, err := h.fr.ReadFrame()
	if err != nil {
		return nil, h.ioErr("read "+want.String(), err, eofHint)
	}
	f, err := raw.Decode()
	if err != nil {
		return nil, h.ioErr("read "+want.String(), err, "")
	}
	if r, ok := f.(Refuse); ok {
		return nil, &RefuseError{Reason: r.Reason, Text: r.Text, ByPeer: true}
	}
	if f.Type() != want {
		return nil, fmt.Errorf("%w: %w: got %s, want %s", ErrHandshake, ErrBadFrame, f.Type(), want)
	}
	return f, nil
}

// refuse sends Refuse for a local verdict and returns the local error.
func (h *hs) refuse(rerr *RefuseError) error {
	// Best effort: the peer may already be gone, and our error is the
	// refusal either way.
	_ = h.send(Refuse{Reason: rerr.Reason, Text: truncText(rerr.Text)})
	return rerr
}

func truncText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= MaxText {
		return s
	}
	s = s[:MaxText]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// runDialer: send Hello; read the listener's Hello (or Refuse) and its
// verdict; send ours.
func (h *hs) runDialer() (local, remote Hello, ok HelloOK, err error) {
	local = h.opts.Hello
	if err := h.send(local); err != nil {
		return local, remote, ok, err
	}
	hint := ""
	if h.opts.Insecure {
		hint = "does the peer require TLS?"
	}
	f, err := h.recv(TypeHello, hint)
	if err != nil {
		return local, remote, ok, err
	}
	remote = f.(Hello)
	f, err = h.recv(TypeHelloOK, "")
	if err != nil {
		return local, remote, ok, err
	}
	theirs := f.(HelloOK)
	verdict, rerr := h.check(local, remote, local.Codecs, remote.Codecs)
	if rerr != nil {
		return local, remote, ok, h.refuse(rerr)
	}
	if theirs != verdict {
		return local, remote, ok, h.refuse(Refusal(ReasonProtocol, "peer agreed on %+v, we computed %+v", theirs, verdict))
	}
	if err := h.send(verdict); err != nil {
		return local, remote, ok, err
	}
	return local, remote, verdict, nil
}

// runListener: read the dialer's Hello; answer with our Hello and our
// verdict; read the dialer's verdict. The order is strictly alternating
// so it works over an unbuffered net.Pipe.
func (h *hs) runListener(helloFor func(Hello) (Hello, error)) (local, remote Hello, ok HelloOK, err error) {
	f, err := h.recv(TypeHello, "")
	if err != nil {
		return local, remote, ok, err
	}
	remote = f.(Hello)
	local = h.opts.Hello
	if helloFor != nil {
		l, err := helloFor(remote)
		if err != nil {
			return local, remote, ok, h.refuse(asRefusal(err, ReasonVolumeName))
		}
		l.MinVersion, l.MaxVersion, l.Codecs = local.MinVersion, local.MaxVersion, local.Codecs
		if err := l.validate(); err != nil {
			return local, remote, ok, h.refuse(Refusal(ReasonPolicy, "local hello: %v", err))
		}
		local = l
	}
	verdict, rerr := h.check(local, remote, remote.Codecs, local.Codecs)
	if rerr != nil {
		_ = h.send(local)
		return local, remote, ok, h.refuse(rerr)
	}
	if err := h.send(local, verdict); err != nil {
		return local, remote, ok, err
	}
	f, err = h.recv(TypeHelloOK, "")
	if err != nil {
		return local, remote, ok, err
	}
	if f.(HelloOK) != verdict {
		return local, remote, ok, fmt.Errorf("%w: %w: peer agreed on %+v, we computed %+v", ErrHandshake, ErrBadFrame, f, verdict)
	}
	return local, remote, verdict, nil
}

// check runs the built-in checks and the Validate hook, and computes the
// agreed version and codec (the dialer's first codec the listener has).
func (h *hs) check(local, remote Hello, dialerCodecs, listenerCodecs []Codec) (HelloOK, *RefuseError) {
	lo, hi := max(local.MinVersion, remote.MinVersion), min(local.MaxVersion, remote.MaxVersion)
	if lo > hi {
		return HelloOK{}, Refusal(ReasonVersion, "%s speaks [%d, %d], %s [%d, %d]",
			local.NodeID, local.MinVersion, local.MaxVersion, remote.NodeID, remote.MinVersion, remote.MaxVersion)
	}
	if remote.NodeID == local.NodeID {
		return HelloOK{}, Refusal(ReasonWrongPeer, "peer has the same node id %q", local.NodeID)
	}
	if h.opts.PeerID != "" && remote.NodeID != h.opts.PeerID {
		return HelloOK{}, Refusal(ReasonWrongPeer, "%s expected peer %q, got %q", local.NodeID, h.opts.PeerID, remote.NodeID)
	}
	validate := h.opts.Validate
	if validate == nil {
		validate = SameVolume
	}
	if err := validate(local, remote); err != nil {
		return HelloOK{}, asRefusal(err, ReasonPolicy)
	}
	ok := HelloOK{Version: hi, Codec: CodecNone}
	for _, c := range dialerCodecs {
		if c.known() && contains(listenerCodecs, c) {
			ok.Codec = c
			break
		}
	}
	return ok, nil
}

func contains(cs []Codec, c Codec) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

func asRefusal(err error, def Reason) *RefuseError {
	var re *RefuseError
	if errors.As(err, &re) {
		cp := *re
		cp.ByPeer = false
		return &cp
	}
	return &RefuseError{Reason: def, Text: err.Error()}
}

// deadlineIO sits between the buffers and the connection. Once the Conn is
// running (timeout > 0) every socket read and every write chunk gets a
// fresh deadline: "no progress for Timeout" fails the link, however large
// the frame in transit.
type deadlineIO struct {
	nc      net.Conn
	timeout time.Duration
}

const writeChunk = 256 << 10

func (d *deadlineIO) Read(p []byte) (int, error) {
	if d.timeout > 0 {
		if err := d.nc.SetReadDeadline(time.Now().Add(d.timeout)); err != nil {
			return 0, err
		}
	}
	return d.nc.Read(p)
}

func (d *deadlineIO) Write(p []byte) (int, error) {
	if d.timeout <= 0 {
		return d.nc.Write(p)
	}
	var done int
	for done < len(p) {
		chunk := p[done:min(len(p), done+writeChunk)]
		if err := d.nc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
			return done, err
		}
		n, err := d.nc.Write(chunk)
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
