// Package rbdtest gives tests a real Ceph cluster: the one a caller
// started with scripts/ceph-cluster.sh and named in an environment
// variable (make test-ceph starts two and exports TWINBLOCK_CEPH_A and
// TWINBLOCK_CEPH_B), or a new one the test starts and stops itself with
// the same script.
//
//	func TestMain(m *testing.M) {
//		c, err := rbdtest.Start("TWINBLOCK_CEPH_A")
//		...
//		code := m.Run()
//		c.Stop()
//	}
//
// It is plain Go (the script and the rbd CLI do the work), so it builds
// without cgo.
package rbdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/engine/backend/rbd"
)

// Cluster is a running single-node cluster with the pool "rbd".
type Cluster struct {
	// Dir holds ceph.conf, keyring, the daemons' data and logs.
	Dir string
	// Conf and Keyring are the files clients use (client.admin).
	Conf, Keyring string
	// Pool is the pool the script made.
	Pool string
	// own: this process started the cluster and Stop stops it.
	own bool
}

// Timeouts of the script and of one rbd CLI call.
const (
	scriptTimeout = 3 * time.Minute
	cliTimeout    = 60 * time.Second
)

// Start returns the cluster whose directory the environment variable env
// names, or starts a new one in a temporary directory on free ports.
func Start(env string) (*Cluster, error) {
	if d := os.Getenv(env); d != "" {
		c := newCluster(d)
		if _, err := os.Stat(c.Conf); err != nil {
			return nil, fmt.Errorf("rbdtest: %s=%s: %w", env, d, err)
		}
		return c, nil
	}
	script, err := Script()
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp("", "tbceph-")
	if err != nil {
		return nil, err
	}
	c := newCluster(filepath.Join(d, "cluster"))
	c.own = true
	var out []byte
	for attempt := 0; attempt < 3; attempt++ {
		port, perr := freePortPair()
		if perr != nil {
			return nil, perr
		}
		out, err = runScript(script, "start", c.Dir, strconv.Itoa(port))
		if err == nil {
			return c, nil
		}
		// A port taken between the probe and the mon's bind: retry in
		// a clean directory.
		_ = os.RemoveAll(c.Dir)
	}
	os.RemoveAll(d)
	return nil, fmt.Errorf("rbdtest: starting a cluster: %w\n%s", err, out)
}

func newCluster(dir string) *Cluster {
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	return &Cluster{Dir: dir, Conf: filepath.Join(dir, "ceph.conf"), Keyring: filepath.Join(dir, "keyring"), Pool: "rbd"}
}

// Stop stops a cluster this process started (and removes its directory);
// a cluster from the environment is left running.
func (c *Cluster) Stop() error {
	if !c.own {
		return nil
	}
	script, err := Script()
	if err != nil {
		return err
	}
	if out, err := runScript(script, "stop", c.Dir); err != nil {
		return fmt.Errorf("rbdtest: stopping %s: %w\n%s", c.Dir, err, out)
	}
	return os.RemoveAll(filepath.Dir(c.Dir))
}

// Pause stops the cluster's OSD (SIGSTOP): every request hangs, as in an
// outage, until Resume.
func (c *Cluster) Pause() error { return c.script("pause") }

// Resume lets a paused OSD run again (SIGCONT).
func (c *Cluster) Resume() error { return c.script("resume") }

func (c *Cluster) script(cmd string) error {
	s, err := Script()
	if err != nil {
		return err
	}
	if out, err := runScript(s, cmd, c.Dir); err != nil {
		return fmt.Errorf("rbdtest: %s %s: %w\n%s", cmd, c.Dir, err, out)
	}
	return nil
}

// Options are rbd.Options for image in the cluster's pool, as client.admin.
func (c *Cluster) Options(image string) rbd.Options {
	return rbd.Options{ConfFile: c.Conf, Client: "admin", Keyring: c.Keyring, Pool: c.Pool, Image: image}
}

var imageSeq atomic.Uint64

// ImageName returns a name no other image of this process has, starting
// with prefix.
func ImageName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), imageSeq.Add(1))
}

// RBD runs the rbd CLI against the cluster.
func (c *Cluster) RBD(args ...string) (string, error) {
	return c.run("rbd", args...)
}

// Ceph runs the ceph CLI against the cluster.
func (c *Cluster) Ceph(args ...string) (string, error) {
	return c.run("ceph", args...)
}

func (c *Cluster) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	// A cluster that is gone fails in seconds, not after the default 300.
	pre := []string{"-c", c.Conf, "--client_mount_timeout", "10"}
	cmd := exec.CommandContext(ctx, name, append(pre, args...)...)
	cmd.Env = c.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Env is the environment for Ceph clients (rbd, fio --ioengine=rbd) that
// find the cluster by CEPH_CONF.
func (c *Cluster) Env() []string {
	return append(os.Environ(), "CEPH_CONF="+c.Conf)
}

// RemoveImage deletes an image (test cleanup; a missing image is fine).
func (c *Cluster) RemoveImage(image string) error {
	_, err := c.RBD("rm", "--no-progress", c.Pool+"/"+image)
	if err != nil && strings.Contains(err.Error(), "No such file") {
		return nil
	}
	return err
}

// Script returns the path of scripts/ceph-cluster.sh in this module.
func Script() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("rbdtest: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("rbdtest: not inside the twinblock module")
	}
	s := filepath.Join(filepath.Dir(gomod), "scripts", "ceph-cluster.sh")
	if _, err := os.Stat(s); err != nil {
		return "", fmt.Errorf("rbdtest: %w", err)
	}
	return s, nil
}

func runScript(script string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", scriptTimeout, err)
	}
	return out, err
}

// freePortPair returns p such that 127.0.0.1:p and :p+1 are free now.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		ln.Close()
		if err == nil {
			ln2.Close()
			return p, nil
		}
	}
	return 0, errors.New("rbdtest: no two consecutive free ports on 127.0.0.1")
}
