package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The fuzz targets drive ServeConn through fakeConn: input bytes are what
// the client sends, output is discarded. ServeConn must return (no hang:
// the input ends in EOF) without panicking, and nothing may allocate more
// than the caps allow (the fuzzer's memory limit catches a huge make).

func fuzzServer(t testing.TB) *Server {
	s := NewServer(ServerOptions{Logger: quietLogger(), MaxInFlight: 8})
	for _, e := range []*Export{
		{Name: "vol0", Description: "fuzz", Device: newMemDevice(1 << 20)},
		{Name: "ro", Device: newMemDevice(64 << 10), ReadOnly: true},
	} {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func opt(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var fixedFlags = binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle|clientFlagNoZeroes)

func req(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	b := make([]byte, requestHeaderSize)
	encodeRequestHeader(b, requestHeader{magic: requestMagic, flags: flags, typ: typ, handle: handle, offset: off, length: length})
	return append(b, payload...)
}

// FuzzHandshakeOptions feeds arbitrary bytes as the client side of the
// handshake (starting with the client flags).
func FuzzHandshakeOptions(f *testing.F) {
	f.Add(cat(fixedFlags, opt(optList, nil), opt(optAbort, nil)))
	f.Add(cat(fixedFlags, opt(optInfo, infoData("vol0", infoName, infoDescription, infoBlockSize)), opt(optAbort, nil)))
	f.Add(cat(fixedFlags, opt(optGo, infoData("ro"))))
	f.Add(cat(fixedFlags, opt(optStructuredReply, nil), opt(optStartTLS, nil), opt(optGo, infoData("nope"))))
	f.Add(cat(fixedFlags, opt(optExportName, []byte("vol0"))))
	f.Add(cat(fixedFlags, opt(optExportName, []byte("missing"))))
	f.Add(cat(binary.BigEndian.AppendUint32(nil, clientFlagFixedNewstyle), opt(optExportName, []byte("vol0"))))
	f.Add(cat(fixedFlags, opt(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	// An option announcing 16 MiB of data that never comes.
	f.Add(cat(fixedFlags, binary.BigEndian.AppendUint64(nil, optMagic), []byte{0, 0, 0, 6, 1, 0, 0, 0}))
	f.Add([]byte{0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		s := fuzzServer(t)
		s.ServeConn(&fakeConn{r: bytes.NewReader(in)})
		if st := s.Stats(); st.ConnectionsOpen != 0 {
			t.Fatalf("connection still open: %+v", st)
		}
	})
}

// FuzzRequests feeds arbitrary bytes as the transmission phase after a
// successful NBD_OPT_GO on a writable 1 MiB export.
func FuzzRequests(f *testing.F) {
	f.Add(req(CmdWrite, CmdFlagFUA, 1, 4096, 8, []byte("abcdefgh")), false)
	f.Add(cat(req(CmdRead, 0, 1, 0, 4096, nil), req(CmdFlush, 0, 2, 0, 0, nil), req(CmdDisc, 0, 3, 0, 0, nil)), false)
	f.Add(cat(req(CmdTrim, 0, 1, 0, 1<<20, nil), req(CmdWriteZeroes, CmdFlagNoHole, 2, 512, 512, nil), req(CmdCache, 0, 3, 0, 1, nil)), false)
	f.Add(req(CmdWrite, 0, 1, 1<<20-2, 4, []byte("wxyz")), false)
	f.Add(req(CmdWrite, 0, 1, 0, 0xffffffff, []byte("short")), false)
	f.Add(req(CmdRead, CmdFlagDF, 1, 0, 0xffffffff, nil), true)
	f.Add(req(99, 0xffff, 1, 0xffffffffffffffff, 1, nil), false)
	f.Add(req(CmdWriteZeroes, CmdFlagFastZero, 1, 0, 4096, nil), true)
	f.Add([]byte("garbage that is not a request header"), false)
	f.Fuzz(func(t *testing.T, in []byte, readOnly bool) {
		s := fuzzServer(t)
		name := "vol0"
		if readOnly {
			name = "ro"
		}
		s.ServeConn(&fakeConn{r: bytes.NewReader(cat(fixedFlags, opt(optGo, infoData(name)), in))})
		st := s.Stats()
		if st.ConnectionsOpen != 0 {
			t.Fatalf("connection still open: %+v", st)
		}
		if readOnly && st.BytesWritten != 0 {
			t.Fatalf("read-only export written: %+v", st)
		}
	})
}

// FuzzDecodeInfoRequest checks the NBD_OPT_INFO/GO data decoder: no
// panic, and anything it accepts re-encodes to exactly the input.
func FuzzDecodeInfoRequest(f *testing.F) {
	f.Add(infoData("vol0", infoName, infoBlockSize))
	f.Add(infoData(""))
	f.Add([]byte{0, 0, 0, 1, 'x', 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeInfoRequest(data)
		if err != nil {
			return
		}
		if again := infoData(req.name, req.infos...); !bytes.Equal(again, data) {
			t.Fatalf("accepted % x, re-encodes to % x", data, again)
		}
	})
}

// FuzzDecodeInfoReply checks the client's NBD_REP_INFO decoder.
func FuzzDecodeInfoReply(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 1})
	f.Add(append([]byte{0, 1}, "name"...))
	f.Add([]byte{0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0})
	f.Add([]byte{0, 3, 1})
	f.Add([]byte{0x12, 0x34, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		var info exportInfo
		if err := decodeInfoReply(data, &info); err != nil {
			return
		}
		if len(data) >= 2 && binary.BigEndian.Uint16(data) == infoExport && !info.haveExport {
			t.Fatal("accepted NBD_INFO_EXPORT without recording it")
		}
	})
}

// FuzzRequestHeader checks that header encoding and decoding agree.
func FuzzRequestHeader(f *testing.F) {
	f.Add(req(CmdWrite, CmdFlagFUA, 7, 4096, 512, nil))
	f.Add(make([]byte, requestHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < requestHeaderSize {
			return
		}
		h := decodeRequestHeader(b)
		out := make([]byte, requestHeaderSize)
		encodeRequestHeader(out, h)
		if !bytes.Equal(out, b[:requestHeaderSize]) {
			t.Fatalf("round trip % x -> % x", b[:requestHeaderSize], out)
		}
	})
}
