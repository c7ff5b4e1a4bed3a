package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// Pinning says which CPUs each process runs on (taskset -c LIST). Empty
// fields mean unpinned.
type Pinning struct {
	Primary   string `json:"primary,omitempty"`   // the standalone daemon or the pair's primary
	Client    string `json:"client,omitempty"`    // fio against the volume
	Secondary string `json:"secondary,omitempty"` // the secondary and the WAN proxy
}

// exportName is the volume every setup creates and fio writes to.
const exportName = "vol0"

// commandTimeout bounds twinblock create, certs and status: none of them
// does more than a few small file writes or one admin-socket round trip.
const commandTimeout = 30 * time.Second

// setup is one configuration under test: a standalone file volume, or a
// pair (primary a, secondary b) with an optional WAN proxy between them.
// Its files are made once (create) and its daemons started and stopped
// around each group of samples (start, stop), so only one configuration
// uses the CPUs and the disk at a time.
type setup struct {
	name       string
	mode       string        // replication mode; "" for standalone
	wanLatency time.Duration // one way; 0 = primary dials the secondary directly
	dir        string

	bin, taskset string
	pin          Pinning
	size         int64
	startTimeout time.Duration

	aCfg, bCfg   string // config files; bCfg "" for standalone
	aSock, bSock string // NBD unix sockets
	bRepl        string // secondary's peer-link address
	proxyAddr    string // where the primary dials when wanLatency > 0
	proxyCtl     string // the proxy's HTTP control address (readiness)

	procs []*process // running, in start order
}

func (s *setup) paired() bool { return s.mode != "" }

// URI is fio's address of the exported volume (the primary's unix socket).
func (s *setup) URI() string {
	return "nbd+unix:///" + exportName + "?socket=" + s.aSock
}

// argv prefixes taskset when cpus is set.
func (s *setup) argv(cpus string, args ...string) []string {
	if cpus == "" {
		return args
	}
	return append([]string{s.taskset, "-c", cpus}, args...)
}

// create makes the volumes (and, for a pair, reads the primary's uuid to
// create the secondary's copy). certs is the directory of `twinblock certs
// pair --nodes a,b`.
func (s *setup) create(ctx context.Context, certs string) error {
	a := filepath.Join(s.dir, "a")
	if err := os.MkdirAll(a, 0o755); err != nil {
		return err
	}
	s.aCfg = filepath.Join(a, "twinblock.yaml")
	s.aSock = filepath.Join(a, "nbd.sock")
	if len(s.aSock) > 100 {
		// sun_path holds 108 bytes; fail clearly rather than in the daemon.
		return fmt.Errorf("%w: socket path %s too long for a unix socket: use a shorter --dir", ErrOptions, s.aSock)
	}
	size := strconv.FormatInt(s.size, 10)
	create := []string{s.bin, "create", exportName, "--config", s.aCfg, "--path", filepath.Join(a, "vol0.img"), "--size", size}
	if !s.paired() {
		_, err := runCommand(ctx, commandTimeout, create...)
		return err
	}
	b := filepath.Join(s.dir, "b")
	if err := os.MkdirAll(b, 0o755); err != nil {
		return err
	}
	s.bCfg = filepath.Join(b, "twinblock.yaml")
	s.bSock = filepath.Join(b, "nbd.sock")
	aRepl, err := bench.FreeTCPAddr()
	if err != nil {
		return err
	}
	if s.bRepl, err = bench.FreeTCPAddr(); err != nil {
		return err
	}
	dial := s.bRepl
	if s.wanLatency > 0 {
		if s.proxyAddr, err = bench.FreeTCPAddr(); err != nil {
			return err
		}
		if s.proxyCtl, err = bench.FreeTCPAddr(); err != nil {
			return err
		}
		dial = s.proxyAddr
	}
	aArgs := append(create, "--node", "a", "--replication-listen", aRepl, "--peer", "b",
		"--peer-address", dial, "--tls-dir", certs, "--mode", s.mode)
	if _, err := runCommand(ctx, commandTimeout, aArgs...); err != nil {
		return err
	}
	uuid, err := readUUID(filepath.Join(a, "vol0.img.journal", "state.json"))
	if err != nil {
		return err
	}
	bArgs := []string{s.bin, "create", exportName, "--config", s.bCfg, "--path", filepath.Join(b, "vol0.img"), "--size", size,
		"--node", "b", "--uuid", uuid, "--replication-listen", s.bRepl, "--peer", "a",
		"--peer-address", aRepl, "--tls-dir", certs, "--mode", s.mode}
	_, err = runCommand(ctx, commandTimeout, bArgs...)
	return err
}

