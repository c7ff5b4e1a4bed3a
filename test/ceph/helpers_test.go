//go:build ceph

package ceph

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
	"github.com/twinblock/twinblock/test/testenv"
)

// Time bounds: generous against what each step needs on an idle machine,
// tight enough that a hang fails long before go test's timeout.
const (
	clientTimeout = 60 * time.Second
	startTimeout  = 30 * time.Second
	stopTimeout   = 45 * time.Second
	waitTimeout   = 30 * time.Second
	pollEvery     = 50 * time.Millisecond
	volume        = "vol0"

	kib = 1 << 10
	mib = 1 << 20
)

// timeouts are this suite's bounds, as testenv takes them.
var timeouts = testenv.Timeouts{Client: clientTimeout, Start: startTimeout, Stop: stopTimeout,
	Wait: waitTimeout, Poll: pollEvery}

// ---- commands ----

type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\n--- stdout:\n%s\n--- stderr:\n%s", r.err, r.stdout, r.stderr)
}

func fromEnv(r testenv.Result) result { return result{stdout: r.Stdout, stderr: r.Stderr, err: r.Err} }

func runIn(t *testing.T, dir string, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	return fromEnv(testenv.Run(t, testenv.Spec{Name: name, Args: args, Timeout: timeout, Dir: dir}))
}

// tb runs a twinblock CLI command (not serve).
func tb(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return runIn(t, dir, clientTimeout, tbBin, args...)
}

func mustTB(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := tb(t, dir, args...)
	if r.err != nil {
		t.Fatalf("twinblock %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := testenv.LookTool(n); !ok {
			t.Fatalf("%s is not installed (make test-deps)", n)
		}
	}
}

// shortTempDir keeps unix socket paths (the admin socket lives beside the
// config) under 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	return testenv.ShortTempDir(t, "tbceph-")
}

var freeAddr = testenv.FreeAddr

// ---- one node of a volume ----

// node is a directory with a config (twinblock.yaml) for one volume;
// testenv.Node starts, stops and polls its daemon.
type node struct {
	*testenv.Node
	repl string // replication listen address
	// rbd: the cluster and image holding the volume; nil for a file node.
	cluster *rbdtest.Cluster
	image   string
	img     string // file node: the image path
}

func newNode(t *testing.T, root, name string) *node {
	t.Helper()
	d := filepath.Join(root, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return &node{Node: &testenv.Node{T: t, Name: name, Dir: d, Cfg: filepath.Join(d, "twinblock.yaml"),
		Bin: tbBin, Volume: volume, Timeouts: timeouts}, repl: freeAddr(t)}
}

// rbdArgs are create's arguments for an rbd volume on c; the image is
// removed when the test ends.
func (n *node) rbdArgs(c *rbdtest.Cluster) []string {
	n.T.Helper()
	n.cluster = c
	n.image = rbdtest.ImageName("e2e-" + n.Name)
	n.T.Cleanup(func() {
		// An image whose daemon was killed keeps the dead client's watch
		// for 30 s and cannot be removed before; the throw-away cluster
		// goes away with it anyway.
		if err := c.RemoveImage(n.image); err != nil && !strings.Contains(err.Error(), "has watchers") {
			n.T.Logf("removing %s: %v", n.image, err)
		}
	})
	return []string{"--backend", "rbd", "--ceph-conf", c.Conf, "--keyring", c.Keyring,
		"--pool", c.Pool, "--image", n.image, "--journal-dir", filepath.Join(n.Dir, "journal")}
}

func (n *node) fileArgs() []string {
	n.img = filepath.Join(n.Dir, volume+".img")
	return []string{"--path", n.img}
}

var uuidLine = regexp.MustCompile(`(?m)^uuid ([0-9a-f]{32}), role (primary|secondary)$`)

// create runs `twinblock create vol0` with the backend args and extra.
func (n *node) create(size string, backendArgs []string, extra ...string) string {
	n.T.Helper()
	args := append([]string{"create", volume, "--config", n.Cfg, "--size", size}, backendArgs...)
	r := mustTB(n.T, n.Dir, append(args, extra...)...)
	if m := uuidLine.FindStringSubmatch(r.stdout); m != nil {
		return m[1]
	}
	return ""
}

// replArgs are create's replication flags for a node whose peer is p.
func (n *node) replArgs(p *node, certs string) []string {
	return []string{"--node", n.Name, "--replication-listen", n.repl, "--peer", p.Name,
		"--peer-address", p.repl, "--tls-dir", certs}
}

func (n *node) cli(args ...string) result {
	n.T.Helper()
	return fromEnv(n.CLI(args...))
}

func (n *node) mustCLI(args ...string) {
	n.T.Helper()
	if r := n.cli(args...); r.err != nil {
		n.T.Fatalf("%s on %s: %s\nserver log:\n%s", strings.Join(args, " "), n.Name, r, n.Log())
	}
}

// makeCerts runs `twinblock certs pair` for nodes a and b.
func makeCerts(t *testing.T) string {
	t.Helper()
	d := filepath.Join(shortTempDir(t), "certs")
	mustTB(t, "", "certs", "pair", "--out", d, "--nodes", "a,b")
	return d
}

// ---- data ----

func testSeed(t *testing.T) uint64 {
	t.Helper()
	return testenv.Seed(t, "TWINBLOCK_CEPH_SEED")
}

var loadOptions = testenv.LoadOptions

// startLoad runs a verified load in the background; wait returns its log
// and the first error the device saw.
func startLoad(dev ackload.Device, o ackload.Options) (wait func() (*ackload.Log, error)) {
	_, wait = testenv.StartLoad(dev, o, clientTimeout)
	return wait
}

func verifyOn(t *testing.T, n *node, dev ackload.Device, l *ackload.Log, what string) ackload.Result {
	t.Helper()
	return testenv.VerifyOn(t, n.Node, dev, l, what)
}

// exportImage reads an rbd image with `rbd export` (another client than
// twinblock: what is there is in the cluster).
func exportImage(t *testing.T, c *rbdtest.Cluster, image string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), image+".raw")
	if _, err := c.RBD("export", "--no-progress", c.Pool+"/"+image, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeText(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
