package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/proxy"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/test/testenv"
)

// Helpers for the pair tests: two `twinblock serve` processes, a and b,
// replicating one file volume (vol0) over TLS on loopback, driven through
// the CLI (create, status --json, promote, demote) as an admin would.

const (
	pairVolume = "vol0"
	// waitTimeout bounds every "until the status says X" poll. Reaching
	// any of the states waited for takes well under a second on an idle
	// machine; only the heartbeat timeout (5 s) is slower.
	waitTimeout = 30 * time.Second
	pollEvery   = 50 * time.Millisecond
)

// pairOptions say how newPair builds the two nodes. The zero value is a
// healthy sync pair of 64 MiB volumes with a direct link.
type pairOptions struct {
	size string // volume size of both nodes (default 64M)
	mode string // replication mode: sync (default), memory, async
	// certs is a directory made by makeCerts shared by both nodes; empty:
	// newPair makes one (tests with many pairs make it once).
	certs string
	// viaProxy puts a bench/proxy between a and b: a's peer address is the
	// proxy, which forwards to b's replication port. Only a (the primary)
	// dials, so this carries the whole link while a is primary.
	viaProxy bool

	// Deliberate mismatches for the refusal tests.
	bCerts string // b's certificate directory (another CA)
	bSize  string // b's volume size
	bUUID  bool   // b gets a uuid of its own instead of a's
}

// pairNode is one node's files and, while it runs, its server
// (testenv.Node drives it; the short names below are the tests' words).
type pairNode struct {
	*testenv.Node
	t    *testing.T
	name string // node id: "a" or "b"
	dir  string // holds twinblock.yaml, vol0.img, the journal, the admin socket
	cfg  string
	img  string
	repl string // replication listen address
}

// pair is a primary (a) and a secondary (b) made by `twinblock create`.
type pair struct {
	t     *testing.T
	dir   string
	a, b  *pairNode
	uuid  string
	proxy *proxy.Proxy // nil unless viaProxy
}

// shortTempDir is a temporary directory with a short path (the admin
// socket lives in it).
func shortTempDir(t *testing.T) string {
	t.Helper()
	return testenv.ShortTempDir(t, "tbpair-")
}

// makeCerts runs `twinblock certs pair` for nodes a and b into a new
// directory and returns it. Each call makes a new CA.
func makeCerts(t *testing.T) string {
	t.Helper()
	d := filepath.Join(shortTempDir(t), "certs")
	if r := tb(t, "", "certs", "pair", "--out", d, "--nodes", "a,b"); r.err != nil {
		t.Fatalf("certs pair: %s", r)
	}
	return d
}

var uuidLine = regexp.MustCompile(`(?m)^uuid ([0-9a-f]{32}), role (primary|secondary)$`)

// newPair creates both nodes' volumes (nothing runs yet).
func newPair(t *testing.T, o pairOptions) *pair {
	t.Helper()
	if o.size == "" {
		o.size = "64M"
	}
	if o.certs == "" {
		o.certs = makeCerts(t)
	}
	p := newPairNodes(t)

	aPeerAddr := p.b.repl
	if o.viaProxy {
		px, err := proxy.Start(proxy.Options{Listen: "127.0.0.1:0", Target: p.b.repl})
		if err != nil {
			t.Fatalf("proxy: %v", err)
		}
		t.Cleanup(func() { _ = px.Close() })
		p.proxy = px
		aPeerAddr = px.Addr()
	}
	create := func(n *pairNode, peer, peerAddr, size, certs string, extra ...string) string {
		args := []string{"--size", size}
		if o.mode != "" {
			args = append(args, "--mode", o.mode)
		}
		return n.create(peer, peerAddr, certs, append(args, extra...)...)
	}
	p.uuid = create(p.a, "b", aPeerAddr, o.size, o.certs)
	bSize, bCerts := o.size, o.certs
	if o.bSize != "" {
		bSize = o.bSize
	}
	if o.bCerts != "" {
		bCerts = o.bCerts
	}
	if o.bUUID {
		if u := create(p.b, "a", p.a.repl, bSize, bCerts, "--role", "secondary"); u == p.uuid {
			t.Fatalf("b got a's uuid %s without --uuid", u)
		}
	} else if u := create(p.b, "a", p.a.repl, bSize, bCerts, "--uuid", p.uuid); u != p.uuid {
		t.Fatalf("b created with uuid %s, want a's %s", u, p.uuid)
	}
	return p
}

// newPairNodes makes the directories of nodes a and b in a new short
// temporary directory; nothing is created or started yet.
func newPairNodes(t *testing.T) *pair {
	t.Helper()
	root := shortTempDir(t)
	mk := func(name string) *pairNode {
		d := filepath.Join(root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		n := &pairNode{t: t, name: name, dir: d, cfg: filepath.Join(d, "twinblock.yaml"),
			img: filepath.Join(d, pairVolume+".img"), repl: freeAddr(t)}
		n.Node = &testenv.Node{T: t, Name: name, Dir: d, Cfg: n.cfg, Bin: tbBin, Volume: pairVolume, Timeouts: timeouts}
		return n
	}
	return &pair{t: t, dir: root, a: mk("a"), b: mk("b")}
}

// start starts b, then a, so that a's first dial finds b listening.
func (p *pair) start() {
	p.t.Helper()
	p.b.start()
	p.a.start()
}

// waitConnected waits until a streams live to b with nothing
// outstanding, and b says so too.
func (p *pair) waitConnected() {
	p.t.Helper()
	p.a.waitFor("a connected to b, lag 0", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.PeerDisk == engine.DiskUpToDate && s.LagRecords == 0
	})
	p.b.waitFor("b connected to a", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.Disk == engine.DiskUpToDate
	})
}

