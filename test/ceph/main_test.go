//go:build ceph

package ceph

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
)

var (
	// tbBin is the twinblock binary (with Ceph support) TestMain built.
	tbBin string
	// clusterA and clusterB are the two "datacenters".
	clusterA, clusterB *rbdtest.Cluster
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "twinblock-ceph-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceph e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if tbBin, err = buildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, "ceph e2e: building twinblock:", err)
		return 1
	}
	if clusterA, err = rbdtest.Start("TWINBLOCK_CEPH_A"); err != nil {
		fmt.Fprintln(os.Stderr, "ceph e2e:", err)
		return 1
	}
	defer stopCluster(clusterA)
	if clusterB, err = rbdtest.Start("TWINBLOCK_CEPH_B"); err != nil {
		fmt.Fprintln(os.Stderr, "ceph e2e:", err)
		return 1
	}
	defer stopCluster(clusterB)
	return m.Run()
}

func stopCluster(c *rbdtest.Cluster) {
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "ceph e2e:", err)
	}
}

// buildBinary builds ./cmd/twinblock with Ceph support into dir.
func buildBinary(dir string) (string, error) {
	if b := os.Getenv("TWINBLOCK_CEPH_E2E_BIN"); b != "" {
		return filepath.Abs(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	bin := filepath.Join(dir, "twinblock")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "ceph,pacific", "-o", bin, "./cmd/twinblock")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}
