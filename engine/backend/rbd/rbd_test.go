//go:build ceph

package rbd_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/backendtest"
	"github.com/twinblock/twinblock/engine/backend/rbd"
	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
)

// These tests run against a real cluster: the one TWINBLOCK_CEPH_A names
// (make test-ceph starts it), or one TestMain starts with
// scripts/ceph-cluster.sh.
var cluster *rbdtest.Cluster

func TestMain(m *testing.M) {
	c, err := rbdtest.Start("TWINBLOCK_CEPH_A")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// newImage creates an image of size bytes and removes it when the test ends.
func newImage(t testing.TB, size int64) (backend.Backend, rbd.Options) {
	t.Helper()
	opts := cluster.Options(rbdtest.ImageName("t"))
	b, err := rbd.Create(opts, size)
	if err != nil {
		t.Fatalf("Create %s: %v", opts.Spec(), err)
	}
	t.Cleanup(func() {
		if err := cluster.RemoveImage(opts.Image); err != nil {
			t.Errorf("removing %s: %v", opts.Image, err)
		}
	})
	return b, opts
}

func TestContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		b, _ := newImage(t, size)
		return b
	})
}

func TestDataSurvivesReopen(t *testing.T) {
	b, opts := newImage(t, 16<<20)
	p := bytes.Repeat([]byte("twinblock"), 1000)
	if _, err := b.WriteAt(p, 4<<20+3); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.WriteAt(p, 0); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("WriteAt after Close: %v, want ErrClosed", err)
	}
	b2, err := rbd.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	got := make([]byte, len(p))
	if _, err := b2.ReadAt(got, 4<<20+3); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("data written before Close is not there after Open")
	}
	// Another client (the rbd CLI) sees the same bytes: the write reached
	// the cluster, not a client cache.
	out := filepath.Join(t.TempDir(), "export")
	if _, err := cluster.RBD("export", "--no-progress", opts.Pool+"/"+opts.Image, out); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[4<<20+3:4<<20+3+len(p)], p) {
		t.Fatal("rbd export does not show the data")
	}
}

func TestResizeVisibleToOtherClients(t *testing.T) {
	b, opts := newImage(t, 8<<20)
	defer b.Close()
	if err := b.(backend.Resizer).Resize(24 << 20); err != nil {
		t.Fatal(err)
	}
	out, err := cluster.RBD("info", "--format", "json", opts.Pool+"/"+opts.Image)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf(`"size":%d`, 24<<20)) {
		t.Fatalf("rbd info after Resize to 24 MiB: %s", out)
	}
}

func TestReadOnly(t *testing.T) {
	b, opts := newImage(t, 8<<20)
	if _, err := b.WriteAt([]byte{7}, 100); err != nil {
		t.Fatal(err)
	}
	b.Close()
	opts.ReadOnly = true
	ro, err := rbd.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, backend.ErrReadOnly) {
		t.Fatalf("WriteAt on read-only: %v", err)
	}
	if err := backend.Discard(ro, 0, 4096); !errors.Is(err, backend.ErrReadOnly) {
		t.Fatalf("Discard on read-only: %v", err)
	}
	p := make([]byte, 1)
	if _, err := ro.ReadAt(p, 100); err != nil || p[0] != 7 {
		t.Fatalf("ReadAt on read-only: %v %v", p, err)
	}
}

func TestCreateRefusesExisting(t *testing.T) {
	b, opts := newImage(t, 8<<20)
	b.Close()
	_, err := rbd.Create(opts, 8<<20)
	if !errors.Is(err, rbd.ErrExists) || !errors.Is(err, backend.ErrConfig) {
		t.Fatalf("Create of an existing image: %v, want ErrExists", err)
	}
}

