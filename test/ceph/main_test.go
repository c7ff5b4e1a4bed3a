//go:build ceph

package ceph

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/twinblock/twinblock/engine/backend/rbd/rbdtest"
	"github.com/twinblock/twinblock/test/testenv"
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
	return testenv.BuildTwinblock(dir, testenv.BuildOptions{Tags: "ceph,pacific", Env: []string{"CGO_ENABLED=1"}})
}
