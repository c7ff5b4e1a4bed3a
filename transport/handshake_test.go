package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/twinblock/twinblock/transport/pki"
)

func TestMutualTLSHandshakeAndTraffic(t *testing.T) {
	p := getPKI(t)
	l, results := startListener(t, ListenOptions{ConnOptions: tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)})
	ca, remote, err := dial(t, l.Addr().String(), tlsOpts(p.ca, p.a, "a", "b", RolePrimary))
	if err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, results)
	if r.err != nil {
		t.Fatal(r.err)
	}
	cb := r.c
	if remote.NodeID != "b" || remote.Role != RoleSecondary || cb.Remote().NodeID != "a" {
		t.Fatalf("remote hellos: dialer saw %q/%s, listener saw %q", remote.NodeID, remote.Role, cb.Remote().NodeID)
	}
	want := testHello("a", RolePrimary)
	got := cb.Remote()
	if got.VolumeUUID != want.VolumeUUID || got.DurableSeq != want.DurableSeq || len(got.History) != 2 ||
		got.Generation != want.Generation || got.Mode != ModeSync {
		t.Fatalf("listener got hello %+v", got)
	}
	if ca.Codec() != CodecS2 || cb.Codec() != CodecS2 {
		t.Fatalf("codec %s/%s, want s2 (first default preference)", ca.Codec(), cb.Codec())
	}
	if err := ca.Send(Record{Seq: 101, Kind: KindWrite, Offset: 0, Length: 4, Data: []byte("data")}); err != nil {
		t.Fatal(err)
	}
	f, err := recvWithin(t, cb)
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := f.(Record); !ok || rec.Seq != 101 || string(rec.Data) != "data" {
		t.Fatalf("got %#v", f)
	}
	if err := cb.Send(Ack{ReceivedSeq: 101, DurableSeq: 101}); err != nil {
		t.Fatal(err)
	}
	if f, err := recvWithin(t, ca); err != nil || f != (Ack{ReceivedSeq: 101, DurableSeq: 101}) {
		t.Fatalf("ack: %#v %v", f, err)
	}
}

// expectBothFail dials with the dialer's options and expects both sides
// to fail; listenerErr must match on the listener side.
func expectBothFail(t *testing.T, lo ListenOptions, do ConnOptions, dialerIs, listenerIs []error) (dErr, lErr error) {
	t.Helper()
	l, results := startListener(t, lo)
	_, _, dErr = dial(t, l.Addr().String(), do)
	if dErr == nil {
		// With TLS 1.3 the client finishes its handshake before the server
		// has checked the client certificate; the refusal then shows on
		// the first read. Our handshake reads the listener's Hello, so
		// Dial itself must still fail.
		t.Fatal("dial succeeded")
	}
	r := waitResult(t, results)
	if r.err == nil {
		t.Fatal("listener side succeeded")
	}
	t.Logf("dialer: %v", dErr)
	t.Logf("listener: %v", r.err)
	for _, e := range dialerIs {
		if !errors.Is(dErr, e) {
			t.Errorf("dialer error %q: not %q", dErr, e)
		}
	}
	for _, e := range listenerIs {
		if !errors.Is(r.err, e) {
			t.Errorf("listener error %q: not %q", r.err, e)
		}
	}
	return dErr, r.err
}

