package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Client errors.
var (
	ErrClosed   = errors.New("nbd: client closed")
	ErrProtocol = errors.New("nbd: protocol error from server")
)

// maxClientReply caps a READ reply the client accepts, whatever the
// request said, so a raw request cannot make it allocate gigabytes.
const maxClientReply = 1 << 28

// ClientOptions configures Dial and NewClient.
type ClientOptions struct {
	// ExportName selects the export; empty asks for the default export.
	ExportName string
	// UseExportName negotiates with NBD_OPT_EXPORT_NAME (what very old
	// clients do) instead of NBD_OPT_GO. Meant for tests.
	UseExportName bool
	// CloseTimeout bounds how long Close waits for the server to close
	// the connection after NBD_CMD_DISC (default 5 s).
	CloseTimeout time.Duration
}

// Client is an NBD client connection in the transmission phase. All
// methods are safe for concurrent use; requests from many goroutines are
// in flight at once and matched to replies by handle.
type Client struct {
	conn         net.Conn
	br           *bufio.Reader
	size         uint64
	flags        uint16
	blockSizes   BlockSizes
	closeTimeout time.Duration

	nextHandle atomic.Uint64
	inflight   sync.WaitGroup

	// wmu serialises request writes. waiting counts writers that have
	// announced themselves; the one that brings it to zero flushes, so
	// concurrent requests share a syscall.
	wmu     sync.Mutex
	bw      *bufio.Writer
	waiting atomic.Int32

	done chan struct{} // closed when the reader goroutine exits

	mu struct {
		sync.Mutex
		pending map[uint64]*call
		err     error // why the connection ended; set once
		closing bool
	}
}

