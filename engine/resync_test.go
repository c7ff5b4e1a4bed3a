package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/transport"
)

func fillRandom(be *mem.Backend, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 77))
	buf := make([]byte, pairSize)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	be.WriteAt(buf, 0)
}

func snapshot(be *mem.Backend) []byte {
	b := make([]byte, pairSize)
	be.ReadAt(b, 0)
	return b
}

// diffBytes counts the bytes of the 4 KiB blocks that differ.
func diffBytes(a, b []byte) uint64 {
	var n uint64
	for off := 0; off < len(a); off += fineBlock {
		if !bytes.Equal(a[off:off+fineBlock], b[off:off+fineBlock]) {
			n += fineBlock
		}
	}
	return n
}

func markInconsistent(t testing.TB, n *node) {
	st, err := n.state.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Disk = DiskInconsistent
	n.state.Save(st)
}

// waitResynced waits for the end of the primary's resync: link live, no
// dirty region left, the target UpToDate.
func (p *pair) waitResynced(prim *node) {
	p.t.Helper()
	sec := p.other(prim)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, ss := prim.v.Status(), sec.v.Status()
		if st.Conn == ConnConnected && st.ResyncPendingBytes == 0 && !prim.v.rs.tracking.Load() && ss.Disk == DiskUpToDate {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("resync did not finish:\nprimary %+v\nsecondary %+v", st, ss)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A secondary created over other data (Inconsistent) gets a full
// checksummed resync, and only the differing 4 KiB blocks travel.
func TestResyncInitialSync(t *testing.T) {
	var before uint64
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) {
		fillRandom(p.a.be, 1)
		fillRandom(p.b.be, 1)
		// Differences: one whole chunk, a 4 KiB block in another chunk,
		// and a single byte in a third.
		junk := bytes.Repeat([]byte{0xee}, 64<<10)
		p.b.be.WriteAt(junk, 1<<20)
		p.b.be.WriteAt(junk[:4096], 2<<20+8192)
		p.b.be.WriteAt(junk[:1], 3<<20+100)
		before = diffBytes(snapshot(p.a.be), snapshot(p.b.be))
		markInconsistent(t, p.b)
	})
	p.waitResynced(p.a)
	p.assertIdentical(p.a, p.b)
	pr, ok := p.a.v.Progress("resync")
	if !ok || pr.Running || pr.Error != "" || !pr.Full {
		t.Fatalf("resync progress %+v", pr)
	}
	if before != 64<<10+2*4096 || pr.SentBytes != before {
		t.Fatalf("sent %d bytes for %d differing", pr.SentBytes, before)
	}
	if pr.DoneBytes != pairSize {
		t.Fatalf("compared %d bytes of %d", pr.DoneBytes, pairSize)
	}
	if st := p.b.v.stateCopy(); st.Disk != DiskUpToDate || st.SyncID != 0 {
		t.Fatalf("target state %+v", st)
	}
	// And it streams normally afterwards.
	overlapLoad(t, p.a.v, 11, 50)
	p.assertIdentical(p.a, p.b)
}

// Entirely different data: everything travels once.
func TestResyncInitialSyncAllDifferent(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) {
		fillRandom(p.a.be, 1)
		fillRandom(p.b.be, 2)
		markInconsistent(t, p.b)
	})
	p.waitResynced(p.a)
	p.assertIdentical(p.a, p.b)
	if pr, _ := p.a.v.Progress("resync"); pr.SentBytes != pairSize {
		t.Fatalf("sent %d bytes, want %d", pr.SentBytes, pairSize)
	}
}

