package testenv

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts bound the steps of a suite. They are generous against what
// each step needs on an idle machine and tight enough that a hang fails
// long before go test's own timeout.
type Timeouts struct {
	Client time.Duration // one client command
	Start  time.Duration // serve until it accepts connections
	Stop   time.Duration // SIGTERM until exit
	Wait   time.Duration // a status or log poll until it holds
	Poll   time.Duration // between two polls
}

// ServeOptions say how to start `twinblock serve`.
type ServeOptions struct {
	Bin string // the twinblock binary
	// Args are the serve arguments other than --listen and --socket:
	// "--config", path, or the flag form "--name", "vol0", ...
	Args []string
	// Socket also exports on a unix socket in a short directory of its own.
	Socket   bool
	Timeouts Timeouts
}

// Server is one running `twinblock serve` process.
type Server struct {
	t        *testing.T
	Addr     string // 127.0.0.1:PORT
	Socket   string // unix socket path, "" when none
	Cmd      *exec.Cmd
	log      *SyncBuffer
	done     chan struct{} // closed once the process has exited
	state    *os.ProcessState
	cancel   context.CancelFunc
	timeouts Timeouts
}

// StartServer starts serve on a free loopback port and waits until it
// accepts connections. A port taken between our probe and serve's listen
// is retried with another port.
func StartServer(t *testing.T, o ServeOptions) *Server {
	t.Helper()
	var lastLog string
	for attempt := 0; attempt < 3; attempt++ {
		s, retry := tryStart(t, o)
		if s != nil {
			return s
		}
		lastLog = retry
	}
	t.Fatalf("twinblock serve did not start after 3 attempts; last stderr:\n%s", lastLog)
	return nil
}

// tryStart returns the ready server, or nil and the output of a start that
// failed only because the port was taken. Other failures end the test.
func tryStart(t *testing.T, o ServeOptions) (*Server, string) {
	t.Helper()
	addr := FreeAddr(t)
	args := append([]string{"serve", "--listen", addr}, o.Args...)
	s := &Server{t: t, Addr: addr, log: &SyncBuffer{}, done: make(chan struct{}), timeouts: o.Timeouts}
	if o.Socket {
		s.Socket = filepath.Join(ShortTempDir(t, "tb-sock-"), "nbd.sock")
		args = append(args, "--socket", s.Socket)
	}
	// The process lives until Stop or the test's cleanup, not bound to a
	// client-style timeout; the context only serves to kill it in cleanup.
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cmd := Command(ctx, t, o.Bin, args...)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	s.Cmd = cmd
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", o.Bin, err)
	}
	go func() {
		_ = cmd.Wait()
		s.state = cmd.ProcessState
		close(s.done)
	}()

	deadline := time.Now().Add(o.Timeouts.Start)
	for {
		select {
		case <-s.done:
			cancel()
			log := s.log.String()
			if strings.Contains(log, "address already in use") {
				return nil, log
			}
			t.Fatalf("twinblock %s exited before accepting connections (%v):\n%s", strings.Join(args, " "), s.state, log)
		default:
		}
		if s.accepting() {
			break
		}
		if time.Now().After(deadline) {
			s.Kill()
			t.Fatalf("twinblock serve did not accept connections within %v:\n%s", o.Timeouts.Start, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("twinblock serve %s stderr:\n%s", strings.Join(args[1:], " "), s.log.String())
		}
	})
	return s, ""
}

// accepting reports whether every listener answers with the NBD greeting.
func (s *Server) accepting() bool {
	if !NBDGreets("tcp", s.Addr) {
		return false
	}
	return s.Socket == "" || NBDGreets("unix", s.Socket)
}

// NBDGreets reports whether addr answers with the NBD newstyle greeting.
// The probe reads the whole greeting before closing, so the server sees a
// clean EOF rather than a reset.
func NBDGreets(network, addr string) bool {
	c, err := net.DialTimeout(network, addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	// NBDMAGIC, IHAVEOPT, 16 bits of handshake flags.
	var g [18]byte
	if _, err := io.ReadFull(c, g[:]); err != nil {
		return false
	}
	return string(g[:16]) == "NBDMAGICIHAVEOPT"
}

// URI is the TCP URI of an export.
func (s *Server) URI(export string) string { return "nbd://" + s.Addr + "/" + export }

// UnixURI is the unix-socket URI of an export.
func (s *Server) UnixURI(export string) string {
	if s.Socket == "" {
		s.t.Fatal("server started without a unix socket")
	}
	return "nbd+unix:///" + export + "?socket=" + s.Socket
}

// Log is the server's output so far.
func (s *Server) Log() string { return s.log.String() }

// Signal sends sig to the server process.
func (s *Server) Signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to twinblock: %v", sig, err)
	}
}

// Wait waits (at most Timeouts.Stop) for the process to exit and returns
// its exit code.
func (s *Server) Wait() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(s.timeouts.Stop):
		s.Kill()
		s.t.Fatalf("twinblock serve did not exit within %v of SIGTERM:\n%s", s.timeouts.Stop, s.Log())
	}
	return s.state.ExitCode()
}

// Stop sends SIGTERM and asserts a clean exit (code 0).
func (s *Server) Stop() {
	s.t.Helper()
	s.Signal(syscall.SIGTERM)
	if code := s.Wait(); code != 0 {
		s.t.Fatalf("twinblock serve exited %d after SIGTERM (want 0):\n%s", code, s.Log())
	}
}

// Kill9 kills the process at once, as a power cut would.
func (s *Server) Kill9() {
	s.t.Helper()
	s.Signal(syscall.SIGKILL)
	s.Wait()
}

// Kill ends the process group at once (cleanup after a failure).
func (s *Server) Kill() {
	select {
	case <-s.done:
	default:
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	s.cancel()
}
