package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func twoExports(t *testing.T) *Server {
	return newTestServer(t, ServerOptions{},
		&Export{Name: "vol0", Description: "first volume", Device: newMemDevice(testSize)},
		&Export{Name: "vol1", Device: newMemDevice(2 * testSize), ReadOnly: true})
}

func TestRefusedOptionsKeepHaggling(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	for _, opt := range []uint32{optStructuredReply, optStartTLS, optListMetaContext, optSetMetaContext, optExtendedHeaders, 4, 12, 9999} {
		r.sendOpt(opt, nil)
		rep := r.expectReply(opt, RepErrUnsupported)
		if len(rep.data) == 0 {
			t.Fatalf("option %d: refusal without a message", opt)
		}
	}
	// After all that, GO still works and transmission uses simple replies.
	info := r.goExport(optGo, "vol0")
	if got := binary.BigEndian.Uint64(info[infoExport]); got != testSize {
		t.Fatalf("size %d", got)
	}
	hdr := make([]byte, requestHeaderSize)
	encodeRequestHeader(hdr, requestHeader{magic: requestMagic, typ: CmdRead, handle: 77, length: 8})
	r.write(hdr)
	var rep [replyHeaderSize + 8]byte
	if _, err := io.ReadFull(r.br, rep[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(rep[:]) != simpleReplyMagic || binary.BigEndian.Uint64(rep[8:]) != 77 {
		t.Fatalf("reply % x", rep)
	}
}

// TestStructuredReplyRefused: a client that asks for structured replies
// is refused and then gets simple replies, including for a failed READ
// (error code, no payload) followed by a good one.
func TestStructuredReplyRefused(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.sendOpt(optStructuredReply, nil)
	r.expectReply(optStructuredReply, RepErrUnsupported)
	r.goExport(optGo, "vol0")

	hdr := make([]byte, 2*requestHeaderSize)
	encodeRequestHeader(hdr, requestHeader{magic: requestMagic, typ: CmdRead, handle: 1, offset: testSize, length: 4})
	encodeRequestHeader(hdr[requestHeaderSize:], requestHeader{magic: requestMagic, typ: CmdRead, handle: 2, length: 4})
	r.write(hdr)
	var rep [2*replyHeaderSize + 4]byte
	if _, err := io.ReadFull(r.br, rep[:]); err != nil {
		t.Fatal(err)
	}
	// Replies may come in either order; find each by handle.
	first, second := rep[:replyHeaderSize], rep[replyHeaderSize:]
	if binary.BigEndian.Uint64(first[8:]) == 2 {
		first, second = rep[4+replyHeaderSize:], rep[:replyHeaderSize+4]
	}
	if binary.BigEndian.Uint32(first) != simpleReplyMagic || binary.BigEndian.Uint32(first[4:]) != CodeInvalid || binary.BigEndian.Uint64(first[8:]) != 1 {
		t.Fatalf("failed read reply % x", first)
	}
	if binary.BigEndian.Uint32(second) != simpleReplyMagic || binary.BigEndian.Uint32(second[4:]) != 0 || binary.BigEndian.Uint64(second[8:]) != 2 {
		t.Fatalf("good read reply % x", second)
	}
}

func TestList(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle)
	r.sendOpt(optList, []byte("junk"))
	r.expectReply(optList, RepErrInvalid)

	cs, ss := net.Pipe()
	go s.ServeConn(ss)
	list, err := ListExports(testCtx(t), cs)
	if err != nil {
		t.Fatal(err)
	}
	want := []ExportListing{{"vol0", "first volume"}, {"vol1", ""}}
	if len(list) != 2 || list[0] != want[0] || list[1] != want[1] {
		t.Fatalf("list %+v", list)
	}
}

func TestInfo(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)

	r.sendOpt(optInfo, infoData("nope", infoName))
	rep := r.expectReply(optInfo, RepErrUnknown)
	if !strings.Contains(string(rep.data), "nope") {
		t.Fatalf("message %q", rep.data)
	}
	// Empty name with two exports: no default.
	r.sendOpt(optInfo, infoData(""))
	r.expectReply(optInfo, RepErrUnknown)
	// Malformed: name length past the end, count mismatch, too short.
	bad := infoData("vol0")
	binary.BigEndian.PutUint32(bad, 1000)
	for _, d := range [][]byte{bad, append(infoData("vol0"), 0, 1), {0, 0}} {
		r.sendOpt(optInfo, d)
		r.expectReply(optInfo, RepErrInvalid)
	}

	got := r.goExport(optInfo, "vol0", infoName, infoDescription, infoBlockSize, infoName, 42)
	if string(got[infoName]) != "vol0" || string(got[infoDescription]) != "first volume" {
		t.Fatalf("name %q description %q", got[infoName], got[infoDescription])
	}
	bs := got[infoBlockSize]
	if binary.BigEndian.Uint32(bs) != 1 || binary.BigEndian.Uint32(bs[4:]) != 4096 || binary.BigEndian.Uint32(bs[8:]) != 32<<20 {
		t.Fatalf("block sizes % x", bs)
	}
	exp := got[infoExport]
	if binary.BigEndian.Uint64(exp) != testSize || binary.BigEndian.Uint16(exp[8:])&FlagReadOnly != 0 {
		t.Fatalf("export info % x", exp)
	}
	// INFO leaves us haggling: ask about the read-only one.
	got = r.goExport(optInfo, "vol1")
	if _, ok := got[infoDescription]; ok {
		t.Fatal("description sent unasked")
	}
	if f := binary.BigEndian.Uint16(got[infoExport][8:]); f&FlagReadOnly == 0 || f&(FlagSendTrim|FlagSendFUA|FlagSendWriteZeroes) != 0 {
		t.Fatalf("read-only export flags %#x", f)
	}
	if _, ok := got[infoBlockSize]; !ok {
		t.Fatal("block sizes not volunteered")
	}
	r.sendOpt(optAbort, nil)
	r.expectReply(optAbort, repAck)
	r.expectClosed()

	cs, ss := net.Pipe()
	go s.ServeConn(ss)
	info, err := Info(testCtx(t), cs, "vol0")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "vol0" || info.Description != "first volume" || info.Size != testSize || info.BlockSizes.Maximum != 32<<20 {
		t.Fatalf("info %+v", info)
	}
}

