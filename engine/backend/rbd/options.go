package rbd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
)

// Options say which image to use and how to reach its cluster.
type Options struct {
	// ConfFile is the ceph.conf to read (mon_host, auth settings).
	// Default /etc/ceph/ceph.conf.
	ConfFile string
	// Client is the cephx id without the "client." prefix. Default "admin".
	Client string
	// Keyring is the keyring file holding the client's key. Default:
	// whatever ceph.conf says (or Ceph's default search path).
	Keyring string
	// Pool holds the image.
	Pool string
	// Namespace inside the pool; "" is the default namespace.
	Namespace string
	// Image is the RBD image's name.
	Image string
	// ReadOnly opens the image read-only: writes fail with
	// backend.ErrReadOnly.
	ReadOnly bool
	// ConnectTimeout bounds reaching the monitors and each monitor request
	// (client_mount_timeout, rados_mon_op_timeout). Default 10s.
	ConnectTimeout time.Duration
	// OpTimeout bounds each OSD request (rados_osd_op_timeout): a request
	// that takes longer fails instead of hanging the volume. Default 60s;
	// negative means wait forever (Ceph's own default).
	OpTimeout time.Duration
}

// DefaultConfFile is read when Options.ConfFile is empty.
const DefaultConfFile = "/etc/ceph/ceph.conf"

// Errors, tested with errors.Is. Each also matches backend.ErrConfig.
var (
	// ErrUnreachable: no monitor answered within ConnectTimeout.
	ErrUnreachable = errors.New("rbd: cluster unreachable")
	// ErrAuth: the cluster refused the client (wrong or missing key, or
	// caps that do not cover the pool).
	ErrAuth = errors.New("rbd: authentication failed")
	// ErrNoPool, ErrNoNamespace, ErrNoImage: the named thing does not exist.
	ErrNoPool      = errors.New("rbd: pool not found")
	ErrNoNamespace = errors.New("rbd: namespace not found")
	ErrNoImage     = errors.New("rbd: image not found")
	// ErrExists is returned by Create when the image exists already.
	ErrExists = errors.New("rbd: image already exists")
	// ErrNotBuilt is returned by Open, Create and Remove in a build without the
	// ceph tag.
	ErrNotBuilt = errors.New("this twinblock was built without Ceph support; build with `make build-ceph`")
)

func (o *Options) defaults() {
	if o.ConfFile == "" {
		o.ConfFile = DefaultConfFile
	}
	if o.Client == "" {
		o.Client = "admin"
	}
	o.Client = strings.TrimPrefix(o.Client, "client.")
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 60 * time.Second
	}
}

// Spec is pool[/namespace]/image, the name rbd(8) uses.
func (o Options) Spec() string {
	if o.Namespace != "" {
		return o.Pool + "/" + o.Namespace + "/" + o.Image
	}
	return o.Pool + "/" + o.Image
}

// Check validates the names without touching the cluster.
func (o Options) Check() error {
	for _, f := range []struct{ name, v string }{{"pool", o.Pool}, {"image", o.Image}} {
		if f.v == "" {
			return fmt.Errorf("rbd: %s: required: %w", f.name, backend.ErrConfig)
		}
	}
	for _, f := range []struct{ name, v string }{{"pool", o.Pool}, {"namespace", o.Namespace}, {"image", o.Image}} {
		if strings.ContainsAny(f.v, "/@\x00") {
			return fmt.Errorf("rbd: %s %q: must not contain '/', '@' or NUL: %w", f.name, f.v, backend.ErrConfig)
		}
	}
	return nil
}

// configError is a bad setting: its message is the kind, the detail and
// the cause; it matches kind, backend.ErrConfig and the cause.
type configError struct {
	kind, cause error
	detail      string
}

func configErr(kind, cause error, format string, args ...any) error {
	return &configError{kind: kind, cause: cause, detail: fmt.Sprintf(format, args...)}
}

func (e *configError) Error() string {
	s := e.kind.Error()
	if e.detail != "" {
		s += ": " + e.detail
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *configError) Unwrap() []error {
	errs := []error{e.kind, backend.ErrConfig}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}