// An outage longer than the journal keeps: the primary tracks the written
// regions, and on reconnect resyncs just those while a write load goes on.
func TestResyncAfterOutagePastRetention(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) {
		p.retain = 256 << 10
		p.resync.RegionSize = 64 << 10
	})
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 12, 50)
	p.assertIdentical(p.a, p.b)
	p.blocked.Store(true)
	p.cut()
	waitFor(t, "link down", func() bool { return p.a.v.Status().Conn != ConnConnected })
	rng := rand.New(rand.NewPCG(13, 1))
	buf := make([]byte, 4096)
	for i := 0; i < 400; i++ {
		for k := range buf {
			buf[k] = byte(rng.Uint32())
		}
		// Random 4 KiB blocks in the second MiB only.
		if err := p.a.v.WriteAt(buf, 1<<20+uint64(rng.IntN(256))*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "tracking", func() bool { return p.a.v.Status().Conn == ConnNeedsResync })
	if st := p.a.v.Status(); st.ResyncPendingBytes != 1<<20 {
		t.Fatalf("pending %d bytes after a partial outage", st.ResyncPendingBytes)
	}
	changed := diffBytes(snapshot(p.a.be), snapshot(p.b.be))
	p.blocked.Store(false)
	p.a.v.repl.kick()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		c := p.a.v.Status().Conn
		if c == ConnSyncSource || c == ConnConnected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect:\nprimary %+v\nsecondary %+v", p.a.v.Status(), p.b.v.Status())
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		overlapLoad(t, p.a.v, 14, 200) // live writes during the resync
	}()
	p.waitResynced(p.a)
	wg.Wait()
	p.assertIdentical(p.a, p.b)
	pr, _ := p.a.v.Progress("resync")
	if pr.Full || pr.SentBytes == 0 || pr.SentBytes > 2*changed {
		t.Fatalf("sent %d bytes for %d changed (full %v)", pr.SentBytes, changed, pr.Full)
	}
	t.Logf("outage: %d bytes changed, %d compared, %d sent", changed, pr.DoneBytes, pr.SentBytes)
}

// A resync interrupted by a restart of the target resumes where it was.
func TestResyncResumesAfterTargetRestart(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) {
		fillRandom(p.a.be, 1)
		fillRandom(p.b.be, 2)
		markInconsistent(t, p.b)
		p.resync.Rate = 1 << 20
		p.resync.RegionSize, p.resync.batch = 64<<10, 256<<10
	})
	waitFor(t, "resync halfway", func() bool {
		pr, ok := p.a.v.Progress("resync")
		return ok && pr.DoneBytes >= 3<<19
	})
	pr1, _ := p.a.v.Progress("resync")
	p.b.v.Close()
	if st := p.b.v.stateCopy(); st.Disk != DiskInconsistent || st.SyncID == 0 {
		t.Fatalf("interrupted target state %+v", st)
	}
	p.open(p.b)
	p.a.v.repl.kick()
	waitFor(t, "resync restarted", func() bool {
		pr, ok := p.a.v.Progress("resync")
		return ok && pr.StartedAt != "" && pr.TotalBytes < pr1.TotalBytes
	})
	p.a.v.SetResyncRate(0)
	p.waitResynced(p.a)
	p.assertIdentical(p.a, p.b)
	pr2, _ := p.a.v.Progress("resync")
	if pr2.Full || pr1.SentBytes+pr2.SentBytes > pairSize*3/2 {
		t.Fatalf("first pass sent %d, resumed pass %d (full %v): not resumed", pr1.SentBytes, pr2.SentBytes, pr2.Full)
	}
	t.Logf("sent %d + %d bytes for a %d-byte volume", pr1.SentBytes, pr2.SentBytes, pairSize)
}

// A resync interrupted by a restart of the primary resumes from its saved
// dirty map.
func TestResyncResumesAfterPrimaryRestart(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) {
		fillRandom(p.a.be, 1)
		fillRandom(p.b.be, 2)
		markInconsistent(t, p.b)
		p.resync.Rate = 1 << 20
		p.resync.RegionSize, p.resync.batch = 64<<10, 256<<10
	})
	waitFor(t, "resync halfway", func() bool {
		pr, ok := p.a.v.Progress("resync")
		return ok && pr.DoneBytes >= 3<<19
	})
	p.a.v.Close()
	pr1, _ := p.a.v.Progress("resync")
	p.resync.Rate = 0
	p.open(p.a)
	p.waitResynced(p.a)
	p.assertIdentical(p.a, p.b)
	pr2, _ := p.a.v.Progress("resync")
	if pr2.Full || pr2.TotalBytes >= pairSize || pr1.SentBytes+pr2.SentBytes > pairSize*3/2 {
		t.Fatalf("first pass sent %d, resumed pass compared %d and sent %d (full %v): not resumed",
			pr1.SentBytes, pr2.TotalBytes, pr2.SentBytes, pr2.Full)
	}
}