func TestGoUnknownExport(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.sendOpt(optGo, infoData("missing"))
	r.expectReply(optGo, RepErrUnknown)
	// Still haggling: GO on the right one works.
	r.goExport(optGo, "vol1")

	cs, ss := net.Pipe()
	go s.ServeConn(ss)
	_, err := NewClient(testCtx(t), cs, ClientOptions{ExportName: "missing"})
	var oe *OptionError
	if !errors.Is(err, ErrUnknownExport) || !errors.As(err, &oe) || oe.Reply != RepErrUnknown {
		t.Fatalf("NewClient unknown export: %v", err)
	}
	cs.Close()
}

func TestDefaultExport(t *testing.T) {
	one := newTestServer(t, ServerOptions{}, &Export{Name: "only", Device: newMemDevice(4096)})
	c := connect(t, one, "pipe", ClientOptions{})
	if c.Size() != 4096 {
		t.Fatalf("default export size %d", c.Size())
	}
	cs, ss := net.Pipe()
	go twoExports(t).ServeConn(ss)
	if _, err := NewClient(testCtx(t), cs, ClientOptions{}); !errors.Is(err, ErrUnknownExport) {
		t.Fatalf("empty name with two exports: %v", err)
	}
	cs.Close()
}

func TestExportNameOption(t *testing.T) {
	s := twoExports(t)
	// The Go client with NBD_OPT_EXPORT_NAME (and NO_ZEROES).
	c := connect(t, s, "pipe", ClientOptions{ExportName: "vol1", UseExportName: true})
	if c.Size() != 2*testSize || c.Flags()&FlagReadOnly == 0 {
		t.Fatalf("size %d flags %#x", c.Size(), c.Flags())
	}
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}

	// Without NO_ZEROES the 124 zero bytes follow.
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle)
	r.sendOpt(optExportName, []byte("vol0"))
	b := make([]byte, 10+124)
	if _, err := io.ReadFull(r.br, b); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(b) != testSize || !bytes.Equal(b[10:], make([]byte, 124)) {
		t.Fatalf("export name reply % x", b)
	}

	// Unknown name: the server can only hang up.
	r = dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.sendOpt(optExportName, []byte("missing"))
	r.expectClosed()
}

func TestOverlongOption(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.sendOpt(optInfo, make([]byte, 1<<20))
	r.expectReply(optInfo, RepErrTooBig)
	r.sendOpt(9999, make([]byte, maxOptionLength+1))
	r.expectReply(9999, RepErrTooBig)
	// A name longer than proto.md's 4096-byte limit is invalid.
	r.sendOpt(optGo, infoData(strings.Repeat("n", 5000)))
	r.expectReply(optGo, RepErrInvalid)
	r.goExport(optGo, "vol0") // in sync
}

func TestHandshakeViolationsClose(t *testing.T) {
	s := twoExports(t)
	for name, fn := range map[string]func(r *rawConn){
		"unknown client flag": func(r *rawConn) { r.greet(clientFlagFixedNewstyle | 1<<7) },
		"not fixed newstyle":  func(r *rawConn) { r.greet(clientFlagNoZeroes) },
		"bad option magic": func(r *rawConn) {
			r.greet(clientFlagFixedNewstyle)
			r.write(make([]byte, optionHeaderSize))
		},
		"export name too long": func(r *rawConn) {
			r.greet(clientFlagFixedNewstyle)
			r.sendOpt(optExportName, make([]byte, maxOptionLength+1))
		},
	} {
		t.Run(name, func(t *testing.T) {
			before := s.Stats().ProtocolErrors
			r := dialRaw(t, s)
			fn(r)
			r.expectClosed()
			waitFor(t, func() bool { return s.Stats().ProtocolErrors == before+1 })
		})
	}
}

func TestShutdownDuringHandshake(t *testing.T) {
	s := twoExports(t)
	r := dialRaw(t, s)
	r.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	r.goExport(optInfo, "vol0")
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(testCtx(t)) }()
	// The connection in negotiation is closed; Shutdown then completes.
	r.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
