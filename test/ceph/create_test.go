//go:build ceph

package ceph

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
)

// TestRBDCreate: `twinblock create --backend rbd` makes the image (layering
// only), refuses an image that is there unless --existing, and leaves
// nothing behind when it fails.
func TestRBDCreate(t *testing.T) {
	root := shortTempDir(t)
	n := newNode(t, root, "a")
	n.create("48M", n.rbdArgs(clusterA))
	out, err := clusterA.RBD("info", "--format", "json", clusterA.Pool+"/"+n.image)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Size     int64    `json:"size"`
		Features []string `json:"features"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Size != 48*mib || len(info.Features) != 1 || info.Features[0] != "layering" {
		t.Fatalf("rbd info: %s", out)
	}
	cfg := readText(t, n.Cfg)
	for _, want := range []string{"type: rbd", "pool: rbd", "image: " + n.image, "ceph_conf: " + clusterA.Conf, "dir: journal"} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("config lacks %q:\n%s", want, cfg)
		}
	}

	// The same image for another volume: refused, unless --existing.
	m := newNode(t, root, "m")
	args := []string{"create", volume, "--config", m.Cfg, "--backend", "rbd", "--ceph-conf", clusterA.Conf,
		"--keyring", clusterA.Keyring, "--pool", clusterA.Pool, "--image", n.image, "--journal-dir", filepath.Join(m.Dir, "j")}
	r := tb(t, m.Dir, append(args, "--size", "48M")...)
	if r.err == nil || !strings.Contains(r.stderr, "rbd: image already exists: rbd/"+n.image+" (give --existing") {
		t.Fatalf("create over an existing image: %s", r)
	}
	r = tb(t, m.Dir, append(args, "--existing", "--size", "64M")...)
	if r.err == nil || !strings.Contains(r.stderr, "holds 48M") {
		t.Fatalf("create --existing with another size: %s", r)
	}
	for _, p := range []string{m.Cfg, filepath.Join(m.Dir, "j")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("a failed create left %s behind", p)
		}
	}
	mustTB(t, m.Dir, append(args, "--existing")...)

	// A pool that is not there: nothing created, nothing written.
	x := newNode(t, root, "x")
	img := rbdtest.ImageName("never")
	r = tb(t, x.Dir, "create", volume, "--config", x.Cfg, "--backend", "rbd", "--ceph-conf", clusterA.Conf,
		"--keyring", clusterA.Keyring, "--pool", "nosuchpool", "--image", img, "--size", "8M", "--journal-dir", filepath.Join(x.Dir, "j"))
	if r.err == nil || !strings.Contains(r.stderr, `rbd: pool not found: "nosuchpool"`) {
		t.Fatalf("create in a missing pool: %s", r)
	}
	if _, err := os.Stat(x.Cfg); err == nil {
		t.Fatal("a failed create wrote the config")
	}
	// Refused before touching the cluster: no journal dir.
	r = tb(t, x.Dir, "create", volume, "--config", x.Cfg, "--backend", "rbd", "--pool", "rbd", "--image", img, "--size", "8M")
	if r.err == nil || !strings.Contains(r.stderr, "--journal-dir: required for --backend rbd") {
		t.Fatalf("create without --journal-dir: %s", r)
	}
}
