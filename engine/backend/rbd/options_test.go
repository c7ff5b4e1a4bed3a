package rbd

import (
	"errors"
	"testing"

	"github.com/twinblock/twinblock/engine/backend"
)

func TestOptionsCheckAndSpec(t *testing.T) {
	good := Options{Pool: "rbd", Image: "vol0"}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	if got := good.Spec(); got != "rbd/vol0" {
		t.Fatalf("Spec = %q", got)
	}
	ns := good
	ns.Namespace = "dc1"
	if got := ns.Spec(); got != "rbd/dc1/vol0" {
		t.Fatalf("Spec = %q", got)
	}
	for _, o := range []Options{{Image: "x"}, {Pool: "p"}, {Pool: "p/q", Image: "x"}, {Pool: "p", Image: "x@snap"}, {Pool: "p", Namespace: "a/b", Image: "x"}} {
		if err := o.Check(); !errors.Is(err, backend.ErrConfig) {
			t.Errorf("Check(%+v) = %v, want ErrConfig", o, err)
		}
	}
	d := Options{Client: "client.tb"}
	d.defaults()
	if d.Client != "tb" || d.ConfFile != DefaultConfFile || d.ConnectTimeout <= 0 || d.OpTimeout <= 0 {
		t.Fatalf("defaults: %+v", d)
	}
}
