package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/nbd"
)

// Node is one daemon's directory with its config (twinblock.yaml) for one
// volume and, while it runs, its server. It is driven through the CLI as
// an admin would.
type Node struct {
	T        *testing.T
	Name     string // node id
	Dir      string // holds the config; CLI commands run here
	Cfg      string
	Bin      string // the twinblock binary
	Volume   string // the one volume this node serves
	Timeouts Timeouts
	Srv      *Server // nil while stopped
}

// Start starts `twinblock serve --config` for the node.
func (n *Node) Start() {
	n.T.Helper()
	if n.Srv != nil {
		n.T.Fatalf("node %s already running", n.Name)
	}
	n.Srv = StartServer(n.T, ServeOptions{Bin: n.Bin, Args: []string{"--config", n.Cfg}, Timeouts: n.Timeouts})
}

// Stop sends SIGTERM and requires a clean exit.
func (n *Node) Stop() {
	n.T.Helper()
	n.Srv.Stop()
	n.Srv = nil
}

// Kill9 kills the node at once, as a power cut would.
func (n *Node) Kill9() {
	n.T.Helper()
	n.Srv.Kill9()
	n.Srv = nil
}

// Log is the running server's output, "" while stopped.
func (n *Node) Log() string {
	if n.Srv == nil {
		return ""
	}
	return n.Srv.Log()
}

// CLI runs a twinblock admin command against this node's daemon.
func (n *Node) CLI(args ...string) Result {
	n.T.Helper()
	return Run(n.T, Spec{Name: n.Bin, Args: append(args, "--config", n.Cfg), Dir: n.Dir, Timeout: n.Timeouts.Client})
}

// Status is `twinblock status VOLUME --json` of this node.
func (n *Node) Status() engine.Status {
	n.T.Helper()
	st, err := n.TryStatus()
	if err != nil {
		n.T.Fatalf("node %s: %v\nserver log:\n%s", n.Name, err, n.Log())
	}
	return st
}

// TryStatus is Status returning its error.
func (n *Node) TryStatus() (engine.Status, error) {
	n.T.Helper()
	r := n.CLI("status", n.Volume, "--json")
	if r.Err != nil {
		return engine.Status{}, fmt.Errorf("status: err=%v\n--- stdout:\n%s\n--- stderr:\n%s", r.Err, r.Stdout, r.Stderr)
	}
	var sts []engine.Status
	if err := json.Unmarshal([]byte(r.Stdout), &sts); err != nil {
		return engine.Status{}, fmt.Errorf("status --json: %w in %q", err, r.Stdout)
	}
	if len(sts) != 1 || sts[0].Name != n.Volume {
		return engine.Status{}, fmt.Errorf("status --json: want one entry for %s, got %q", n.Volume, r.Stdout)
	}
	return sts[0], nil
}

// WaitFor polls the status until ok holds, and fails after Timeouts.Wait
// with the last status and the server's log.
func (n *Node) WaitFor(what string, ok func(engine.Status) bool) engine.Status {
	n.T.Helper()
	return n.WaitForWithin(n.Timeouts.Wait, what, ok)
}

// WaitForWithin is WaitFor with its own bound.
func (n *Node) WaitForWithin(d time.Duration, what string, ok func(engine.Status) bool) engine.Status {
	n.T.Helper()
	deadline := time.Now().Add(d)
	for {
		st := n.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(st, "", "  ")
			n.T.Fatalf("node %s: not %s within %v; last status:\n%s\nserver log:\n%s", n.Name, what, d, js, n.Log())
		}
		time.Sleep(n.Timeouts.Poll)
	}
}

// WaitLog polls the server's output until it contains every one of subs.
func (n *Node) WaitLog(what string, subs ...string) {
	n.T.Helper()
	deadline := time.Now().Add(n.Timeouts.Wait)
	for {
		log := n.Log()
		all := true
		for _, s := range subs {
			all = all && strings.Contains(log, s)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			n.T.Fatalf("node %s: log does not show %s (%q) within %v:\n%s", n.Name, what, subs, n.Timeouts.Wait, log)
		}
		time.Sleep(n.Timeouts.Poll)
	}
}

// Dial opens an NBD connection to this node's export; closed at cleanup.
// The session is bounded: after Timeouts.Client the socket is closed under
// it, so a request a hung server never answers fails the test with an
// error instead of hanging it (the client's own Close would wait for it).
func (n *Node) Dial() *nbd.Client {
	n.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", n.Srv.Addr)
	if err != nil {
		n.T.Fatalf("node %s: nbd dial: %v\nserver log:\n%s", n.Name, err, n.Log())
	}
	c, err := nbd.NewClient(ctx, conn, nbd.ClientOptions{ExportName: n.Volume})
	if err != nil {
		conn.Close()
		n.T.Fatalf("node %s: nbd handshake for %s: %v\nserver log:\n%s", n.Name, n.Volume, err, n.Log())
	}
	watchdog := time.AfterFunc(n.Timeouts.Client, func() { conn.Close() })
	n.T.Cleanup(func() {
		watchdog.Stop()
		c.Close()
	})
	return c
}
