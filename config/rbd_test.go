package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRBDVolume(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tb.yaml")
	if err := os.WriteFile(path, []byte(`
volumes:
  - name: vol0
    backend:
      type: rbd
      ceph_conf: ceph/ceph.conf
      client: twinblock
      keyring: /etc/ceph/ceph.client.twinblock.keyring
      pool: rbd
      namespace: dc1
      image: vol0
      connect_timeout: 5s
      op_timeout: "0"
    journal: {dir: journals/vol0}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := c.Volume("vol0")
	b := v.Backend
	if b.Type != "rbd" || b.CephConf != "ceph/ceph.conf" || b.Client != "twinblock" || b.Pool != "rbd" ||
		b.Namespace != "dc1" || b.Image != "vol0" || b.Keyring != "/etc/ceph/ceph.client.twinblock.keyring" {
		t.Fatalf("backend = %+v", b)
	}
	if ct, ot := b.RBDTimeouts(); ct != 5*time.Second || ot != -1 {
		t.Fatalf("RBDTimeouts = %v, %v; want 5s, -1 (forever)", ct, ot)
	}
	if ct, ot := (&Backend{Type: "rbd"}).RBDTimeouts(); ct != 0 || ot != 0 {
		t.Fatalf("unset RBDTimeouts = %v, %v; want 0, 0 (defaults)", ct, ot)
	}
	if got, want := c.JournalDir(v), filepath.Join(dir, "journals/vol0"); got != want {
		t.Fatalf("JournalDir = %q, want %q", got, want)
	}
	if got, want := c.StatePath(v), filepath.Join(dir, "journals/vol0/state.json"); got != want {
		t.Fatalf("StatePath = %q, want %q", got, want)
	}
	// Round trip through Marshal keeps every field.
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c2.Volumes[0].Backend != b {
		t.Fatalf("round trip: %+v, want %+v", c2.Volumes[0].Backend, b)
	}
}

func TestRBDErrorsNameTheField(t *testing.T) {
	const j = ", journal: {dir: /j}"
	cases := map[string]string{
		"{type: rbd, image: i}" + j:                               "volumes[0].backend.pool: required",
		"{type: rbd, pool: p}" + j:                                "volumes[0].backend.image: required",
		"{type: rbd, pool: p, image: i}":                          "volumes[0].journal.dir: required for an rbd volume",
		"{type: rbd, pool: p, image: 'a/b'}" + j:                  "volumes[0].backend.image",
		"{type: rbd, pool: 'p@s', image: i}" + j:                  "volumes[0].backend.pool",
		"{type: rbd, pool: p, namespace: 'x/y', image: i}" + j:    "volumes[0].backend.namespace",
		"{type: rbd, pool: p, image: i, path: /x}" + j:            "volumes[0].backend.path: not used by type rbd",
		"{type: rbd, pool: p, image: i, client: client.tb}" + j:   `volumes[0].backend.client: "client.tb": give the id without "client."`,
		"{type: file, path: x, pool: p}":                          "volumes[0].backend.pool: only used by type rbd",
		"{type: mem, size: 1M, ceph_conf: c}":                     "volumes[0].backend.ceph_conf: only used by type rbd",
		"{type: rdb, pool: p, image: i}":                          `unknown backend "rdb" (want file, rbd or mem)`,
		"{type: rbd, pool: p, image: i, connect_timeout: 0s}" + j: "volumes[0].backend.connect_timeout",
		"{type: rbd, pool: p, image: i, op_timeout: soon}" + j:    "volumes[0].backend.op_timeout",
		"{type: file, path: x, op_timeout: 1s}":                   "volumes[0].backend.op_timeout: only used by type rbd",
		"{type: rbd, pool: p, image: i, keyrnig: k}" + j:          "keyrnig",
	}
	for in, want := range cases {
		y := "volumes: [{name: a, backend: " + in + "}]"
		_, err := Parse([]byte(y))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): err = %v, want ErrInvalid", y, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): error %q does not name %q", y, err, want)
		}
	}
}
