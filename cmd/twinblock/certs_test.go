package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinblock/twinblock/transport"
	"github.com/twinblock/twinblock/transport/pki"
)

func runCerts(t *testing.T, args ...string) error {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	return cmd.Execute()
}

// TestCertsPairAndNodeMakeWorkingTLS generates certificates with the CLI
// and runs a real mutual-TLS peer handshake with them.
func TestCertsPairAndNodeMakeWorkingTLS(t *testing.T) {
	dir := t.TempDir()
	if err := runCerts(t, "certs", "pair", "--out", dir, "--nodes", "a,b"); err != nil {
		t.Fatal(err)
	}
	if err := runCerts(t, "certs", "pair", "--out", dir, "--nodes", "a,b"); err == nil {
		t.Fatal("second pair run overwrote the files without --force")
	}
	// A third node cert from the same CA via `certs node`.
	cdir := filepath.Join(dir, "c")
	if err := runCerts(t, "certs", "node", "--ca", dir, "--node", "c", "--host", "10.9.9.9", "--out", cdir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a-key.pem", "b-key.pem", "ca-key.pem", "c/c-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	load := func(d, node string) *transport.ConnOptions {
		cfg, err := pki.LoadConfig(filepath.Join(d, "ca.pem"), filepath.Join(d, node+".pem"), filepath.Join(d, node+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return &transport.ConnOptions{TLS: cfg, HandshakeTimeout: 10 * time.Second}
	}
	hello := func(node string, role transport.Role) transport.Hello {
		return transport.Hello{VolumeName: "vol0", VolumeSize: 1 << 20, NodeID: node, Role: role, Mode: transport.ModeSync}
	}
	lo := load(dir, "b")
	lo.Hello, lo.PeerID = hello("b", transport.RoleSecondary), "a"
	l, err := transport.Listen("127.0.0.1:0", transport.ListenOptions{ConnOptions: *lo})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		if c, err := l.Accept(ctx); err == nil {
			defer c.Close()
			c.Recv()
		}
	}()
	do := load(dir, "a")
	do.Hello, do.PeerID = hello("a", transport.RolePrimary), "b"
	c, remote, err := transport.Dial(ctx, transport.DialOptions{Addr: l.Addr().String(), ConnOptions: *do})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if remote.NodeID != "b" {
		t.Fatalf("remote %q", remote.NodeID)
	}
	// c's certificate (same CA) must not pass as a.
	co := load(cdir, "c")
	co.Hello, co.PeerID = hello("a", transport.RolePrimary), "b"
	if _, _, err := transport.Dial(ctx, transport.DialOptions{Addr: l.Addr().String(), ConnOptions: *co}); err == nil {
		t.Fatal("c's certificate was accepted as node a")
	}
}
