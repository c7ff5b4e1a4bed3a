package e2e

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/engine"
	"github.com/twinblock/twinblock/nbd"
	"github.com/twinblock/twinblock/test/testenv"
)

// The pair tests run two real daemons (a: primary, b: secondary) that
// replicate over TLS on loopback, drive them with the CLI and the Go NBD
// client, and check the promises of the replication: every acknowledged
// write survives the loss of the primary, the two copies end byte-identical,
// a link outage degrades and heals, and a wrong peer is refused with
// nothing written.

// pairKillPoints is how many kill -9 points TestPairKill9PrimaryPromote
// tries (TWINBLOCK_PAIR_KILL_POINTS raises it for a longer run).
func pairKillPoints() int { return testenv.EnvCount("TWINBLOCK_PAIR_KILL_POINTS", 20) }

// loadOptions is the verified load of these tests: 4 KiB blocks, as many
// writes as fit in d.
var loadOptions = testenv.LoadOptions

// runCleanLoad runs a verified load that must not see a single error.
func runCleanLoad(t *testing.T, c *nbd.Client, o ackload.Options) *ackload.Log {
	t.Helper()
	return testenv.RunCleanLoad(t, c, o, clientTimeout)
}

// startLoad runs a verified load in the background; wait returns its log
// and first error.
func startLoad(c *nbd.Client, o ackload.Options) (cancel func(), wait func() (*ackload.Log, error)) {
	return testenv.StartLoad(c, o, clientTimeout)
}

func verifyOn(t *testing.T, n *pairNode, c *nbd.Client, l *ackload.Log, what string) ackload.Result {
	t.Helper()
	return testenv.VerifyOn(t, n.Node, c, l, what)
}

// 1. A verified write load on the primary, a clean stop, and a plain
// promote of the secondary: it holds every acknowledged write, and its
// image is byte-identical to the primary's.
func TestPairCleanStopPromote(t *testing.T) {
	seed := testSeed(t)
	p := newPair(t, pairOptions{})
	p.start()
	p.waitConnected()

	c := p.a.dial()
	log := runCleanLoad(t, c, loadOptions(seed, 0, 8192, 32, 2*time.Second))
	c.Close()

	stA := p.a.waitFor("peer holds every record", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.LagRecords == 0 && s.InFlight == 0 && s.PeerAckedSeq == s.LastSeq
	})
	if stA.LastSeq < uint64(log.Acked) {
		t.Fatalf("a's last seq %d is below the %d acknowledged writes", stA.LastSeq, log.Acked)
	}
	p.a.stop()
	p.b.waitFor(fmt.Sprintf("applied through a's last seq %d", stA.LastSeq), func(s engine.Status) bool {
		return s.LastSeq == stA.LastSeq && s.AppliedSeq == stA.LastSeq && s.Disk == engine.DiskUpToDate
	})
	requireSameImages(t, p.a.img, p.b.img)

	p.b.promote()
	st := p.b.status()
	if st.Role != engine.RolePrimary || st.Disk != engine.DiskUpToDate {
		t.Fatalf("b after promote: role %s disk %s", st.Role, st.Disk)
	}
	cb := p.b.dial()
	res := verifyOn(t, p.b, cb, log, "after a clean stop")
	cb.Close()
	p.b.stop()
	requireSameImages(t, p.a.img, p.b.img)
	t.Logf("%d writes acknowledged (a's last seq %d); b holds all %d blocks", log.Acked, stA.LastSeq, res.Checked)
}