func TestTLSRefusals(t *testing.T) {
	p := getPKI(t)
	server := ListenOptions{ConnOptions: tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)}
	t.Run("client cert from another CA", func(t *testing.T) {
		do := tlsOpts(p.ca, p.a2, "a", "b", RolePrimary)
		expectBothFail(t, server, do, []error{ErrHandshake}, []error{ErrHandshake, pki.ErrUntrusted})
	})
	t.Run("server cert from another CA", func(t *testing.T) {
		lo := ListenOptions{ConnOptions: tlsOpts(p.ca2, p.a2, "b", "a", RoleSecondary)}
		lo.TLS.Certificates = []tls.Certificate{p.a2.TLSCertificate()}
		do := tlsOpts(p.ca, p.a, "a", "b", RolePrimary)
		expectBothFail(t, lo, do, []error{ErrHandshake, pki.ErrUntrusted}, []error{ErrHandshake})
	})
	t.Run("right CA, wrong client identity", func(t *testing.T) {
		do := tlsOpts(p.ca, p.c, "a", "b", RolePrimary) // c's cert, claims to be a
		expectBothFail(t, server, do, []error{ErrHandshake}, []error{ErrHandshake, pki.ErrIdentity})
	})
	t.Run("right CA, wrong server identity", func(t *testing.T) {
		lo := ListenOptions{ConnOptions: tlsOpts(p.ca, p.c, "b", "a", RoleSecondary)}
		do := tlsOpts(p.ca, p.a, "a", "b", RolePrimary)
		expectBothFail(t, lo, do, []error{ErrHandshake, pki.ErrIdentity}, []error{ErrHandshake})
	})
	t.Run("expired client cert", func(t *testing.T) {
		do := tlsOpts(p.ca, p.aOld, "a", "b", RolePrimary)
		_, lErr := expectBothFail(t, server, do, []error{ErrHandshake}, []error{ErrHandshake, pki.ErrUntrusted})
		var ce x509.CertificateInvalidError
		if !errors.As(lErr, &ce) || ce.Reason != x509.Expired {
			t.Fatalf("listener error %v: want x509 Expired", lErr)
		}
	})
	t.Run("TLS 1.2 client", func(t *testing.T) {
		l, results := startListener(t, server)
		cfg := pki.Config(p.ca.Cert, p.a)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		cfg.InsecureSkipVerify = true
		if _, err := rawTLSClient(t, l.Addr().String(), cfg); err == nil {
			t.Fatal("TLS 1.2 handshake succeeded")
		}
		if r := waitResult(t, results); !errors.Is(r.err, ErrHandshake) {
			t.Fatalf("listener: %v", r.err)
		}
	})
	t.Run("plain client to TLS listener", func(t *testing.T) {
		do := insecureOpts("a", "b", RolePrimary)
		expectBothFail(t, server, do, []error{ErrHandshake}, []error{ErrHandshake, ErrBadFrame})
	})
	t.Run("TLS client to plain listener", func(t *testing.T) {
		lo := ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)}
		do := tlsOpts(p.ca, p.a, "a", "b", RolePrimary)
		expectBothFail(t, lo, do, []error{ErrHandshake}, []error{ErrHandshake, ErrBadFrame})
	})
}

func TestTLSRequiredUnlessInsecure(t *testing.T) {
	o := testHello("a", RolePrimary)
	_, _, err := Dial(context.Background(), DialOptions{Addr: "127.0.0.1:1", ConnOptions: ConnOptions{Hello: o, PeerID: "b"}})
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("no TLS, no Insecure: %v", err)
	}
	p := getPKI(t)
	_, err = Listen("127.0.0.1:0", ListenOptions{ConnOptions: ConnOptions{Hello: o, TLS: pki.Config(p.ca.Cert, p.a)}})
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("TLS without PeerID: %v", err)
	}
}

// rawPeer connects to addr with plain TCP and writes b.
func rawPeer(t *testing.T, addr string, b []byte) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if len(b) > 0 {
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	return nc
}

// expectClosed checks that the listener closed the connection (EOF or
// reset) within a generous bound.
func expectClosed(t *testing.T, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("listener did not close the connection")
	}
}