type call struct {
	hdr    [requestHeaderSize]byte // here so that it does not escape per call
	typ    uint16
	dst    []byte // READ destination
	dstLen uint32 // expected READ payload when dst is nil (raw requests)
	code   uint32
	data   []byte // READ payload of a raw request
	err    error
	done   chan struct{}
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to an NBD server and negotiates opts.ExportName.
func Dial(ctx context.Context, network, addr string, opts ClientOptions) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial: %w", err)
	}
	c, err := NewClient(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient negotiates on an established connection. On error the caller
// still owns conn.
func NewClient(ctx context.Context, conn net.Conn, opts ClientOptions) (*Client, error) {
	c := &Client{
		conn:         conn,
		br:           bufio.NewReaderSize(conn, 64<<10),
		bw:           bufio.NewWriterSize(conn, 64<<10),
		closeTimeout: opts.CloseTimeout,
		done:         make(chan struct{}),
	}
	if c.closeTimeout <= 0 {
		c.closeTimeout = 5 * time.Second
	}
	c.mu.pending = make(map[uint64]*call)
	stop := watchContext(ctx, conn)
	info, err := negotiate(c.br, c.bw, opts)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c.size, c.flags, c.blockSizes = info.size, info.flags, info.blockSizes
	go c.readLoop()
	return c, nil
}

// watchContext makes conn's I/O fail when ctx ends. The returned stop
// reports whether ctx was still live.
func watchContext(ctx context.Context, conn net.Conn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
}

// negotiate runs the client side of the fixed newstyle handshake.
func negotiate(br *bufio.Reader, bw *bufio.Writer, opts ClientOptions) (exportInfo, error) {
	noZeroes, err := greet(br, bw)
	if err != nil {
		return exportInfo{}, err
	}
	if opts.UseExportName {
		if err := writeOption(bw, optExportName, []byte(opts.ExportName)); err != nil {
			return exportInfo{}, err
		}
		n := 10
		if !noZeroes {
			n += 124
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return exportInfo{}, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME refused (server closed): %w", err)
		}
		return exportInfo{size: binary.BigEndian.Uint64(b), flags: binary.BigEndian.Uint16(b[8:]), haveExport: true}, nil
	}
	return infoOption(br, bw, optGo, opts.ExportName)
}

// greet reads the server greeting and sends the client flags.
func greet(br *bufio.Reader, bw *bufio.Writer) (noZeroes bool, err error) {
	var g [18]byte
	if _, err := io.ReadFull(br, g[:]); err != nil {
		return false, fmt.Errorf("nbd: reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(g[0:]) != nbdMagic || binary.BigEndian.Uint64(g[8:]) != optMagic {
		return false, fmt.Errorf("%w: not a newstyle NBD server", ErrProtocol)
	}
	hf := binary.BigEndian.Uint16(g[16:])
	if hf&flagFixedNewstyle == 0 {
		return false, fmt.Errorf("%w: server does not do fixed newstyle", ErrProtocol)
	}
	cf := clientFlagFixedNewstyle
	if hf&flagNoZeroes != 0 {
		cf |= clientFlagNoZeroes
		noZeroes = true
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], cf)
	if _, err := bw.Write(b[:]); err != nil {
		return false, err
	}
	return noZeroes, bw.Flush()
}

func writeOption(bw *bufio.Writer, opt uint32, data []byte) error {
	var h [optionHeaderSize]byte
	binary.BigEndian.PutUint64(h[0:], optMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	if _, err := bw.Write(h[:]); err != nil {
		return err
	}
	if _, err := bw.Write(data); err != nil {
		return err
	}
	return bw.Flush()
}

// readOptReply reads one option reply for opt; data is capped.
func readOptReply(br *bufio.Reader, opt uint32) (typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading option reply: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != optReplyMagic {
		return 0, nil, fmt.Errorf("%w: bad option reply magic", ErrProtocol)
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != opt {
		return 0, nil, fmt.Errorf("%w: reply for option %d while waiting for %d", ErrProtocol, got, opt)
	}
	typ = binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOptionLength {
		return 0, nil, fmt.Errorf("%w: option reply of %d bytes", ErrProtocol, n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading option reply: %w", err)
	}
	return typ, data, nil
}

// infoOption sends NBD_OPT_INFO or NBD_OPT_GO for name, asking for the
// name, description and block sizes, and collects the replies.
func infoOption(br *bufio.Reader, bw *bufio.Writer, opt uint32, name string) (exportInfo, error) {
	data := make([]byte, 0, 4+len(name)+2+6)
	data = binary.BigEndian.AppendUint32(data, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 3)
	data = binary.BigEndian.AppendUint16(data, infoName)
	data = binary.BigEndian.AppendUint16(data, infoDescription)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := writeOption(bw, opt, data); err != nil {
		return exportInfo{}, err
	}
	info := exportInfo{name: name}
	for {
		typ, d, err := readOptReply(br, opt)
		if err != nil {
			return exportInfo{}, err
		}
		switch {
		case typ == repAck:
			if !info.haveExport {
				return exportInfo{}, fmt.Errorf("%w: no NBD_INFO_EXPORT before ACK", ErrProtocol)
			}
			return info, nil
		case typ == repInfo:
			if err := decodeInfoReply(d, &info); err != nil {
				return exportInfo{}, err
			}
		case typ&(1<<31) != 0:
			return exportInfo{}, &OptionError{Option: opt, Reply: typ, Message: string(d)}
		default:
			return exportInfo{}, fmt.Errorf("%w: unexpected reply type %d", ErrProtocol, typ)
		}
	}
}

// Is lets errors.Is(err, ErrUnknownExport) and errors.Is(err,
// ErrShutdown) work on option errors.
func (e *OptionError) Is(target error) bool {
	switch target {
	case ErrUnknownExport:
		return e.Reply == RepErrUnknown
	case ErrShutdown:
		return e.Reply == RepErrShutdown
	case ErrNotSupported:
		return e.Reply == RepErrUnsupported
	}
	return false
}

// ExportListing is one entry of NBD_OPT_LIST.
type ExportListing struct {
	Name        string
	Description string
}

// ExportInfo is what NBD_OPT_INFO reports about an export.
type ExportInfo struct {
	Name        string
	Description string
	Size        uint64
	Flags       uint16
	BlockSizes  BlockSizes
}

// ListExports runs NBD_OPT_LIST on a fresh connection, ends the session
// with NBD_OPT_ABORT and closes conn.
func ListExports(ctx context.Context, conn net.Conn) ([]ExportListing, error) {
	defer conn.Close()
	stop := watchContext(ctx, conn)
	defer stop()
	br, bw := bufio.NewReader(conn), bufio.NewWriter(conn)
	if _, err := greet(br, bw); err != nil {
		return nil, err
	}
	if err := writeOption(bw, optList, nil); err != nil {
		return nil, err
	}
	var list []ExportListing
	for {
		typ, d, err := readOptReply(br, optList)
		if err != nil {
			return nil, err
		}
		switch {
		case typ == repAck:
			abort(br, bw)
			return list, nil
		case typ == repServer:
			if len(d) < 4 || uint64(binary.BigEndian.Uint32(d))+4 > uint64(len(d)) {
				return nil, fmt.Errorf("%w: malformed NBD_REP_SERVER", ErrProtocol)
			}
			n := binary.BigEndian.Uint32(d)
			list = append(list, ExportListing{Name: string(d[4 : 4+n]), Description: string(d[4+n:])})
		case typ&(1<<31) != 0:
			return nil, &OptionError{Option: optList, Reply: typ, Message: string(d)}
		default:
			return nil, fmt.Errorf("%w: unexpected reply type %d", ErrProtocol, typ)
		}
	}
}

// Info runs NBD_OPT_INFO for name on a fresh connection, ends the session
// with NBD_OPT_ABORT and closes conn.
func Info(ctx context.Context, conn net.Conn, name string) (*ExportInfo, error) {
	defer conn.Close()
	stop := watchContext(ctx, conn)
	defer stop()
	br, bw := bufio.NewReader(conn), bufio.NewWriter(conn)
	if _, err := greet(br, bw); err != nil {
		return nil, err
	}
	info, err := infoOption(br, bw, optInfo, name)
	if err != nil {
		return nil, err
	}
	abort(br, bw)
	return &ExportInfo{Name: info.name, Description: info.description, Size: info.size, Flags: info.flags, BlockSizes: info.blockSizes}, nil
}

// abort ends haggling politely; the reply is read but not required.
func abort(br *bufio.Reader, bw *bufio.Writer) {
	if writeOption(bw, optAbort, nil) == nil {
		_, _, _ = readOptReply(br, optAbort)
	}
}

// Size is the export size in bytes.
func (c *Client) Size() uint64 { return c.size }

// Flags are the transmission flags the server advertised (Flag*).
func (c *Client) Flags() uint16 { return c.flags }

// BlockSizes are the server's block size constraints (zero if it sent none).
func (c *Client) BlockSizes() BlockSizes { return c.blockSizes }

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off uint64) error {
	cl, err := c.start(CmdRead, 0, off, uint32(len(p)), nil, p)
	if err != nil {
		return err
	}
	return c.finish(cl)
}

// WriteAt writes p at off; with fua the server replies only once durable.
func (c *Client) WriteAt(p []byte, off uint64, fua bool) error {
	return c.simple(CmdWrite, fuaFlag(fua), off, uint32(len(p)), p)
}

// Flush asks the server to make completed writes durable.
func (c *Client) Flush() error { return c.simple(CmdFlush, 0, 0, 0, nil) }

// Trim discards [off, off+length).
func (c *Client) Trim(off uint64, length uint32, fua bool) error {
	return c.simple(CmdTrim, fuaFlag(fua), off, length, nil)
}

// WriteZeroes zeroes [off, off+length); noHole forbids punching a hole.
func (c *Client) WriteZeroes(off uint64, length uint32, noHole, fua bool) error {
	f := fuaFlag(fua)
	if noHole {
		f |= CmdFlagNoHole
	}
	return c.simple(CmdWriteZeroes, f, off, length, nil)
}

// Cache asks the server to prefetch [off, off+length).
func (c *Client) Cache(off uint64, length uint32) error {
	return c.simple(CmdCache, 0, off, length, nil)
}

func fuaFlag(fua bool) uint16 {
	if fua {
		return CmdFlagFUA
	}
	return 0
}

func (c *Client) simple(typ, flags uint16, off uint64, length uint32, payload []byte) error {
	cl, err := c.start(typ, flags, off, length, payload, nil)
	if err != nil {
		return err
	}
	return c.finish(cl)
}

// Request is a raw transmission request for Do: any type, flags, offset
// and length, and a payload sent verbatim after the header. Nothing is
// checked, so a test can send what a well-behaved client never would; a
// payload whose size differs from what the server expects desynchronises
// the stream, which is the caller's intent or mistake.
type Request struct {
	Type    uint16
	Flags   uint16
	Offset  uint64
	Length  uint32
	Payload []byte
}

// Do sends a raw request and returns the error code of the simple reply
// and, for a successful READ, the data. err is non-nil only when the
// connection failed.
func (c *Client) Do(req Request) (code uint32, data []byte, err error) {
	if req.Type == CmdDisc {
		return 0, nil, c.Disconnect()
	}
	cl, err := c.start(req.Type, req.Flags, req.Offset, req.Length, req.Payload, nil)
	if err != nil {
		return 0, nil, err
	}
	<-cl.done
	code, data, err = cl.code, cl.data, cl.err
	c.release(cl)
	return code, data, err
}

// start registers a call and sends its request.
func (c *Client) start(typ, flags uint16, off uint64, length uint32, payload, dst []byte) (*call, error) {
	cl := callPool.Get().(*call)
	cl.typ, cl.dst, cl.dstLen, cl.code, cl.data, cl.err = typ, dst, 0, 0, nil, nil
	if typ == CmdRead && dst == nil {
		cl.dstLen = length
	}
	handle := c.nextHandle.Add(1)

	c.mu.Lock()
	if err := c.unusableLocked(); err != nil {
		c.mu.Unlock()
		callPool.Put(cl)
		return nil, err
	}
	c.mu.pending[handle] = cl
	c.inflight.Add(1)
	c.mu.Unlock()

	encodeRequestHeader(cl.hdr[:], requestHeader{magic: requestMagic, flags: flags, typ: typ, handle: handle, offset: off, length: length})
	if err := c.send(cl.hdr[:], payload); err != nil {
		// The reader fails every pending call once the connection is
		// down; make sure it is.
		c.fail(err)
	}
	return cl, nil
}

func (c *Client) unusableLocked() error {
	if c.mu.err != nil {
		return c.mu.err
	}
	if c.mu.closing {
		return ErrClosed
	}
	return nil
}

// send writes one request; the last of several concurrent senders flushes.
func (c *Client) send(hdr, payload []byte) error {
	c.waiting.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.bw.Write(hdr)
	if err == nil && len(payload) > 0 {
		_, err = c.bw.Write(payload)
	}
	if c.waiting.Add(-1) == 0 || err != nil {
		if ferr := c.bw.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (c *Client) finish(cl *call) error {
	<-cl.done
	var err error
	switch {
	case cl.err != nil:
		err = cl.err
	case cl.code != CodeOK:
		err = &Error{Code: cl.code}
	}
	c.release(cl)
	return err
}

func (c *Client) release(cl *call) {
	cl.dst, cl.data = nil, nil
	callPool.Put(cl)
	c.inflight.Done()
}

// fail ends the connection with err (the first error wins).
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.mu.err == nil {
		c.mu.err = err
	}
	c.mu.Unlock()
	c.conn.Close()
}

// readLoop matches replies to pending calls until the connection ends.
func (c *Client) readLoop() {
	defer close(c.done)
	var h [replyHeaderSize]byte
	var err error
	for {
		if _, err = io.ReadFull(c.br, h[:]); err != nil {
			break
		}
		if m := binary.BigEndian.Uint32(h[0:]); m != simpleReplyMagic {
			err = fmt.Errorf("%w: reply magic %#x", ErrProtocol, m)
			break
		}
		code := binary.BigEndian.Uint32(h[4:])
		handle := binary.BigEndian.Uint64(h[8:])
		c.mu.Lock()
		cl := c.mu.pending[handle]
		delete(c.mu.pending, handle)
		c.mu.Unlock()
		if cl == nil {
			err = fmt.Errorf("%w: reply for unknown handle %d", ErrProtocol, handle)
			break
		}
		if cl.typ == CmdRead && code == CodeOK {
			switch {
			case cl.dst != nil:
				_, err = io.ReadFull(c.br, cl.dst)
			case cl.dstLen > maxClientReply:
				err = fmt.Errorf("%w: READ reply of %d bytes", ErrProtocol, cl.dstLen)
			default:
				cl.data = make([]byte, cl.dstLen)
				_, err = io.ReadFull(c.br, cl.data)
			}
			if err != nil {
				cl.err = err
				cl.done <- struct{}{}
				break
			}
		}
		cl.code = code
		cl.done <- struct{}{}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = ErrClosed
	}
	c.fail(err)
	c.mu.Lock()
	err = c.mu.err
	pending := c.mu.pending
	c.mu.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, cl := range pending {
		cl.err = err
		cl.done <- struct{}{}
	}
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// Disconnect sends NBD_CMD_DISC at once, even with requests in flight
// (their replies still arrive: the server drains before closing). Later
// requests fail with ErrClosed. Close is the polite way; this is for
// tests of the server's drain.
func (c *Client) Disconnect() error {
	c.mu.Lock()
	c.mu.closing = true
	c.mu.Unlock()
	var h [requestHeaderSize]byte
	encodeRequestHeader(h[:], requestHeader{magic: requestMagic, typ: CmdDisc, handle: c.nextHandle.Add(1)})
	return c.send(h[:], nil)
}

// WriteRaw writes arbitrary bytes on the connection (tests of broken
// streams). Requests already pending are unaffected by the call itself.
func (c *Client) WriteRaw(b []byte) error {
	return c.send(b, nil)
}

// Close waits for the requests in flight, sends NBD_CMD_DISC, waits for
// the server to close the connection (bounded by CloseTimeout), and
// closes it.
func (c *Client) Close() error {
	c.mu.Lock()
	already := c.mu.closing
	c.mu.closing = true
	dead := c.mu.err != nil
	c.mu.Unlock()
	c.inflight.Wait()
	var err error
	if !dead {
		if !already {
			var h [requestHeaderSize]byte
			encodeRequestHeader(h[:], requestHeader{magic: requestMagic, typ: CmdDisc, handle: c.nextHandle.Add(1)})
			err = c.send(h[:], nil)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(c.closeTimeout))
		<-c.done
	}
	c.fail(ErrClosed)
	return err
}