// 2. kill -9 the primary at random points of a write load and promote the
// secondary without --force: in sync mode a write is durable on the
// secondary before the primary acknowledges it, so every acknowledged
// write is there, and the secondary knows it is up to date.
//
// A plain kill -9 loses nothing the primary already handed to its kernel:
// the socket still delivers it. So on loopback the secondary would hold
// every acknowledged write even if the primary acknowledged before the
// peer's ack. Odd points therefore take the whole site down at once, as a
// power cut does: the link (through a proxy) goes silent, the primary is
// killed, and whatever was on the wire is lost with the link. Only writes
// the secondary acknowledged before that instant survive, which must be
// every write the primary acknowledged.
func TestPairKill9PrimaryPromote(t *testing.T) {
	seed := testSeed(t)
	rng := mrand.New(mrand.NewPCG(seed, 2))
	certs := makeCerts(t)
	points := pairKillPoints()
	var acked, inflight int64
	ran := 0
	for point := 0; point < points; point++ {
		delay := time.Duration(200+rng.IntN(800)) * time.Millisecond
		siteLoss := point%2 == 1
		ok := t.Run(fmt.Sprintf("point%02d", point), func(t *testing.T) {
			p := newPair(t, pairOptions{certs: certs, size: "32M", viaProxy: true})
			p.start()
			p.waitConnected()

			c := p.a.dial()
			_, wait := startLoad(c, loadOptions(seed+uint64(point), 0, 2048, 16, time.Minute))
			time.Sleep(delay)
			if siteLoss {
				p.proxy.Blackhole()
				// Let a primary that acknowledged without its peer (the
				// bug this catches) acknowledge a few more.
				time.Sleep(20 * time.Millisecond)
			}
			p.a.kill9()
			if siteLoss {
				// The secondary learns of the loss by the reset; the bytes
				// held in the blackhole are gone.
				p.proxy.Cut()
			}
			log, _ := wait() // the kill fails the writes in flight: expected
			c.Close()
			if log.Acked == 0 {
				t.Fatalf("no write was acknowledged in %v before the kill", delay)
			}

			p.b.promote()
			cb := p.b.dial()
			what := fmt.Sprintf("kill -9 after %v", delay)
			if siteLoss {
				what = fmt.Sprintf("site loss after %v", delay)
			}
			res := verifyOn(t, p.b, cb, log, what)
			cb.Close()
			p.b.stop()
			acked += log.Acked
			inflight += int64(res.InFlightOK)
			ran++
		})
		if !ok {
			t.Fatalf("kill point %d failed (seed %d)", point, seed)
		}
	}
	t.Logf("%d kill points: %d acknowledged writes all found on the promoted secondary; %d blocks held an in-flight version",
		ran, acked, inflight)
}

// 3. The link is cut for a second during a load: the primary keeps
// serving degraded (lag grows), reconnects after the cut, catches the
// secondary up, and both images end identical.
func TestPairLinkCutDuringLoad(t *testing.T) {
	seed := testSeed(t)
	p := newPair(t, pairOptions{viaProxy: true})
	p.start()
	p.waitConnected()
	before := p.proxy.Stats()
	if before.BytesToTarget == 0 {
		t.Fatalf("the link does not go through the proxy: %+v", before)
	}

	c := p.a.dial()
	_, wait := startLoad(c, loadOptions(seed, 0, 8192, 16, 4*time.Second))
	time.Sleep(500 * time.Millisecond)
	p.proxy.Cut()
	cutAt := time.Now()
	cut := p.a.waitFor("degraded (link down, lag > 0)", func(s engine.Status) bool {
		return s.Role == engine.RolePrimary && s.Conn != engine.ConnConnected && s.LagRecords > 0
	})
	// Still serving: acknowledged writes keep arriving while the peer is
	// unreachable.
	degraded := p.a.waitFor("writing while the link is cut", func(s engine.Status) bool {
		return s.Conn != engine.ConnConnected && s.LastSeq >= cut.LastSeq+100 && s.LagRecords >= cut.LagRecords+100
	})
	time.Sleep(time.Until(cutAt.Add(time.Second)))
	if st := p.proxy.Stats(); st.Refused == 0 && st.Aborted == 0 {
		t.Fatalf("the cut touched no connection: %+v", st)
	}
	p.proxy.Restore()

	log, err := wait()
	if err != nil {
		t.Fatalf("write load across the cut: %v", err)
	}
	c.Close()
	healed := p.a.waitFor("reconnected and caught up (lag 0)", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.LagRecords == 0 && s.PeerDisk == engine.DiskUpToDate
	})
	p.b.waitFor("b connected and up to date", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.Disk == engine.DiskUpToDate
	})
	shaA, shaB := p.stopSynced(p.a, p.b)
	if shaA != shaB {
		requireSameImages(t, p.a.img, p.b.img)
		t.Fatalf("images differ: sha256 a %s, b %s", shaA, shaB)
	}
	t.Logf("%d writes; lag %d records while cut (a at seq %d), caught up through seq %d; images sha256 %s",
		log.Acked, degraded.LagRecords, degraded.LastSeq, healed.LastSeq, shaA)
}

