package main

import (
	"fmt"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/engine/backend/rbd"
)

// rbdOptions are the rbd.Options of an rbd volume; ceph_conf and keyring
// paths are relative to the config file.
func rbdOptions(cfg *config.Config, v *config.Volume) rbd.Options {
	b := v.Backend
	connect, op := b.RBDTimeouts()
	return rbd.Options{
		ConnectTimeout: connect,
		OpTimeout:      op,
		ConfFile:       cfg.Resolve(b.CephConf),
		Client:         b.Client,
		Keyring:        cfg.Resolve(b.Keyring),
		Pool:           b.Pool,
		Namespace:      b.Namespace,
		Image:          b.Image,
		ReadOnly:       v.ReadOnly,
	}
}

// openRBD opens an rbd volume's existing image. In a build without the
// ceph tag it fails with rbd.ErrNotBuilt, which says how to build one.
func openRBD(cfg *config.Config, v *config.Volume) (backend.Backend, error) {
	b, err := rbd.Open(rbdOptions(cfg, v))
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	return b, nil
}