func TestGarbageOnThePort(t *testing.T) {
	p := getPKI(t)
	random := make([]byte, 256)
	rand.Read(random)
	random[0] = 0x01 // neither our magic nor a TLS record
	inputs := map[string][]byte{
		"random bytes": random,
		"HTTP request": []byte("GET / HTTP/1.1\r\nHost: peer\r\n\r\n"),
		"short junk":   []byte("hi\n\x00\x00"),
	}
	for _, secure := range []bool{false, true} {
		lo := ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)}
		name := "plain"
		if secure {
			lo = ListenOptions{ConnOptions: tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)}
			name = "tls"
		}
		for what, b := range inputs {
			t.Run(name+"/"+what, func(t *testing.T) {
				l, results := startListener(t, lo)
				nc := rawPeer(t, l.Addr().String(), b)
				r := waitResult(t, results)
				t.Logf("listener: %v", r.err)
				if !errors.Is(r.err, ErrHandshake) || !errors.Is(r.err, ErrBadFrame) {
					t.Fatalf("listener: %v, want handshake + bad frame", r.err)
				}
				expectClosed(t, nc)
			})
		}
	}
}

func TestSilentClientHitsHandshakeDeadline(t *testing.T) {
	for _, secure := range []bool{false, true} {
		p := getPKI(t)
		co := insecureOpts("b", "a", RoleSecondary)
		if secure {
			co = tlsOpts(p.ca, p.b, "b", "a", RoleSecondary)
		}
		co.HandshakeTimeout = 200 * time.Millisecond
		l, results := startListener(t, ListenOptions{ConnOptions: co})
		nc := rawPeer(t, l.Addr().String(), nil)
		r := waitResult(t, results)
		if !errors.Is(r.err, ErrHandshake) || !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("secure=%v: %v, want handshake timeout", secure, r.err)
		}
		expectClosed(t, nc)
	}
}

func TestRefusedByValidate(t *testing.T) {
	other := testHello("a", RolePrimary)
	other.VolumeUUID[0] ^= 0xff
	bigger := testHello("a", RolePrimary)
	bigger.VolumeSize *= 2
	cases := []struct {
		name   string
		dialer Hello
		reason Reason
	}{
		{"volume uuid", other, ReasonVolumeUUID},
		{"volume size", bigger, ReasonVolumeSize},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			do := insecureOpts("a", "b", RolePrimary)
			do.Hello = c.dialer
			dErr, lErr := expectBothFail(t, ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)}, do,
				[]error{ErrRefused}, []error{ErrRefused})
			var dr, lr *RefuseError
			if !errors.As(dErr, &dr) || !dr.ByPeer || dr.Reason != c.reason {
				t.Fatalf("dialer: %v", dErr)
			}
			if !errors.As(lErr, &lr) || lr.ByPeer || lr.Reason != c.reason {
				t.Fatalf("listener: %v", lErr)
			}
		})
	}
	t.Run("dialer's hook refuses", func(t *testing.T) {
		do := insecureOpts("a", "b", RolePrimary)
		do.Validate = func(local, remote Hello) error {
			if local.Role == RolePrimary && remote.Role == RolePrimary {
				return Refusal(ReasonRoleConflict, "both primary")
			}
			return nil
		}
		dErr, lErr := expectBothFail(t, ListenOptions{ConnOptions: insecureOpts("b", "a", RolePrimary)}, do,
			[]error{ErrRefused}, []error{ErrRefused})
		var dr, lr *RefuseError
		if !errors.As(dErr, &dr) || dr.ByPeer || dr.Reason != ReasonRoleConflict {
			t.Fatalf("dialer: %v", dErr)
		}
		if !errors.As(lErr, &lr) || !lr.ByPeer || lr.Reason != ReasonRoleConflict || lr.Text != "both primary" {
			t.Fatalf("listener: %v", lErr)
		}
	})
	t.Run("plain error from hook is a policy refusal", func(t *testing.T) {
		lo := ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)}
		lo.Validate = func(_, _ Hello) error { return errors.New("maintenance") }
		dErr, _ := expectBothFail(t, lo, insecureOpts("a", "b", RolePrimary), []error{ErrRefused}, []error{ErrRefused})
		var dr *RefuseError
		if !errors.As(dErr, &dr) || dr.Reason != ReasonPolicy || dr.Text != "maintenance" {
			t.Fatalf("dialer: %v", dErr)
		}
	})
	t.Run("wrong peer id in hello", func(t *testing.T) {
		dErr, _ := expectBothFail(t, ListenOptions{ConnOptions: insecureOpts("b", "z", RoleSecondary)},
			insecureOpts("a", "b", RolePrimary), []error{ErrRefused}, []error{ErrRefused})
		var dr *RefuseError
		if !errors.As(dErr, &dr) || dr.Reason != ReasonWrongPeer {
			t.Fatalf("dialer: %v", dErr)
		}
	})
	t.Run("unknown volume via HelloFor", func(t *testing.T) {
		lo := ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)}
		lo.HelloFor = func(remote Hello) (Hello, error) {
			if remote.VolumeName == "vol0" {
				return Hello{}, errors.New("no such volume here")
			}
			return testHello("b", RoleSecondary), nil
		}
		dErr, _ := expectBothFail(t, lo, insecureOpts("a", "b", RolePrimary), []error{ErrRefused}, []error{ErrRefused})
		var dr *RefuseError
		if !errors.As(dErr, &dr) || dr.Reason != ReasonVolumeName {
			t.Fatalf("dialer: %v", dErr)
		}
	})
}

