//go:build !ceph

package rbd

import (
	"github.com/twinblock/twinblock/engine/backend"
)

// Supported reports whether this build can open RBD images.
const Supported = false

// Open fails with ErrNotBuilt: this build has no librbd.
func Open(opts Options) (backend.Backend, error) {
	return nil, configErr(ErrNotBuilt, nil, "")
}

// Create fails with ErrNotBuilt: this build has no librbd.
func Create(opts Options, size int64) (backend.Backend, error) {
	return nil, configErr(ErrNotBuilt, nil, "")
}

// Remove fails with ErrNotBuilt: this build has no librbd.
func Remove(opts Options) error {
	return configErr(ErrNotBuilt, nil, "")
}
