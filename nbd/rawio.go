package nbd

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// sockIO is what a conn's bufio reader and writer sit on: the net.Conn
// during the handshake, and in transmission, for TCP and unix sockets,
// read(2) and write(2) issued as raw system calls on the non-blocking
// socket, waiting in the network poller like net.Conn does.
//
// Why: net.Conn wraps each call in the runtime's entersyscall and
// exitsyscall, which let another thread take over the P should the call
// block. On a non-blocking socket it never blocks, but the bookkeeping
// keeps the runtime's monitor thread (sysmon) polling every 20 µs and
// waking up, and sometimes hands the P to another thread: at queue depth
// 1 that was a third of the server's context switches. Deadlines and
// Close work as with net.Conn (the poller does the waiting). Under the
// race detector the calls go through package syscall instead (race_on.go).
type sockIO struct {
	nc  net.Conn
	raw syscall.RawConn // nil until transmission, or for other conns

	// The callbacks and their arguments live here, so that a call does not
	// allocate a closure. rp/rn/rerr belong to the reading role, wp/wn/werr
	// to whoever holds wmu.
	readFn, writeFn func(fd uintptr) bool
	rp, wp          []byte
	rn, wn          int
	rerr, werr      error
}

func newSockIO(nc net.Conn) *sockIO {
	s := &sockIO{nc: nc}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	return s
}

// useRaw switches to raw system calls if nc is a TCP or unix socket. It
// is called once, before the transmission phase starts its goroutines.
func (s *sockIO) useRaw() {
	sc, ok := s.nc.(syscall.Conn)
	if !ok {
		return
	}
	switch s.nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	s.raw = raw
}

func (s *sockIO) Read(p []byte) (int, error) {
	if s.raw == nil {
		return s.nc.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.raw.Read(s.readFn)
	n, rerr := s.rn, s.rerr
	s.rp, s.rerr = nil, nil
	if err != nil {
		return n, err
	}
	return n, rerr
}

func (s *sockIO) doRead(fd uintptr) bool {
	for {
		n, errno := rawRead(fd, s.rp)
		switch errno {
		case 0:
			if n == 0 {
				s.rerr = io.EOF
			}
			s.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the poller
		default:
			s.rerr = &net.OpError{Op: "read", Net: s.nc.LocalAddr().Network(), Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: errno}
			return true
		}
	}
}

func (s *sockIO) Write(p []byte) (int, error) {
	if s.raw == nil {
		return s.nc.Write(p)
	}
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.raw.Write(s.writeFn)
	n, werr := s.wn, s.werr
	s.wp, s.werr = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

func (s *sockIO) doWrite(fd uintptr) bool {
	for s.wn < len(s.wp) {
		p := s.wp[s.wn:]
		n, errno := rawWrite(fd, p)
		switch errno {
		case 0:
			s.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			s.werr = &net.OpError{Op: "write", Net: s.nc.LocalAddr().Network(), Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: errno}
			return true
		}
	}
	return true
}

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if raceEnabled {
		n, err := syscall.Read(int(fd), p)
		return max(n, 0), errnoOf(err)
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if raceEnabled {
		n, err := syscall.Write(int(fd), p)
		return max(n, 0), errnoOf(err)
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