// readUUID reads the volume uuid from the state file `twinblock create`
// writes beside the journal (the secondary's copy must carry the same).
func readUUID(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("durable: reading the primary's uuid: %w", err)
	}
	var st struct {
		UUID string `json:"uuid"`
	}
	if err := json.Unmarshal(data, &st); err != nil || st.UUID == "" {
		return "", fmt.Errorf("durable: no uuid in %s (%v)", path, err)
	}
	return st.UUID, nil
}

// start launches the daemons (secondary, proxy, primary: the primary
// dials at once and finds its peer listening) and returns once the primary
// answers the NBD greeting and, for a pair, reports Connected.
func (s *setup) start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	serve := func(cfg, sock string) []string {
		// Warnings only: per-connection info logs would be work the
		// standalone baseline does not do either way.
		return []string{s.bin, "serve", "--config", cfg, "--listen", "none", "--socket", sock, "--log-level", "warn"}
	}
	launch := func(name string, argv []string) (*process, error) {
		p, err := startProcess(s.name+" "+name, argv)
		if err != nil {
			return nil, err
		}
		s.procs = append(s.procs, p)
		return p, nil
	}
	for _, sock := range []string{s.aSock, s.bSock} {
		if sock != "" {
			os.Remove(sock) // a stale socket file would make serve fail to bind
		}
	}
	if s.paired() {
		b, err := launch("secondary", s.argv(s.pin.Secondary, serve(s.bCfg, s.bSock)...))
		if err != nil {
			return err
		}
		if err := poll(ctx, s.name+" secondary status", s.startTimeout, []*process{b}, func(ctx context.Context) error {
			_, err := s.status(ctx, s.bCfg)
			return err
		}); err != nil {
			return err
		}
		if s.wanLatency > 0 {
			px, err := launch("proxy", s.argv(s.pin.Secondary, s.bin, "proxy", "--listen", s.proxyAddr, "--target", s.bRepl,
				"--latency", s.wanLatency.String(), "--control", s.proxyCtl, "--log-level", "warn"))
			if err != nil {
				return err
			}
			if err := poll(ctx, s.name+" proxy", s.startTimeout, []*process{px}, s.proxyReady); err != nil {
				return err
			}
		}
	}
	if _, err := launch("primary", s.argv(s.pin.Primary, serve(s.aCfg, s.aSock)...)); err != nil {
		return err
	}
	if err := poll(ctx, s.name+" NBD socket", s.startTimeout, s.procs, func(ctx context.Context) error {
		return bench.ProbeNBD(ctx, "unix", s.aSock)
	}); err != nil {
		return err
	}
	if !s.paired() {
		return nil
	}
	return s.waitConnected(ctx)
}

// waitConnected polls the primary's status until its link is Connected
// (handshake done and catch-up finished).
func (s *setup) waitConnected(ctx context.Context) error {
	return poll(ctx, s.name+" primary Connected", s.startTimeout, s.procs, func(ctx context.Context) error {
		v, err := s.status(ctx, s.aCfg)
		if err != nil {
			return err
		}
		if v.Connection != ConnConnected {
			return fmt.Errorf("connection %s %s", v.Connection, v.ConnectionError)
		}
		return nil
	})
}

// status runs `twinblock status -c CFG --json` and returns vol0's state.
func (s *setup) status(ctx context.Context, cfg string) (VolumeStatus, error) {
	out, err := runCommand(ctx, 10*time.Second, s.bin, "status", "--config", cfg, "--json")
	if err != nil {
		return VolumeStatus{}, err
	}
	vs, err := ParseStatus(out)
	if err != nil {
		return VolumeStatus{}, err
	}
	return findVolume(vs, exportName)
}

// proxyReady asks the proxy's control API for its stats, which it answers
// only once it is listening; a TCP probe of the proxied port instead would
// open a link to the secondary that fails its TLS handshake.
func (s *setup) proxyReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.proxyCtl+"/stats", nil)
	if err != nil {
		return err
	}
	c := http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy control: %s", resp.Status)
	}
	return nil
}

// check reports a daemon that died while the setup was running.
func (s *setup) check() error {
	for _, p := range s.procs {
		if p.Exited() {
			return p.exitError()
		}
	}
	return nil
}

// stop ends the daemons, primary first (it answers what is in flight and
// checkpoints while its peer still acknowledges), then proxy, then
// secondary: SIGTERM, SIGKILL after stopGrace.
func (s *setup) stop() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		errs = append(errs, s.procs[i].stop(stopGrace))
	}
	s.procs = nil
	return errors.Join(errs...)
}

// commands lists how the setup's daemons are run, for the report.
func (s *setup) commands() []string {
	var out []string
	for _, p := range s.procs {
		out = append(out, quoteArgs(p.argv))
	}
	return out
}