// TestVersionNegotiation plays a future node that only speaks versions 2
// and 3: the v1 listener must answer with a Refuse it can read.
func TestVersionNegotiation(t *testing.T) {
	l, results := startListener(t, ListenOptions{ConnOptions: insecureOpts("b", "a", RoleSecondary)})
	h := testHello("a", RolePrimary)
	h.MinVersion, h.MaxVersion = 2, 3
	nc := rawPeer(t, l.Addr().String(), encodeOrDie(t, h, EncodeOptions{}))
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	fr := NewFrameReader(bufio.NewReader(nc), ReaderOptions{})
	var got []Frame
	for {
		raw, err := fr.ReadFrame()
		if err != nil {
			break
		}
		f, err := raw.Decode()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f)
	}
	if len(got) != 2 || got[0].Type() != TypeHello {
		t.Fatalf("got %#v, want Hello then Refuse", got)
	}
	if r, ok := got[1].(Refuse); !ok || r.Reason != ReasonVersion {
		t.Fatalf("got %#v, want Refuse(version)", got[1])
	}
	if r := waitResult(t, results); !errors.Is(r.err, ErrRefused) {
		t.Fatalf("listener: %v", r.err)
	}
}

func TestCodecNegotiation(t *testing.T) {
	cases := []struct {
		dialer, listener []Codec
		noCompDialer     bool
		want             Codec
	}{
		{[]Codec{CodecZstd, CodecS2}, []Codec{CodecS2}, false, CodecS2},
		{[]Codec{CodecZstd, CodecS2}, []Codec{CodecS2, CodecZstd}, false, CodecZstd},
		{nil, nil, true, CodecNone},
	}
	for _, c := range cases {
		a := insecureOpts("a", "b", RolePrimary)
		a.Codecs, a.NoCompression = c.dialer, c.noCompDialer
		b := insecureOpts("b", "a", RoleSecondary)
		b.Codecs = c.listener
		link, err := Pipe(context.Background(), a, b)
		if err != nil {
			t.Fatal(err)
		}
		if link.A.Codec() != c.want || link.B.Codec() != c.want {
			t.Errorf("%v vs %v: got %s/%s, want %s", c.dialer, c.listener, link.A.Codec(), link.B.Codec(), c.want)
		}
		link.Close()
	}
}

func TestDialContextCancel(t *testing.T) {
	// A listener that accepts and never speaks: Dial must return when ctx
	// is cancelled, long before HandshakeTimeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	o := insecureOpts("a", "b", RolePrimary)
	o.HandshakeTimeout = time.Hour
	done := make(chan error, 1)
	go func() {
		_, _, err := Dial(ctx, DialOptions{Addr: ln.Addr().String(), ConnOptions: o})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrHandshake) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Dial ignored ctx cancellation")
	}
}