// 3b. The link goes silent (every byte dropped, no reset): only the
// heartbeat timeout (5 s) can notice. The primary then serves degraded,
// and heals after the link returns.
func TestPairLinkBlackholeHeartbeat(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 5 s heartbeat timeout")
	}
	seed := testSeed(t)
	p := newPair(t, pairOptions{viaProxy: true})
	p.start()
	p.waitConnected()

	c := p.a.dial()
	cancel, wait := startLoad(c, loadOptions(seed, 0, 8192, 16, time.Minute))
	defer cancel()
	time.Sleep(300 * time.Millisecond)
	p.proxy.Blackhole()
	noticed := p.a.waitFor("peer timeout noticed", func(s engine.Status) bool {
		return s.Conn != engine.ConnConnected && strings.Contains(s.ConnError, "timeout")
	})
	p.a.waitFor("writing degraded after the timeout", func(s engine.Status) bool {
		return s.Conn != engine.ConnConnected && s.LastSeq >= noticed.LastSeq+100
	})
	if st := p.proxy.Stats(); st.BytesDropped == 0 {
		t.Fatalf("the blackhole dropped nothing: %+v", st)
	}
	p.proxy.Restore()
	p.a.waitFor("reconnected", func(s engine.Status) bool { return s.Conn == engine.ConnConnected })
	cancel()
	log, err := wait()
	if err != nil {
		t.Fatalf("write load across the blackhole: %v", err)
	}
	c.Close()
	p.a.waitFor("caught up (lag 0)", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.LagRecords == 0 && s.PeerDisk == engine.DiskUpToDate
	})
	shaA, shaB := p.stopSynced(p.a, p.b)
	if shaA != shaB {
		requireSameImages(t, p.a.img, p.b.img)
	}
	t.Logf("%d writes; link error while silent: %s", log.Acked, noticed.ConnError)
}

// 4. Two NBD connections write random overlapping ranges of one small
// region at the same time: the secondary must apply overlapping writes in
// the primary's order, so the images end byte-identical.
func TestPairOverlappingWritesTwoConnections(t *testing.T) {
	seed := testSeed(t)
	p := newPair(t, pairOptions{})
	p.start()
	p.waitConnected()

	const (
		base    = 1 * mib
		region  = 256 * kib
		perConn = 4
		runFor  = 1500 * time.Millisecond
	)
	conns := []*nbd.Client{p.a.dial(), p.a.dial()}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		writes int
	)
	deadline := time.Now().Add(runFor)
	for ci, c := range conns {
		for w := 0; w < perConn; w++ {
			wg.Add(1)
			go func(c *nbd.Client, stream uint64) {
				defer wg.Done()
				rng := mrand.New(mrand.NewPCG(seed, stream))
				buf := make([]byte, 64*kib)
				n := 0
				for time.Now().Before(deadline) {
					length := (1 + rng.IntN(128)) * 512
					off := uint64(base + rng.IntN((region-length)/512+1)*512)
					var err error
					if rng.IntN(8) == 0 {
						err = c.WriteZeroes(off, uint32(length), false, false)
					} else {
						for i := 0; i+8 <= length; i += 8 {
							v := rng.Uint64()
							for k := 0; k < 8; k++ {
								buf[i+k] = byte(v >> (8 * k))
							}
						}
						err = c.WriteAt(buf[:length], off, false)
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("stream %d: %w", stream, err))
						mu.Unlock()
						return
					}
					n++
				}
				mu.Lock()
				writes += n
				mu.Unlock()
			}(c, uint64(ci*perConn+w))
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("overlapping writes: %v", errs)
	}
	// What a reader of the primary sees is what both images must hold.
	want := make([]byte, region)
	if err := conns[0].ReadAt(want, base); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	shaA, shaB := p.stopSynced(p.a, p.b)
	if shaA != shaB {
		requireSameImages(t, p.a.img, p.b.img)
	}
	got := readRange(t, p.b.img, base, region)
	requireEqualData(t, "b's image over the written region", got, want)
	if ok, _ := allBytes(want, 0); ok {
		t.Fatal("the written region is all zero: nothing was written")
	}
	t.Logf("%d overlapping writes from 2 connections × %d streams in %v; images sha256 %s", writes, perConn, runFor, shaA)
}

