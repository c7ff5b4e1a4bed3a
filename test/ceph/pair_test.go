//go:build ceph

package ceph

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/bench/proxy"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/test/testenv"
)

// killPoints is how many kill -9 points TestRBDPairKill9 tries
// (TWINBLOCK_CEPH_KILL_POINTS raises it).
func killPoints() int { return testenv.EnvCount("TWINBLOCK_CEPH_KILL_POINTS", 4) }

// TestRBDPairKill9: a sync pair whose primary keeps its volume on cluster a
// and whose secondary keeps it on cluster b. A verified write load runs on
// the primary; the primary is killed with SIGKILL at a random point (odd
// points: the whole site, with the link going silent first, so nothing on
// the wire survives); the secondary is promoted without --force and holds
// every acknowledged write.
func TestRBDPairKill9(t *testing.T) {
	seed := testSeed(t)
	rng := mrand.New(mrand.NewPCG(seed, 6))
	certs := makeCerts(t)
	var acked int64
	for point := range killPoints() {
		delay := time.Duration(300+rng.IntN(900)) * time.Millisecond
		siteLoss := point%2 == 1
		ok := t.Run(fmt.Sprintf("point%02d", point), func(t *testing.T) {
			root := shortTempDir(t)
			a, b := newNode(t, root, "a"), newNode(t, root, "b")
			// a reaches b through a proxy that can go silent.
			px, err := proxy.Start(proxy.Options{Listen: "127.0.0.1:0", Target: b.repl})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = px.Close() })
			aRepl := []string{"--node", "a", "--replication-listen", a.repl, "--peer", "b",
				"--peer-address", px.Addr(), "--tls-dir", certs}
			uuid := a.create("32M", a.rbdArgs(clusterA), aRepl...)
			b.create("32M", b.rbdArgs(clusterB), append(b.replArgs(a, certs), "--uuid", uuid)...)
			b.Start()
			a.Start()
			waitPair(a, b)

			c := a.Dial()
			wait := startLoad(c, loadOptions(seed+uint64(point), 0, 2048, 16, time.Minute))
			time.Sleep(delay)
			if siteLoss {
				px.Blackhole()
				time.Sleep(20 * time.Millisecond)
			}
			a.Kill9()
			if siteLoss {
				px.Cut()
			}
			log, _ := wait() // the kill fails the writes in flight: expected
			c.Close()
			if log.Acked == 0 {
				t.Fatalf("no write acknowledged in %v before the kill", delay)
			}
			b.mustCLI("promote", volume)
			cb := b.Dial()
			what := fmt.Sprintf("kill -9 after %v", delay)
			if siteLoss {
				what = fmt.Sprintf("site loss after %v", delay)
			}
			res := verifyOn(t, b, cb, log, what)
			cb.Close()
			b.Stop()
			acked += log.Acked
			t.Logf("%s: %d writes acknowledged, all %d blocks on b (%d held the in-flight version)",
				what, log.Acked, res.Checked, res.InFlightOK)
		})
		if !ok {
			t.Fatalf("kill point %d failed (seed %d)", point, seed)
		}
	}
	t.Logf("%d acknowledged writes found on the promoted RBD secondary", acked)
}

// waitPair waits until primary a streams to b with nothing outstanding.
func waitPair(a, b *node) { waitPairWithin(waitTimeout, a, b) }

// waitPairWithin is waitPair with a bound of its own: a catch-up or
// resync under load on a busy machine can take longer than a handshake.
func waitPairWithin(d time.Duration, a, b *node) {
	a.T.Helper()
	a.WaitForWithin(d, "connected to b, peer up to date", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.PeerDisk == engine.DiskUpToDate
	})
	b.WaitForWithin(d, "connected to a, up to date", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.Disk == engine.DiskUpToDate
	})
}

// switchDevice is the client side of a planned switch-over, as a
// hypervisor does it: requests go to the current connection; Switch holds
// new requests, lets those in flight finish, swaps the connection and lets
// the held requests go to the new one. The load above never sees an error.
type switchDevice struct {
	mu sync.RWMutex
	c  *nbd.Client
}

func (d *switchDevice) WriteAt(p []byte, off uint64, fua bool) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.c.WriteAt(p, off, fua)
}

func (d *switchDevice) ReadAt(p []byte, off uint64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.c.ReadAt(p, off)
}

// Switch runs to (with the device quiet) and moves to the connection it
// returns; it reports how long requests were held.
func (d *switchDevice) Switch(to func() *nbd.Client) time.Duration {
	d.mu.Lock()
	start := time.Now()
	old := d.c
	d.c = to()
	held := time.Since(start)
	d.mu.Unlock()
	old.Close()
	return held
}

// memDevice reads an exported image (ackload's verify against the bytes
// rbd export returned).
type memDevice []byte

func (m memDevice) ReadAt(p []byte, off uint64) error {
	copy(p, m[off:])
	return nil
}

func (m memDevice) WriteAt([]byte, uint64, bool) error { panic("read only") }

