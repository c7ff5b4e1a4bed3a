//go:build !ceph

package rbd_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/rbd"
)

// Without the ceph tag every entry point says how to get a build that has
// Ceph support, and counts as a configuration error.
func TestNotBuilt(t *testing.T) {
	if rbd.Supported {
		t.Fatal("Supported in a build without the ceph tag")
	}
	opts := rbd.Options{Pool: "rbd", Image: "vol0"}
	_, err1 := rbd.Open(opts)
	_, err2 := rbd.Create(opts, 1<<20)
	err3 := rbd.Remove(opts)
	for _, err := range []error{err1, err2, err3} {
		if !errors.Is(err, rbd.ErrNotBuilt) || !errors.Is(err, backend.ErrConfig) {
			t.Fatalf("err = %v, want ErrNotBuilt and backend.ErrConfig", err)
		}
		if !strings.Contains(err.Error(), "make build-ceph") {
			t.Fatalf("err = %q does not say how to build with Ceph", err)
		}
	}
}