func readRange(t *testing.T, path string, off, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		t.Fatal(err)
	}
	return b
}

// writePattern writes 1 MiB of seeded data at off through the primary and
// flushes; it returns the data.
func writePattern(t *testing.T, c *nbd.Client, off uint64, seed uint64) []byte {
	t.Helper()
	data := randomBytes(1*mib, seed)
	if err := c.WriteAt(data, off, false); err != nil {
		t.Fatalf("write at %d: %v", off, err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return data
}

// 5. A peer that must not be replicated to is refused, says why, and gets
// nothing; the primary keeps serving.
func TestPairRefusals(t *testing.T) {
	certs := makeCerts(t)
	cases := []struct {
		name string
		opts pairOptions
		// aErr: words a's connection_error must contain.
		aErr []string
		// bSays: b's log or connection_error must contain one of these.
		bSays []string
		// refused: both sides show the Refused state (a handshake that
		// got as far as comparing the volumes).
		refused bool
	}{
		{name: "other-ca", opts: pairOptions{certs: certs, bCerts: makeCerts(t)},
			aErr: []string{"certificate", "unknown authority"}, bSays: []string{"bad certificate"}},
		{name: "uuid", opts: pairOptions{certs: certs, bUUID: true},
			aErr: []string{"uuid"}, bSays: []string{"uuid"}, refused: true},
		{name: "size", opts: pairOptions{certs: certs, bSize: "48M"},
			aErr: []string{"size"}, bSays: []string{"size"}, refused: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.opts)
			bSize := int64(64 * mib)
			if tc.opts.bSize != "" {
				bSize = 48 * mib
			}
			zero := zeroSHA(t, bSize)
			if got := fileSHA(t, p.b.img); got != zero {
				t.Fatalf("b's new image is not all zero")
			}
			p.start()
			stA := p.a.waitFor("refusing b: "+strings.Join(tc.aErr, ", "), func(s engine.Status) bool {
				if s.Conn == engine.ConnConnected || s.Conn == engine.ConnCatchingUp {
					return false
				}
				if tc.refused && s.Conn != engine.ConnRefused {
					return false
				}
				for _, w := range tc.aErr {
					if !strings.Contains(s.ConnError, w) {
						return false
					}
				}
				return true
			})
			// The primary keeps serving without its peer.
			c := p.a.dial()
			d1 := writePattern(t, c, 0, 1)
			d2 := writePattern(t, c, 20*mib, 2)
			c.Close()
			stA2 := p.a.status()
			if stA2.Conn == engine.ConnConnected || stA2.LagRecords == 0 {
				t.Fatalf("a after writes: connection %s, lag %d (want not connected and lag > 0)", stA2.Conn, stA2.LagRecords)
			}

			stB := p.b.waitFor("naming the reason", func(s engine.Status) bool {
				if tc.refused && s.Conn != engine.ConnRefused {
					return false
				}
				for _, w := range tc.bSays {
					if strings.Contains(s.ConnError, w) || strings.Contains(p.b.Log(), w) {
						return true
					}
				}
				return false
			})
			if stB.Conn == engine.ConnConnected || stB.LastSeq != 0 || stB.Role != engine.RoleSecondary {
				t.Fatalf("b: connection %s, last seq %d, role %s (want not connected, nothing received, secondary)",
					stB.Conn, stB.LastSeq, stB.Role)
			}
			p.a.stop()
			p.b.stop()
			if got := fileSHA(t, p.b.img); got != zero {
				t.Fatalf("b's image changed although b was refused")
			}
			requireEqualData(t, "a's image at 0", readRange(t, p.a.img, 0, mib), d1)
			requireEqualData(t, "a's image at 20 MiB", readRange(t, p.a.img, 20*mib, mib), d2)
			t.Logf("a: %s (%s); b: %s (%s)", stA.Conn, stA.ConnError, stB.Conn, stB.ConnError)
		})
	}

	t.Run("garbage", func(t *testing.T) {
		p := newPair(t, pairOptions{certs: certs})
		zero := zeroSHA(t, 64*mib)
		p.b.start()
		probes := map[string][]byte{
			"random": make([]byte, 4096),
			"http":   []byte("GET / HTTP/1.1\r\nHost: twinblock\r\nUser-Agent: e2e\r\n\r\n"),
			"empty":  nil, // connect and hang up at once
		}
		if _, err := rand.Read(probes["random"]); err != nil {
			t.Fatal(err)
		}
		for name, b := range probes {
			local := sendRaw(t, p.b.repl, b)
			if b == nil {
				continue
			}
			p.b.waitLog(name+" probe refused", "remote="+local)
			line := logLine(p.b.Log(), "remote="+local)
			if !strings.Contains(line, "peer link refused") || !strings.Contains(line, "handshake failed") {
				t.Fatalf("b's log line about the %s probe does not say it was refused in the handshake: %s", name, line)
			}
			t.Logf("%s probe: %s", name, line)
		}
		stB := p.b.status()
		if stB.LastSeq != 0 || stB.Role != engine.RoleSecondary || stB.Failed != "" {
			t.Fatalf("b after the probes: %+v", stB)
		}
		if got := fileSHA(t, p.b.img); got != zero {
			t.Fatal("b's image changed after garbage on its replication port")
		}
		// b still takes the real primary.
		p.a.start()
		p.waitConnected()
		c := p.a.dial()
		data := writePattern(t, c, 3*mib, 3)
		c.Close()
		shaA, shaB := p.stopSynced(p.a, p.b)
		if shaA != shaB {
			requireSameImages(t, p.a.img, p.b.img)
		}
		requireEqualData(t, "b's image after the real primary wrote", readRange(t, p.b.img, 3*mib, mib), data)
	})
}

