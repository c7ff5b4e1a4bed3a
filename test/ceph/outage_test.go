//go:build ceph

package ceph

import (
	"strings"
	"testing"
	"time"
)

// TestRBDClusterOutage: the cluster under an rbd volume stops answering
// (its OSD is paused) during a verified write load. Within op_timeout the
// volume fails and the client gets errors instead of hanging; nothing
// acknowledged before is lost: once the cluster is back, a restart replays
// the journal into the image and every acknowledged write is there.
func TestRBDClusterOutage(t *testing.T) {
	seed := testSeed(t)
	n := newNode(t, shortTempDir(t), "a")
	n.create("32M", n.rbdArgs(clusterB))
	cfg := readText(t, n.Cfg)
	line := "      image: " + n.image + "\n"
	if !strings.Contains(cfg, line) {
		t.Fatalf("config layout:\n%s", cfg)
	}
	writeText(t, n.Cfg, strings.Replace(cfg, line, line+"      op_timeout: 3s\n", 1))
	n.Start()

	c := n.Dial()
	wait := startLoad(c, loadOptions(seed, 0, 2048, 16, time.Minute))
	time.Sleep(700 * time.Millisecond)
	if err := clusterB.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = clusterB.Resume()
		}
	})
	paused := time.Now()
	log, err := wait()
	took := time.Since(paused)
	if err == nil {
		t.Fatalf("the load saw no error while the cluster was paused (%d writes acknowledged)", log.Acked)
	}
	if took > 30*time.Second {
		t.Fatalf("the client waited %v for an error (op_timeout 3s)", took)
	}
	t.Logf("client error %v after the pause: %v (%d writes acknowledged before)", took.Round(time.Millisecond), err, log.Acked)
	c.Close()

	if err := clusterB.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	n.Kill9()
	n.Start() // replays the journal into the image
	cb := n.Dial()
	res := verifyOn(t, n, cb, log, "after the outage and a restart")
	cb.Close()
	n.Stop()
	if _, err := log.Verify(memDevice(exportImage(t, clusterB, n.image))); err != nil {
		t.Fatalf("rbd export after the restart: %v", err)
	}
	t.Logf("all %d acknowledged blocks there (%d held the in-flight version)", res.Checked, res.InFlightOK)
}
