package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errAbort ends a session the client closed politely during haggling.
var errAbort = errors.New("nbd: client aborted negotiation")

// errHandshake marks a client that broke the handshake rules; the server
// hangs up (proto.md allows a hard disconnect on a violated MUST).
var errHandshake = errors.New("nbd: handshake protocol violation")

// negotiated is the outcome of a successful handshake.
type negotiated struct {
	export *Export
	size   uint64
	flags  uint16
}

// handshake runs the fixed newstyle negotiation on c.br/c.bw until the
// client enters transmission (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), aborts,
// or breaks the protocol. Every length read from the client is capped
// before anything is allocated for it.
func (c *conn) handshake() (negotiated, error) {
	var greet [18]byte
	binary.BigEndian.PutUint64(greet[0:], nbdMagic)
	binary.BigEndian.PutUint64(greet[8:], optMagic)
	binary.BigEndian.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.bw.Write(greet[:]); err != nil {
		return negotiated{}, err
	}
	if err := c.bw.Flush(); err != nil {
		return negotiated{}, err
	}

	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return negotiated{}, err
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return negotiated{}, fmt.Errorf("%w: unknown client flags %#x", errHandshake, clientFlags)
	}
	if clientFlags&clientFlagFixedNewstyle == 0 {
		// Plain newstyle clients cannot take option replies; we only do
		// fixed newstyle (every client of the last decade sets the bit).
		return negotiated{}, fmt.Errorf("%w: client does not do fixed newstyle", errHandshake)
	}
	noZeroes := clientFlags&clientFlagNoZeroes != 0

	var hdr [optionHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return negotiated{}, err
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != optMagic {
			return negotiated{}, fmt.Errorf("%w: bad option magic %#x", errHandshake, m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLength {
			// Skip the data in bounded chunks so that the stream stays in
			// sync; io.Discard's ReadFrom uses a small pooled buffer.
			if _, err := io.CopyN(io.Discard, c.br, int64(length)); err != nil {
				return negotiated{}, err
			}
			if opt == optExportName {
				return negotiated{}, fmt.Errorf("%w: export name of %d bytes", errHandshake, length)
			}
			if err := c.optReply(opt, RepErrTooBig, fmt.Sprintf("option data of %d bytes exceeds the limit of %d", length, maxOptionLength)); err != nil {
				return negotiated{}, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return negotiated{}, err
		}
		if c.stopping.Load() && opt != optAbort {
			if opt == optExportName {
				return negotiated{}, ErrServerClosed
			}
			if err := c.optReply(opt, RepErrShutdown, "server is shutting down"); err != nil {
				return negotiated{}, err
			}
			continue
		}

		switch opt {
		case optExportName:
			e := c.s.lookupExport(string(data))
			if e == nil {
				// NBD_OPT_EXPORT_NAME cannot carry an error: hang up.
				return negotiated{}, fmt.Errorf("%w: %q (NBD_OPT_EXPORT_NAME)", ErrUnknownExport, data)
			}
			n := negotiated{export: e, size: e.Device.Size(), flags: transmissionFlags(e)}
			var b [10 + 124]byte
			binary.BigEndian.PutUint64(b[0:], n.size)
			binary.BigEndian.PutUint16(b[8:], n.flags)
			out := b[:]
			if noZeroes {
				out = b[:10]
			}
			if _, err := c.bw.Write(out); err != nil {
				return negotiated{}, err
			}
			return n, c.bw.Flush()

		case optAbort:
			// proto.md: the server MUST reply with an ACK; the client may
			// already be gone, so a failed write is not an error.
			_ = c.optReply(opt, repAck, "")
			return negotiated{}, errAbort

		case optList:
			if len(data) != 0 {
				if err := c.optReply(opt, RepErrInvalid, "NBD_OPT_LIST takes no data"); err != nil {
					return negotiated{}, err
				}
				continue
			}
			if err := c.listExports(); err != nil {
				return negotiated{}, err
			}

		case optInfo, optGo:
			n, ok, err := c.infoOrGo(opt, data)
			if err != nil {
				return negotiated{}, err
			}
			if ok && opt == optGo {
				return n, nil
			}

		default:
			// NBD_OPT_STRUCTURED_REPLY, STARTTLS, LIST/SET_META_CONTEXT,
			// EXTENDED_HEADERS and anything newer: refused, haggling goes
			// on. A client that asked for structured replies falls back
			// to simple ones.
			if err := c.optReply(opt, RepErrUnsupported, fmt.Sprintf("option %d is not supported by this server", opt)); err != nil {
				return negotiated{}, err
			}
		}
	}
}

// optReply sends one option reply with an optional message and flushes.
func (c *conn) optReply(opt, typ uint32, msg string) error {
	if err := c.writeOptReply(opt, typ, []byte(msg)); err != nil {
		return err
	}
	return c.bw.Flush()
}

// writeOptReply buffers an option reply header and data without flushing.
func (c *conn) writeOptReply(opt, typ uint32, data ...[]byte) error {
	var h [20]byte
	n := 0
	for _, d := range data {
		n += len(d)
	}
	binary.BigEndian.PutUint64(h[0:], optReplyMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(n))
	if _, err := c.bw.Write(h[:]); err != nil {
		return err
	}
	for _, d := range data {
		if _, err := c.bw.Write(d); err != nil {
			return err
		}
	}
	return nil
}

// listExports answers NBD_OPT_LIST: one NBD_REP_SERVER per export (name,
// then the description as the human-readable details), then an ACK.
func (c *conn) listExports() error {
	for _, e := range c.s.exportList() {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(e.Name)))
		if err := c.writeOptReply(optList, repServer, l[:], []byte(e.Name), []byte(e.Description)); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck, "")
}