// logLine is the first line of log containing sub.
func logLine(log, sub string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// sendRaw connects to addr, sends b, reads whatever comes back until the
// server hangs up (bounded), and returns the local address the server
// logs as remote.
func sendRaw(t *testing.T, addr string, b []byte) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if len(b) > 0 {
		if _, err := conn.Write(b); err != nil {
			t.Fatalf("write to %s: %v", addr, err)
		}
	}
	if b == nil {
		return local
	}
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			break // EOF or reset: the server hung up
		}
	}
	return local
}

// 6. Planned role switch by CLI: demote a, promote b, write on b; a, now
// secondary, receives it and both images end identical.
func TestPairRoleSwitchByCLI(t *testing.T) {
	seed := testSeed(t)
	p := newPair(t, pairOptions{})
	p.start()
	p.waitConnected()
	requireRoles(t, p, engine.RolePrimary, engine.RoleSecondary)
	p.b.requireNotExported()

	c := p.a.dial()
	logA := runCleanLoad(t, c, loadOptions(seed, 0, 2048, 16, 500*time.Millisecond))
	c.Close()

	p.a.demote()
	p.a.waitFor("secondary", func(s engine.Status) bool { return s.Role == engine.RoleSecondary })
	p.a.requireNotExported()
	p.b.promote()
	requireRoles(t, p, engine.RoleSecondary, engine.RolePrimary)
	// b dials a now; a follows.
	p.b.waitFor("b connected to a, lag 0", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.LagRecords == 0 && s.PeerDisk == engine.DiskUpToDate
	})
	p.a.waitFor("a following b", func(s engine.Status) bool {
		return s.Conn == engine.ConnConnected && s.Disk == engine.DiskUpToDate
	})

	cb := p.b.dial()
	verifyOn(t, p.b, cb, logA, "a's writes after the switch")
	logB := runCleanLoad(t, cb, loadOptions(seed+1, 16*mib, 2048, 16, 500*time.Millisecond))
	verifyOn(t, p.b, cb, logB, "b's own writes")
	cb.Close()

	stA := p.a.status()
	if stA.Role != engine.RoleSecondary || stA.LastSeq == 0 {
		t.Fatalf("a: role %s, last seq %d", stA.Role, stA.LastSeq)
	}
	shaB, shaA := p.stopSynced(p.b, p.a)
	if shaA != shaB {
		requireSameImages(t, p.a.img, p.b.img)
	}
	t.Logf("a wrote %d, b wrote %d after the switch; images sha256 %s", logA.Acked, logB.Acked, shaA)
}

func requireRoles(t *testing.T, p *pair, a, b engine.Role) {
	t.Helper()
	if st := p.a.status(); st.Role != a {
		t.Fatalf("status --json of a: role %s, want %s", st.Role, a)
	}
	if st := p.b.status(); st.Role != b {
		t.Fatalf("status --json of b: role %s, want %s", st.Role, b)
	}
}