func TestNamespace(t *testing.T) {
	ns := rbdtest.ImageName("ns")
	if _, err := cluster.RBD("namespace", "create", cluster.Pool+"/"+ns); err != nil {
		t.Fatal(err)
	}
	opts := cluster.Options("img")
	opts.Namespace = ns
	b, err := rbd.Create(opts, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("in a namespace"), 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	out, err := cluster.RBD("ls", cluster.Pool+"/"+ns)
	if err != nil || strings.TrimSpace(out) != "img" {
		t.Fatalf("rbd ls %s: %q %v", ns, out, err)
	}
	if _, err := cluster.RBD("rm", "--no-progress", cluster.Pool+"/"+ns+"/img"); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.RBD("namespace", "remove", cluster.Pool+"/"+ns); err != nil {
		t.Fatal(err)
	}
}

// Bad settings fail at Open, quickly, with an error that names the cause.
func TestBadSettings(t *testing.T) {
	b, good := newImage(t, 4<<20)
	b.Close()
	dir := t.TempDir()

	badKeyring := filepath.Join(dir, "bad.keyring")
	// A well-formed key that is not client.admin's.
	if err := os.WriteFile(badKeyring, []byte("[client.admin]\n\tkey = AQBzXm5lAAAAABAA1x9x3Hq+g9jVx6sHOW0Xbg==\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadConf := filepath.Join(dir, "dead.conf")
	conf, err := os.ReadFile(cluster.Conf)
	if err != nil {
		t.Fatal(err)
	}
	dead := rewriteMonHost(t, string(conf), deadPort(t))
	if err := os.WriteFile(deadConf, []byte(dead), 0o600); err != nil {
		t.Fatal(err)
	}

	// A client whose caps cover another pool only.
	limitedKeyring := filepath.Join(dir, "limited.keyring")
	limitedName := rbdtest.ImageName("limited")
	kr, err := cluster.Ceph("auth", "get-or-create", "client."+limitedName, "mon", "profile rbd", "osd", "profile rbd pool=otherpool")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(limitedKeyring, []byte(kr), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cluster.Ceph("auth", "del", "client."+limitedName) })

	cases := []struct {
		name   string
		mod    func(*rbd.Options)
		want   error
		inText string
	}{
		{"missing pool", func(o *rbd.Options) { o.Pool = "nopool" }, rbd.ErrNoPool, `"nopool"`},
		{"missing image", func(o *rbd.Options) { o.Image = "noimage" }, rbd.ErrNoImage, "noimage"},
		{"missing namespace", func(o *rbd.Options) { o.Namespace = "nons" }, rbd.ErrNoNamespace, `"nons"`},
		{"bad keyring", func(o *rbd.Options) { o.Keyring = badKeyring }, rbd.ErrAuth, "client.admin"},
		{"unknown client", func(o *rbd.Options) { o.Client = "nobody" }, rbd.ErrAuth, "client.nobody"},
		{"caps for another pool", func(o *rbd.Options) { o.Client = limitedName; o.Keyring = limitedKeyring }, rbd.ErrAuth, "client." + limitedName},
		{"keyring file missing", func(o *rbd.Options) { o.Keyring = filepath.Join(dir, "none.keyring") }, backend.ErrConfig, "keyring"},
		{"ceph.conf missing", func(o *rbd.Options) { o.ConfFile = filepath.Join(dir, "none.conf") }, backend.ErrConfig, "ceph_conf"},
		{"unreachable cluster", func(o *rbd.Options) { o.ConfFile = deadConf; o.ConnectTimeout = 2 * time.Second }, rbd.ErrUnreachable, "no monitor answered"},
		{"no pool given", func(o *rbd.Options) { o.Pool = "" }, backend.ErrConfig, "pool: required"},
		{"slash in image", func(o *rbd.Options) { o.Image = "a/b" }, backend.ErrConfig, "image"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			o := good
			tc.mod(&o)
			start := time.Now()
			b, err := rbd.Open(o)
			took := time.Since(start)
			if err == nil {
				b.Close()
				t.Fatalf("Open succeeded")
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, backend.ErrConfig) {
				t.Fatalf("err = %v, want %v (and backend.ErrConfig)", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.inText) {
				t.Fatalf("err = %q does not name %q", err, tc.inText)
			}
			// Bounded: the connect timeout plus slack, never minutes.
			if took > 20*time.Second {
				t.Fatalf("took %v", took)
			}
			t.Logf("%v after %v", err, took.Round(time.Millisecond))
		})
	}
}

// rewriteMonHost points a ceph.conf at 127.0.0.1:port, where nothing
// listens.
func rewriteMonHost(t *testing.T, conf string, port int) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(conf, "\n") {
		k := strings.TrimSpace(l)
		if strings.HasPrefix(k, "mon host") || strings.HasPrefix(k, "public addrv") {
			l = fmt.Sprintf("mon host = 127.0.0.1:%d", port)
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// deadPort is a loopback port nothing listens on.
func deadPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestManyWritesInFlight checks that concurrent writers on one handle all
// land where they should (librbd is used from many goroutines at once).
func TestManyWritesInFlight(t *testing.T) {
	const (
		writers = 32
		per     = 64
		bs      = 4096
	)
	b, _ := newImage(t, writers*per*bs)
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, bs)
			for i := range per {
				blk := i*writers + w
				p[0], p[1], p[bs-1] = byte(w), byte(i), byte(blk)
				if _, err := b.WriteAt(p, int64(blk)*bs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, bs)
	for blk := range writers * per {
		if _, err := b.ReadAt(p, int64(blk)*bs); err != nil {
			t.Fatal(err)
		}
		if w, i := blk%writers, blk/writers; p[0] != byte(w) || p[1] != byte(i) || p[bs-1] != byte(blk) {
			t.Fatalf("block %d holds %d/%d/%d", blk, p[0], p[1], p[bs-1])
		}
	}
}

// BenchmarkWrite4KRandomParallel: 4 KiB writes at random offsets, run with
// -cpu to vary the writers (go test -tags ceph,pacific -bench . -cpu 1,32).
func BenchmarkWrite4KRandomParallel(b *testing.B) {
	const size = 64 << 20
	be, _ := newImage(b, size)
	defer be.Close()
	backendtest.RandomIO(b, be, backendtest.BenchOptions{Region: size})
}