// infoOrGo answers NBD_OPT_INFO and NBD_OPT_GO. ok reports that the export
// was found and described (for GO: transmission starts now).
func (c *conn) infoOrGo(opt uint32, data []byte) (n negotiated, ok bool, err error) {
	req, perr := decodeInfoRequest(data)
	if perr != nil {
		return n, false, c.optReply(opt, RepErrInvalid, perr.Error())
	}
	e := c.s.lookupExport(req.name)
	if e == nil {
		msg := fmt.Sprintf("unknown export %q", req.name)
		if req.name == "" {
			msg = "no default export: the server has several exports, name one"
		}
		return n, false, c.optReply(opt, RepErrUnknown, msg)
	}
	n = negotiated{export: e, size: e.Device.Size(), flags: transmissionFlags(e)}

	var b [14]byte
	binary.BigEndian.PutUint16(b[0:], infoExport)
	binary.BigEndian.PutUint64(b[2:], n.size)
	binary.BigEndian.PutUint16(b[10:], n.flags)
	if err := c.writeOptReply(opt, repInfo, b[:12]); err != nil {
		return n, false, err
	}
	var sentName, sentDesc bool
	for _, t := range req.infos {
		var typ [2]byte
		binary.BigEndian.PutUint16(typ[:], t)
		switch {
		case t == infoName && !sentName:
			sentName = true
			err = c.writeOptReply(opt, repInfo, typ[:], []byte(e.Name))
		case t == infoDescription && !sentDesc && e.Description != "":
			sentDesc = true
			err = c.writeOptReply(opt, repInfo, typ[:], []byte(e.Description))
		}
		if err != nil {
			return n, false, err
		}
	}
	// Block sizes go out whether or not they were asked for (proto.md lets
	// a server volunteer them), so every client learns the 32 MiB limit.
	binary.BigEndian.PutUint16(b[0:], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:], MinBlockSize)
	binary.BigEndian.PutUint32(b[6:], PreferredBlockSize)
	binary.BigEndian.PutUint32(b[10:], c.s.maxBlockSize)
	if err := c.writeOptReply(opt, repInfo, b[:14]); err != nil {
		return n, false, err
	}
	return n, true, c.optReply(opt, repAck, "")
}
