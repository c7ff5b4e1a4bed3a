package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twinblock/twinblock/config"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/transport"
	"github.com/twinblock/twinblock/transport/pki"
)

var _ adminVolume = (*engine.Volume)(nil)

// peerLinks runs the node's peer-link listener and hands accepted links to
// the volume they name.
type peerLinks struct {
	cfg  *config.Config
	rc   *config.Replication
	tls  *tls.Config
	log  *slog.Logger
	mode transport.Mode
	ln   *transport.Listener

	mu   sync.Mutex
	vols map[string]*engine.Volume
}

func parseMode(s string) transport.Mode {
	switch s {
	case "memory":
		return transport.ModeMemory
	case "async":
		return transport.ModeAsync
	}
	return transport.ModeSync
}

func newPeerLinks(cfg *config.Config, log *slog.Logger) (*peerLinks, error) {
	rc := cfg.Replication
	p := &peerLinks{cfg: cfg, rc: rc, log: log, mode: parseMode(rc.Mode), vols: map[string]*engine.Volume{}}
	if !rc.InsecurePlaintext {
		t, err := pki.LoadConfig(cfg.Resolve(rc.TLS.CA), cfg.Resolve(rc.TLS.Cert), cfg.Resolve(rc.TLS.Key))
		if err != nil {
			return nil, fmt.Errorf("replication.tls: %w", err)
		}
		p.tls = t
	}
	return p, nil
}

func (p *peerLinks) connOptions() transport.ConnOptions {
	o := transport.ConnOptions{
		PeerID:   p.rc.Peer,
		TLS:      p.tls,
		Insecure: p.rc.InsecurePlaintext,
		Logger:   p.log,
	}
	switch p.rc.Compression {
	case "none":
		o.NoCompression = true
	case "zstd":
		o.Codecs = []transport.Codec{transport.CodecZstd, transport.CodecS2}
	default:
		o.Codecs = []transport.Codec{transport.CodecS2, transport.CodecZstd}
	}
	return o
}

// peerOptions are the engine's replication options for one volume.
func (p *peerLinks) peerOptions(name, mode string) *engine.PeerOptions {
	m := p.mode
	if mode != "" {
		m = parseMode(mode)
	}
	o := &engine.PeerOptions{
		NodeID: p.rc.Peer, Address: p.rc.PeerAddress, Mode: m,
		RetainBytes: int64(p.rc.Retain), AsyncMaxLag: int64(p.rc.AsyncMaxLag),
	}
	if p.rc.AsyncMaxAge != "" {
		o.AsyncMaxAge, _ = time.ParseDuration(p.rc.AsyncMaxAge) // validated by config
	}
	o.Dial = func(ctx context.Context) (transport.Link, error) {
		v := p.volume(name)
		if v == nil {
			return nil, errors.New("volume not open yet")
		}
		co := p.connOptions()
		co.Hello = v.Hello()
		co.Validate = v.ValidatePeer
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		c, _, err := transport.Dial(dctx, transport.DialOptions{Addr: p.rc.PeerAddress, ConnOptions: co})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return o
}

func (p *peerLinks) add(v *engine.Volume) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vols[v.Name()] = v
}

func (p *peerLinks) volume(name string) *engine.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.vols[name]
}

// listen starts accepting peer links.
func (p *peerLinks) listen(ctx context.Context) error {
	co := p.connOptions()
	// The Hello sent is chosen per dialer by HelloFor; this one only
	// satisfies the options check.
	co.Hello = transport.Hello{VolumeName: "-", NodeID: p.cfg.Node, Role: transport.RoleSecondary, Mode: p.mode}
	co.Validate = func(local, remote transport.Hello) error {
		v := p.volume(local.VolumeName)
		if v == nil {
			return transport.Refusal(transport.ReasonVolumeName, "no volume %q here", local.VolumeName)
		}
		return v.ValidatePeer(local, remote)
	}
	ln, err := transport.Listen(p.rc.Listen, transport.ListenOptions{
		ConnOptions: co,
		HelloFor: func(remote transport.Hello) (transport.Hello, error) {
			v := p.volume(remote.VolumeName)
			if v == nil {
				return transport.Hello{}, transport.Refusal(transport.ReasonVolumeName, "no volume %q on node %s", remote.VolumeName, p.cfg.Node)
			}
			return v.Hello(), nil
		},
		OnHandshakeError: func(addr net.Addr, err error) {
			p.log.Warn("peer link refused", "remote", addr, "err", err)
		},
	})
	if err != nil {
		return fmt.Errorf("replication.listen: %w", err)
	}
	p.ln = ln
	p.log.Info("peer link listening", "addr", ln.Addr().String(), "node", p.cfg.Node, "peer", p.rc.Peer, "tls", p.tls != nil)
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			v := p.volume(c.Local().VolumeName)
			if v == nil {
				c.Close()
				continue
			}
			if err := v.Attach(c); err != nil {
				p.log.Warn("peer link not attached", "volume", v.Name(), "err", err)
			}
		}
	}()
	return nil
}

func (p *peerLinks) close() {
	if p.ln != nil {
		p.ln.Close()
	}
}
