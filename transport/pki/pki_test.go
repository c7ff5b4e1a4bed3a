package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGenerateWriteLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca, err := GenerateCA("pair")
	if err != nil {
		t.Fatal(err)
	}
	a, err := GenerateNode(ca, "a", []string{"10.1.2.3", "node-a.dc1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "ca", ca, false); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "a", a, false); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "a", a, false); err == nil {
		t.Fatal("Write overwrote an existing certificate")
	}
	for _, name := range []string{"ca-key.pem", "a-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	cfg, err := LoadConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "a.pem"), filepath.Join(dir, "a-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	if !leaf.Equal(a.Cert) || cfg.MinVersion != tls.VersionTLS13 {
		t.Fatal("loaded config does not hold the node certificate")
	}
	if err := leaf.VerifyHostname("10.1.2.3"); err != nil {
		t.Fatalf("IP SAN: %v", err)
	}
	for _, h := range []string{"127.0.0.1", "localhost", "node-a.dc1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Fatalf("SAN %s: %v", h, err)
		}
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) < 2*365*24*time.Hour {
		t.Fatalf("node validity too short: %v", leaf.NotAfter.Sub(leaf.NotBefore))
	}
	// A CA loaded with its key can sign again.
	ca2, err := LoadCert(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateNode(ca2, "b", nil); err != nil {
		t.Fatal(err)
	}
	// Mismatched key and certificate.
	if _, err := LoadCert(filepath.Join(dir, "a.pem"), filepath.Join(dir, "ca-key.pem")); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := LoadCertificate(filepath.Join(dir, "a-key.pem")); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("key as certificate: %v", err)
	}
}

func TestIdentityUsesURISANNotGenericHosts(t *testing.T) {
	ca, _ := GenerateCA("pair")
	a, _ := GenerateNode(ca, "a", []string{"b.example"})
	if !MatchesIdentity(a.Cert, "a") {
		t.Fatal("a's cert does not name a")
	}
	// Every node cert carries localhost; a host SAN must never pass for a
	// node id.
	for _, id := range []string{"localhost", "b.example", "127.0.0.1", ""} {
		if MatchesIdentity(a.Cert, id) {
			t.Fatalf("a's cert matches %q", id)
		}
	}
}

func TestVerifyPeer(t *testing.T) {
	ca, _ := GenerateCA("pair")
	other, _ := GenerateCA("other")
	a, _ := GenerateNode(ca, "a", nil)
	stranger, _ := GenerateNode(other, "a", nil)
	past := time.Now().Add(-72 * time.Hour)
	old, _ := GenerateNodeWith(ca, "a", nil, Options{NotBefore: past, NotAfter: past.Add(time.Hour)})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	use := x509.ExtKeyUsageClientAuth
	if err := VerifyPeer([]*x509.Certificate{a.Cert}, pool, use, "a"); err != nil {
		t.Fatal(err)
	}
	if err := VerifyPeer([]*x509.Certificate{a.Cert}, pool, use, "b"); !errors.Is(err, ErrIdentity) {
		t.Fatalf("wrong id: %v", err)
	}
	if err := VerifyPeer([]*x509.Certificate{stranger.Cert}, pool, use, "a"); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("other CA: %v", err)
	}
	var ce x509.CertificateInvalidError
	if err := VerifyPeer([]*x509.Certificate{old.Cert}, pool, use, "a"); !errors.Is(err, ErrUntrusted) || !errors.As(err, &ce) || ce.Reason != x509.Expired {
		t.Fatalf("expired: %v", err)
	}
	if err := VerifyPeer(nil, pool, use, "a"); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("no cert: %v", err)
	}
	// The CA certificate itself is not a node certificate.
	if err := VerifyPeer([]*x509.Certificate{ca.Cert}, pool, use, "pair"); err == nil {
		t.Fatal("CA cert accepted as a node")
	}
}

// TestConfigsOverRealTLS checks the hardened configs with crypto/tls alone.
func TestConfigsOverRealTLS(t *testing.T) {
	ca, _ := GenerateCA("pair")
	a, _ := GenerateNode(ca, "a", nil)
	b, _ := GenerateNode(ca, "b", nil)
	base := func(n *Cert) *tls.Config { return Config(ca.Cert, n) }
	if _, err := ClientConfig(&tls.Config{}, "b"); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty config: %v", err)
	}
	run := func(serverPeer, clientPeer string) (serverErr, clientErr error) {
		scfg, err := ServerConfig(base(b), serverPeer)
		if err != nil {
			t.Fatal(err)
		}
		ccfg, err := ClientConfig(base(a), clientPeer)
		if err != nil {
			t.Fatal(err)
		}
		// Real loopback TCP: an unbuffered net.Pipe deadlocks when both
		// sides write at once (an alert against a data record).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c1, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c1.Close()
		defer c2.Close()
		done := make(chan error, 1)
		go func() {
			s := tls.Server(c2, scfg)
			s.SetDeadline(time.Now().Add(10 * time.Second))
			err := s.Handshake()
			if err == nil {
				_, err = s.Read(make([]byte, 1))
			}
			c2.Close()
			done <- err
		}()
		cl := tls.Client(c1, ccfg)
		cl.SetDeadline(time.Now().Add(10 * time.Second))
		clientErr = cl.Handshake()
		if clientErr == nil {
			_, clientErr = cl.Write([]byte{1})
		}
		if clientErr != nil {
			c1.Close()
		}
		return <-done, clientErr
	}
	if s, c := run("a", "b"); s != nil || c != nil {
		t.Fatalf("good pair: server %v, client %v", s, c)
	}
	if s, _ := run("x", "b"); !errors.Is(s, ErrIdentity) {
		t.Fatalf("server expecting x: %v", s)
	}
	if _, c := run("a", "x"); !errors.Is(c, ErrIdentity) {
		t.Fatalf("client expecting x: %v", c)
	}
}
