//go:build !ceph

package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine/backend/rbd"
)

// A build without the ceph tag accepts an rbd volume in the config but
// refuses to open it, saying how to get a build that can.
func TestOpenRBDWithoutCeph(t *testing.T) {
	cfg, err := config.Parse([]byte(`
volumes:
  - name: vol0
    backend: {type: rbd, pool: rbd, image: vol0, ceph_conf: ceph.conf}
    journal: {dir: j}
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.SetDir(dir)
	_, err = openBackend(cfg, &cfg.Volumes[0])
	if !errors.Is(err, rbd.ErrNotBuilt) {
		t.Fatalf("openBackend: %v, want rbd.ErrNotBuilt", err)
	}
	want := "volume vol0: this twinblock was built without Ceph support; build with `make build-ceph`"
	if err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if got := rbdOptions(cfg, &cfg.Volumes[0]).ConfFile; got != filepath.Join(dir, "ceph.conf") {
		t.Fatalf("ceph_conf resolved to %q, want it in the config's directory %s", got, dir)
	}
}