// stopSynced waits until the primary's peer holds every record, stops
// the primary, waits until the secondary has applied all of them, stops
// the secondary, and returns the images' sha256 (primary, secondary).
func (p *pair) stopSynced(primary, secondary *pairNode) (string, string) {
	p.t.Helper()
	st := primary.waitFor("peer holds every record (lag 0)", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.LagRecords == 0 && s.InFlight == 0
	})
	primary.stop()
	secondary.waitFor(fmt.Sprintf("secondary applied through seq %d", st.LastSeq), func(s engine.Status) bool {
		return s.LastSeq == st.LastSeq && s.AppliedSeq == st.LastSeq
	})
	secondary.stop()
	return fileSHA(p.t, primary.img), fileSHA(p.t, secondary.img)
}

// requireSameImages fails with the first differing offset of two images.
func requireSameImages(t *testing.T, a, b string) {
	t.Helper()
	walkImages(t, a, b, func(off int64, pa, pb []byte) {
		if bytes.Equal(pa, pb) {
			return
		}
		for i := range pa {
			if pa[i] != pb[i] {
				t.Fatalf("images differ: %s and %s, first at offset %d (4 KiB block %d): %#02x vs %#02x",
					a, b, off+int64(i), (off+int64(i))/4096, pa[i], pb[i])
			}
		}
	})
}

// walkImages reads two images side by side, 1 MiB at a time, and calls
// each with the offset and the two pieces (of equal length). It fails the
// test when the images differ in size or a read fails.
func walkImages(t *testing.T, a, b string, each func(off int64, pa, pb []byte)) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	const chunk = 1 << 20
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb {
			t.Fatalf("images differ in size: %s and %s (at offset %d: %d vs %d bytes)", a, b, off, na, nb)
		}
		each(off, ba[:na], bb[:nb])
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return
			}
			t.Fatalf("reading images: %v / %v", ea, eb)
		}
	}
}

// ---- one node ----

// create runs `twinblock create vol0` for the node's file image, with
// its peer, and returns the uuid it printed.
func (n *pairNode) create(peer, peerAddr, certs string, extra ...string) string {
	n.t.Helper()
	args := append([]string{"create", pairVolume, "--config", n.cfg, "--path", n.img,
		"--node", n.name, "--replication-listen", n.repl, "--peer", peer, "--peer-address", peerAddr,
		"--tls-dir", certs}, extra...)
	r := tb(n.t, n.dir, args...)
	if r.err != nil {
		n.t.Fatalf("create on %s: %s", n.name, r)
	}
	m := uuidLine.FindStringSubmatch(r.stdout)
	if m == nil {
		n.t.Fatalf("create on %s: no uuid line in the output:\n%s", n.name, r.stdout)
	}
	return m[1]
}

// The lower-case methods are testenv.Node's under the tests' names.

func (n *pairNode) start()                    { n.t.Helper(); n.Start() }
func (n *pairNode) stop()                     { n.t.Helper(); n.Stop() }
func (n *pairNode) kill9()                    { n.t.Helper(); n.Kill9() }
func (n *pairNode) cli(args ...string) result { n.t.Helper(); return fromEnv(n.CLI(args...)) }
func (n *pairNode) status() engine.Status     { n.t.Helper(); return n.Status() }
func (n *pairNode) dial() *nbd.Client         { n.t.Helper(); return n.Dial() }

func (n *pairNode) tryStatus() (engine.Status, error) { n.t.Helper(); return n.TryStatus() }

func (n *pairNode) waitFor(what string, ok func(engine.Status) bool) engine.Status {
	n.t.Helper()
	return n.WaitFor(what, ok)
}

func (n *pairNode) waitForWithin(d time.Duration, what string, ok func(engine.Status) bool) engine.Status {
	n.t.Helper()
	return n.WaitForWithin(d, what, ok)
}

func (n *pairNode) waitLog(what string, subs ...string) { n.t.Helper(); n.WaitLog(what, subs...) }

// promote runs `twinblock promote vol0` (plain: no --force) and requires
// success.
func (n *pairNode) promote() {
	n.t.Helper()
	if r := n.cli("promote", pairVolume); r.err != nil {
		n.t.Fatalf("promote on %s: %s\nserver log:\n%s", n.name, r, n.Log())
	}
}

func (n *pairNode) demote() {
	n.t.Helper()
	if r := n.cli("demote", pairVolume); r.err != nil {
		n.t.Fatalf("demote on %s: %s\nserver log:\n%s", n.name, r, n.Log())
	}
}

// requireNotExported checks that the node's NBD server does not offer the
// volume (a secondary must not).
func (n *pairNode) requireNotExported() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := nbd.Dial(ctx, "tcp", n.Srv.Addr, nbd.ClientOptions{ExportName: pairVolume})
	if err == nil {
		c.Close()
		n.t.Fatalf("node %s exports %s although it is secondary", n.name, pairVolume)
	}
	if !errors.Is(err, nbd.ErrUnknownExport) {
		n.t.Fatalf("node %s: dial %s: %v (want unknown export)", n.name, pairVolume, err)
	}
}

// ---- data ----

// testSeed is TWINBLOCK_PAIR_SEED when set (to replay a failure), else a
// fresh one; the test logs it either way.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	return testenv.Seed(t, "TWINBLOCK_PAIR_SEED")
}

// zeroSHA is the sha256 of size zero bytes, streamed.
func zeroSHA(t *testing.T, size int64) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "zero")
	sparseFile(t, f, size)
	return fileSHA(t, f)
}