// TestMigrateFileToRBD is the migration procedure of docs/ceph.md, end to
// end, with a verified write load running from the first step to the last:
//
//  1. a serves vol0 from a file, with replication to b configured but no b
//     yet;
//  2. b is created on Ceph (cluster b) with a's uuid and started, and is
//     filled while the writes go on: "catch-up" with a new (all-zero)
//     image, which replays a's journal (a keeps it for a peer it has not
//     met, up to replication.retain); "resync" with an image that holds
//     other data (`create --existing`), which gets a full checksummed
//     resync, the way for a volume with any history. Then b follows live;
//  3. planned switch: the client holds its requests, a is demoted, b
//     promoted, the client continues on b;
//  4. a is retired: b disconnects from it, a stops.
//
// The load sees no error; b then holds every acknowledged write, the ones
// written before b existed included, and so does its image read with rbd
// export.
func TestMigrateFileToRBD(t *testing.T) {
	t.Run("catch-up", func(t *testing.T) { migrate(t, false) })
	t.Run("resync", func(t *testing.T) { migrate(t, true) })
}

func migrate(t *testing.T, existing bool) {
	seed := testSeed(t)
	certs := makeCerts(t)
	root := shortTempDir(t)
	a, b := newNode(t, root, "a"), newNode(t, root, "b")
	uuid := a.create("64M", a.fileArgs(), a.replArgs(b, certs)...)
	a.Start()

	// 1. a alone under load.
	dev := &switchDevice{c: a.Dial()}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	d := &testenv.ErrDevice{Dev: dev}
	var (
		log    *ackload.Log
		runErr error
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		log, runErr = ackload.Run(ctx, d, loadOptions(seed, 0, 8192, 16, 2*time.Minute))
	}()
	time.Sleep(time.Second)
	if st := a.Status(); st.LastSeq == 0 || st.Conn == engine.ConnConnected {
		t.Fatalf("a before b exists: %+v", st)
	}

	// 2. Add the RBD-backed secondary; it is filled under load.
	bArgs := b.rbdArgs(clusterB)
	extra := append(b.replArgs(a, certs), "--uuid", uuid)
	size := "64M"
	if existing {
		// An image with other data on it: random 64 KiB writes over the
		// first 32 MiB, which a's load also writes.
		img := clusterB.Pool + "/" + b.image
		if _, err := clusterB.RBD("create", "--size", "64M", "--image-feature", "layering", img); err != nil {
			t.Fatal(err)
		}
		if _, err := clusterB.RBD("bench", "--io-type", "write", "--io-size", "64K", "--io-total", "8M",
			"--io-pattern", "rand", img); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, "--existing")
		size = ""
	}
	cargs := append([]string{"create", volume, "--config", b.Cfg}, bArgs...)
	if size != "" {
		cargs = append(cargs, "--size", size)
	}
	mustTB(t, b.Dir, append(cargs, extra...)...)
	if existing {
		if st := readText(t, filepath.Join(b.Dir, "journal", "state.json")); !strings.Contains(st, "Inconsistent") {
			t.Fatalf("b created --existing over other data is not Inconsistent:\n%s", st)
		}
	}
	b.Start()
	filled := time.Now()
	waitPairWithin(3*time.Minute, a, b)
	t.Logf("b up to date %v after it started (a's last seq now %d)", time.Since(filled).Round(time.Millisecond), a.Status().LastSeq)
	time.Sleep(500 * time.Millisecond) // live replication under load

	// 3. Planned switch.
	held := dev.Switch(func() *nbd.Client {
		a.mustCLI("demote", volume)
		a.WaitFor("secondary", func(s engine.Status) bool { return s.Role == engine.RoleSecondary })
		b.mustCLI("promote", volume)
		return b.Dial()
	})
	t.Logf("client requests held %v for the switch", held.Round(time.Millisecond))
	b.WaitFor("primary, a following", func(s engine.Status) bool {
		return s.Role == engine.RolePrimary && s.Conn == engine.ConnConnected
	})
	time.Sleep(500 * time.Millisecond)

	// 4. Retire a.
	b.mustCLI("disconnect", volume)
	a.Stop()
	time.Sleep(500 * time.Millisecond) // b alone, still writing
	stopLoad()
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	if err := d.Err(); err != nil {
		t.Fatalf("the client saw an error during the migration: %v (after %d acknowledged writes)", err, log.Acked)
	}
	cb := b.Dial()
	res := verifyOn(t, b, cb, log, "after the migration")
	cb.Close()
	if st := b.Status(); st.Role != engine.RolePrimary {
		t.Fatalf("b after the migration: %+v", st)
	}
	b.Stop()
	img := exportImage(t, clusterB, b.image)
	if _, err := log.Verify(memDevice(img)); err != nil {
		t.Fatalf("rbd export of b's image: %v", err)
	}
	// Past what the load wrote, b's image must equal a's file: all zero
	// (the resync variant overwrote the other data there too).
	end := int(log.Opts.Base) + log.Opts.Blocks*log.Opts.BlockSize
	aImg, err := os.ReadFile(a.img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[end:], aImg[end:len(img)]) {
		t.Fatalf("b's image differs from a's file past the load's blocks")
	}
	t.Logf("%d writes acknowledged across the migration, all %d blocks on the RBD image", log.Acked, res.Checked)
}
