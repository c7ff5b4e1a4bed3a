package transport

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/transport/pki"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

var testUUID = [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func testHello(node string, role Role) Hello {
	return Hello{
		VolumeName: "vol0", VolumeUUID: testUUID, VolumeSize: 1 << 30, NodeID: node,
		Role: role, Mode: ModeSync, Generation: 0x1111, History: []GenEntry{{0x0f0f, 10}, {0x0e0e, 5}},
		FirstSeq: 5, DurableSeq: 100, AppliedSeq: 90,
	}
}

// insecureOpts returns plain-TCP options for node id self expecting peer.
func insecureOpts(self, peer string, role Role) ConnOptions {
	return ConnOptions{
		Hello: testHello(self, role), PeerID: peer, Insecure: true,
		HandshakeTimeout: 5 * time.Second, Logger: quietLog,
	}
}

// testPKI is one pair CA with nodes a and b, plus strangers for the
// refusal tests: c (same CA, wrong identity), a2 (other CA), aOld (expired).
type testPKI struct {
	ca, ca2           *pki.Cert
	a, b, c, a2, aOld *pki.Cert
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
)

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		must := func(c *pki.Cert, err error) *pki.Cert {
			if err != nil {
				panic(err)
			}
			return c
		}
		p := &testPKI{}
		p.ca = must(pki.GenerateCA("pair"))
		p.ca2 = must(pki.GenerateCA("other pair"))
		p.a = must(pki.GenerateNode(p.ca, "a", nil))
		p.b = must(pki.GenerateNode(p.ca, "b", nil))
		p.c = must(pki.GenerateNode(p.ca, "c", nil))
		p.a2 = must(pki.GenerateNode(p.ca2, "a", nil))
		past := time.Now().Add(-48 * time.Hour)
		p.aOld = must(pki.GenerateNodeWith(p.ca, "a", nil, pki.Options{NotBefore: past, NotAfter: past.Add(time.Hour)}))
		pkiVal = p
	})
	return pkiVal
}

func tlsOpts(ca *pki.Cert, node *pki.Cert, self, peer string, role Role) ConnOptions {
	return ConnOptions{
		Hello: testHello(self, role), PeerID: peer, TLS: pki.Config(ca.Cert, node),
		HandshakeTimeout: 5 * time.Second, Logger: quietLog,
	}
}

// hsResult collects the listener side's outcome.
type hsResult struct {
	c   *Conn
	err error
}

// startListener listens on loopback; every handshake outcome (good or
// bad) is delivered on the returned channel.
func startListener(t *testing.T, o ListenOptions) (*Listener, <-chan hsResult) {
	t.Helper()
	ch := make(chan hsResult, 16)
	o.OnHandshakeError = func(_ net.Addr, err error) { ch <- hsResult{err: err} }
	l, err := Listen("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept(ctx)
			if err != nil {
				return
			}
			ch <- hsResult{c: c}
		}
	}()
	t.Cleanup(func() {
		cancel()
		l.Close()
		wg.Wait()
		for {
			select {
			case r := <-ch:
				if r.c != nil {
					r.c.Abort()
				}
			default:
				return
			}
		}
	})
	return l, ch
}

func waitResult(t *testing.T, ch <-chan hsResult) hsResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.c != nil {
			t.Cleanup(r.c.Abort)
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("listener side: no handshake outcome within 20s")
	}
	return hsResult{}
}

func dial(t *testing.T, addr string, o ConnOptions) (*Conn, Hello, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, h, err := Dial(ctx, DialOptions{Addr: addr, ConnOptions: o})
	if c != nil {
		t.Cleanup(c.Abort)
	}
	return c, h, err
}

// recvWithin calls Recv with a generous bound so a bug fails the test
// instead of hanging it.
func recvWithin(t *testing.T, c *Conn) (Frame, error) {
	t.Helper()
	type r struct {
		f   Frame
		err error
	}
	ch := make(chan r, 1)
	go func() { f, err := c.Recv(); ch <- r{f, err} }()
	select {
	case v := <-ch:
		return v.f, v.err
	case <-time.After(20 * time.Second):
		t.Fatal("Recv: nothing within 20s")
	}
	return nil, nil
}

// rawTLSClient opens a TLS connection with cfg (no twinblock handshake).
func rawTLSClient(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(nc, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return tc, tc.Handshake()
}