// Verify finds a block changed behind the engine's back on the secondary,
// --repair fixes it, and a verify under a running write load reports no
// false mismatch.
func TestVerify(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 15, 100)
	p.assertIdentical(p.a, p.b)
	p.b.be.WriteAt([]byte("bit rot"), 1<<20+5000)
	verify := func(repair bool) Progress {
		t.Helper()
		if err := p.a.v.Verify(repair); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		pr, err := p.a.v.WaitProgress(ctx, "verify")
		if err != nil || pr.Error != "" {
			t.Fatalf("verify: %v %+v", err, pr)
		}
		return pr
	}
	pr := verify(false)
	if len(pr.Mismatches) != 1 || pr.Mismatches[0] != (Range{1<<20 + 4096, 4096}) || pr.DoneBytes != pairSize {
		t.Fatalf("verify found %+v", pr)
	}
	if diffBytes(snapshot(p.a.be), snapshot(p.b.be)) == 0 {
		t.Fatal("verify without --repair changed the secondary")
	}
	if pr := verify(true); pr.RepairedBytes != 4096 {
		t.Fatalf("repair sent %d bytes", pr.RepairedBytes)
	}
	p.assertIdentical(p.a, p.b)
	if pr := verify(false); len(pr.Mismatches) != 0 {
		t.Fatalf("after repair: %+v", pr.Mismatches)
	}
	if err := p.b.v.Verify(false); err == nil {
		t.Fatal("verify on the secondary accepted")
	}

	// Under load: both sides hash each range at the same point of the
	// write stream, so writes in flight never show as mismatches.
	done := make(chan struct{})
	go func() {
		defer close(done)
		overlapLoad(t, p.a.v, 16, 400)
	}()
	runs := 0
	for loaded := true; loaded && runs < 50; runs++ {
		select {
		case <-done:
			loaded = false
		default:
		}
		if pr := verify(false); len(pr.Mismatches) != 0 {
			t.Fatalf("verify under load reported %+v", pr.Mismatches)
		}
	}
	<-done
	p.assertIdentical(p.a, p.b)
	t.Logf("%d verify passes under load, no mismatch", runs)
}

// A split brain is resolved on the node whose writes are to be discarded:
// `resync` there makes it Inconsistent, and the primary resyncs it.
func TestResyncResolvesSplitBrain(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 17, 50)
	p.blocked.Store(true)
	p.cut()
	waitFor(t, "b sees the link down", func() bool { return p.b.v.Status().Conn != ConnConnected })
	if err := p.b.v.Promote(false); err != nil {
		t.Fatal(err)
	}
	overlapLoad(t, p.a.v, 18, 30)
	overlapLoad(t, p.b.v, 19, 30)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.a.v.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	p.blocked.Store(false)
	p.b.v.repl.kick()
	waitFor(t, "split brain reported", func() bool { return p.a.v.Status().Conn == ConnSplitBrain })
	if err := p.a.v.Resync(); err != nil {
		t.Fatal(err)
	}
	p.b.v.repl.kick()
	p.waitResynced(p.b)
	p.assertIdentical(p.b, p.a)
	if pr, _ := p.b.v.Progress("resync"); !pr.Full || pr.SentBytes == 0 || pr.SentBytes >= pairSize {
		t.Fatalf("resync %+v", pr)
	}
}

// `resync` on a connected primary compares everything again and sends
// nothing when the copies agree.
func TestResyncOnDemand(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 20, 100)
	if err := p.a.v.Resync(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resync started", func() bool { _, ok := p.a.v.Progress("resync"); return ok })
	p.waitResynced(p.a)
	p.assertIdentical(p.a, p.b)
	if pr, _ := p.a.v.Progress("resync"); pr.DoneBytes != pairSize || pr.SentBytes != 0 {
		t.Fatalf("resync of identical copies %+v", pr)
	}
}
