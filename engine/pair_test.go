package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinblock/twinblock/bench/ackload"
	"github.com/twinblock/twinblock/engine/backend/mem"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/journal/vfs"
	"github.com/twinblock/twinblock/transport"
)

const pairSize = 4 << 20

// node is one side of an in-process pair: its volume can be closed and
// reopened over the same journal, backend and state ("restart").
type node struct {
	id    string
	fs    *vfs.MemFS
	be    *mem.Backend
	state *MemState
	v     *Volume
}

// pair wires two nodes over transport.Pipe links. While blocked, dials
// fail (a partition); cut breaks the current link.
type pair struct {
	t       testing.TB
	osDir   string // journals on the real disk under this dir ("" = MemFS)
	a, b    *node
	mode    transport.Mode
	mu      sync.Mutex
	links   []*transport.PipeLink
	blocked atomic.Bool
	// Settings read by open (change them before reopening a node).
	retain int64         // PeerOptions.RetainBytes
	resync ResyncOptions // MapPath is set per node under mapDir
	mapDir string
	async  bool // VolumeOptions.AsyncApply
	// syncDelay slows every journal fdatasync of node b (the secondary):
	// a far peer, whose acks take that long.
	syncDelay time.Duration
}

// slowSyncFS delays every file's Sync by d.
type slowSyncFS struct {
	vfs.FS
	d time.Duration
}

func (s slowSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, s.d}, nil
}

type slowSyncFile struct {
	vfs.File
	d time.Duration
}

func (f slowSyncFile) Sync() error {
	time.Sleep(f.d)
	return f.File.Sync()
}

func newPair(t *testing.T, mode transport.Mode) *pair { return newPairTB(t, mode, "") }

// newPairOS is newPair with journals on the real disk (benchmarks).
func newPairOS(t testing.TB, mode transport.Mode) *pair { return newPairTB(t, mode, t.TempDir()) }

func newPairTB(t testing.TB, mode transport.Mode, osDir string) *pair {
	return newPairPrep(t, mode, osDir, nil)
}

// newPairPrep is newPairTB with prep run on the pair before either node
// opens (fill backends, change states or settings).
func newPairPrep(t testing.TB, mode transport.Mode, osDir string, prep func(p *pair)) *pair {
	t.Helper()
	uuid := NewUUID()
	p := &pair{t: t, mode: mode, osDir: osDir, retain: 64 << 20, mapDir: t.TempDir()}
	mk := func(id string, primary bool) *node {
		n := &node{id: id, fs: vfs.NewMemFS(), be: mem.New(pairSize), state: &MemState{}}
		st := State{UUID: uuid, Size: pairSize, Role: RoleSecondary, Disk: DiskUpToDate}
		if primary {
			st.Role = RolePrimary
			st.Generation = 0x1234
			st.History = []GenEntry{{Gen: 0, EndSeq: 0}}
		}
		n.state.Save(st)
		return n
	}
	p.a, p.b = mk("a", true), mk("b", false)
	if prep != nil {
		prep(p)
	}
	p.open(p.a)
	p.open(p.b)
	t.Cleanup(func() {
		p.blocked.Store(true)
		for _, n := range []*node{p.a, p.b} {
			if n.v != nil {
				n.v.Close()
			}
		}
	})
	return p
}

func (p *pair) other(n *node) *node {
	if n == p.a {
		return p.b
	}
	return p.a
}

func (p *pair) open(n *node) {
	p.t.Helper()
	jo := journal.Options{Dir: "/j", FS: n.fs, SegmentSize: 256 << 10, MaxPayload: 64 << 10}
	if n == p.b && p.syncDelay > 0 {
		jo.FS = slowSyncFS{n.fs, p.syncDelay}
	}
	if p.osDir != "" {
		jo = journal.Options{Dir: p.osDir + "/" + n.id}
	}
	j, err := journal.Open(jo)
	if err != nil {
		p.t.Fatal(err)
	}
	peer := p.other(n)
	rs := p.resync
	rs.MapPath = p.mapDir + "/" + n.id + ".map"
	v, err := OpenVolume(VolumeOptions{
		Resync: rs, AsyncApply: p.async,
		Name: "vol", Backend: noClose{n.be}, Journal: j, Logger: quiet, State: n.state, NodeID: n.id,
		CheckpointBytes: 256 << 10, CheckpointInterval: 5 * time.Millisecond, JournalMaxBytes: 2 << 20,
		Peer: &PeerOptions{NodeID: peer.id, Mode: p.mode, AsyncMaxLag: 256 << 10, RetainBytes: p.retain,
			Dial: func(ctx context.Context) (transport.Link, error) { return p.dial(n) }},
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	n.v = v
	p.mu.Unlock()
}

// dial connects n (primary) to its peer, as the daemon's dialer and
// listener would.
func (p *pair) dial(n *node) (transport.Link, error) {
	if p.blocked.Load() {
		return nil, errors.New("partitioned")
	}
	peer := p.other(n)
	p.mu.Lock()
	nv, pv := n.v, peer.v
	p.mu.Unlock()
	if nv == nil || pv == nil || pv.closed.Load() {
		return nil, errors.New("peer down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	short := func(o transport.ConnOptions) transport.ConnOptions {
		o.HeartbeatInterval, o.Timeout = 50*time.Millisecond, time.Second
		return o
	}
	pl, err := transport.Pipe(ctx,
		short(transport.ConnOptions{Hello: nv.Hello(), PeerID: peer.id, Validate: nv.ValidatePeer}),
		short(transport.ConnOptions{Hello: pv.Hello(), PeerID: n.id, Validate: pv.ValidatePeer}))
	if err != nil {
		return nil, err
	}
	if err := pv.Attach(pl.B); err != nil {
		pl.Close()
		return nil, err
	}
	p.mu.Lock()
	p.links = append(p.links, pl)
	p.mu.Unlock()
	return pl.A, nil
}

func (p *pair) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		l.Cut()
	}
	p.links = nil
}

// waitFor polls cond (bounded).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (p *pair) waitConnected(prim *node) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for prim.v.Status().Conn != ConnConnected {
		if time.Now().After(deadline) {
			p.t.Fatalf("peer link not connected:\nprimary %+v\nsecondary %+v", prim.v.Status(), p.other(prim).v.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitInSync waits until the secondary applied everything the primary has
// and compares the two backends byte for byte.
func (p *pair) assertIdentical(prim, sec *node) {
	p.t.Helper()
	last := prim.v.j.Stats().LastSeq
	// Both sides: with asynchronous apply the primary acknowledges writes
	// before its own backend has them.
	waitFor(p.t, "both nodes to apply everything", func() bool {
		return sec.v.ord.appliedThrough() >= last && sec.v.inflightN.Load() == 0 &&
			prim.v.ord.appliedThrough() >= last && prim.v.inflightN.Load() == 0
	})
	a, b := make([]byte, pairSize), make([]byte, pairSize)
	prim.be.ReadAt(a, 0)
	sec.be.ReadAt(b, 0)
	if !bytes.Equal(a, b) {
		for i := range a {
			if a[i] != b[i] {
				p.t.Fatalf("replicas differ at byte %d (primary %d, secondary %d records)", i, last, sec.v.j.Stats().LastSeq)
			}
		}
	}
}

// overlapLoad writes random, overlapping ranges from several goroutines.
func overlapLoad(t testing.TB, v *Volume, seed uint64, n int) {
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			buf := make([]byte, 64<<10)
			for i := 0; i < n; i++ {
				l := 512 * (1 + rng.IntN(32))
				off := uint64(rng.IntN(256)) * 4096
				for k := range buf[:l] {
					buf[k] = byte(g*31 + i)
				}
				var err error
				switch rng.IntN(10) {
				case 0:
					err = v.Trim(off, uint32(l), false)
				case 1:
					err = v.WriteZeroes(off, uint32(l), rng.IntN(2) == 0, false)
				default:
					err = v.WriteAt(buf[:l], off, false)
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestPairReplicatesOverlappingWrites(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeSync, transport.ModeMemory, transport.ModeAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			p := newPair(t, mode)
			p.waitConnected(p.a)
			overlapLoad(t, p.a.v, 1, 300)
			p.assertIdentical(p.a, p.b)
			if st := p.b.v.Status(); st.Disk != DiskUpToDate || st.Role != RoleSecondary {
				t.Fatalf("secondary status %+v", st)
			}
		})
	}
}

// Every write acknowledged in sync mode is on the secondary the moment it
// is acknowledged: stop the primary dead (no clean shutdown), promote the
// secondary, and verify there.
func TestPairFailoverKeepsAcknowledgedWrites(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	var lost atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log *ackload.Log
	done := make(chan struct{})
	go func() {
		defer close(done)
		// ackDev reports writes that complete after the site is lost as
		// failed: from then on the old primary acknowledges degraded, and
		// nobody hears those acks.
		log, _ = ackload.Run(ctx, ackDev{p.a.v, &lost}, ackload.Options{BlockSize: 4096, Blocks: 512, Workers: 16, MaxOps: 1 << 20, Duration: 10 * time.Second, Seed: 3})
	}()
	time.Sleep(150 * time.Millisecond)
	// The primary's site is lost: from this instant no ack counts, then the
	// link goes.
	lost.Store(true)
	p.blocked.Store(true)
	p.cut()
	<-done
	if err := p.b.v.Promote(false); err != nil {
		t.Fatalf("promote: %v", err)
	}
	if log.Acked == 0 {
		t.Fatal("no write acknowledged before the failure")
	}
	if _, err := log.Verify(p.b.v); err != nil {
		t.Fatal(err)
	}
}

func TestPairLinkCutCatchUp(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 2, 100)
	p.blocked.Store(true)
	p.cut()
	waitFor(t, "link down", func() bool { return p.a.v.Status().Conn != ConnConnected })
	overlapLoad(t, p.a.v, 3, 200) // degraded: acknowledged locally, kept for the peer
	if st := p.a.v.Status(); st.LagRecords == 0 {
		t.Fatalf("no lag while disconnected: %+v", st)
	}
	p.blocked.Store(false)
	p.a.v.repl.kick()
	p.waitConnected(p.a)
	p.assertIdentical(p.a, p.b)
	// And the link keeps streaming afterwards.
	overlapLoad(t, p.a.v, 4, 50)
	p.assertIdentical(p.a, p.b)
}

// A clean role switch: demote A, promote B, and B replicates back to A.
func TestPairRoleSwitch(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 5, 100)
	if err := p.b.v.Promote(false); !errors.Is(err, ErrPeerPrimary) {
		t.Fatalf("promote while the peer is primary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.a.v.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.a.v.WriteAt(make([]byte, 512), 0, false); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("write after demote: %v", err)
	}
	if err := p.b.v.Promote(false); err != nil {
		t.Fatal(err)
	}
	p.waitConnected(p.b)
	overlapLoad(t, p.b.v, 6, 100)
	p.assertIdentical(p.b, p.a)
	if g := p.b.v.stateCopy(); len(g.History) == 0 || g.History[0].Gen != 0x1234 {
		t.Fatalf("new primary's history %+v", g.History)
	}
}

// Both sides write on their own: on reconnect nothing is synced, the
// split brain is reported, and the data of both stays as it was.
func TestPairSplitBrainRefused(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	overlapLoad(t, p.a.v, 7, 50)
	p.blocked.Store(true)
	p.cut()
	waitFor(t, "b sees the link down", func() bool { return p.b.v.Status().Conn != ConnConnected })
	if err := p.b.v.Promote(false); err != nil { // UpToDate as of the cut
		t.Fatal(err)
	}
	overlapLoad(t, p.a.v, 8, 30)
	overlapLoad(t, p.b.v, 9, 30)
	aBefore := make([]byte, pairSize)
	p.a.be.ReadAt(aBefore, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.a.v.Demote(ctx); err != nil {
		t.Fatal(err)
	}
	p.blocked.Store(false)
	p.b.v.repl.kick()
	waitFor(t, "split brain reported", func() bool { return p.b.v.Status().Conn == ConnSplitBrain })
	aAfter := make([]byte, pairSize)
	p.a.be.ReadAt(aAfter, 0)
	if !bytes.Equal(aBefore, aAfter) {
		t.Fatal("the refused side's data changed")
	}
	if st := p.a.v.Status(); st.Conn != ConnSplitBrain || st.ConnError == "" {
		t.Fatalf("a's status %+v", st)
	}
}

// Wrong volume or size is refused at the handshake, nothing is written.
func TestPairRefusesWrongVolume(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	h := p.a.v.Hello()
	for name, mutate := range map[string]func(*transport.Hello){
		"uuid": func(h *transport.Hello) { h.VolumeUUID[0] ^= 1 },
		"size": func(h *transport.Hello) { h.VolumeSize += 4096 },
		"name": func(h *transport.Hello) { h.VolumeName = "other" },
	} {
		bad := h
		mutate(&bad)
		if err := p.b.v.ValidatePeer(p.b.v.Hello(), bad); !errors.Is(err, transport.ErrRefused) {
			t.Errorf("%s: not refused: %v", name, err)
		}
	}
}

// A secondary that is not known to be up to date refuses a plain promote;
// --force overrides. Once it has caught up with a primary it is UpToDate.
func TestPromoteRequiresUpToDate(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	if st := p.b.v.Status(); st.Disk != DiskUpToDate {
		t.Fatalf("connected secondary disk %s", st.Disk)
	}
	p.blocked.Store(true)
	p.cut()
	waitFor(t, "b sees the link down", func() bool { return p.b.v.Status().Conn != ConnConnected })
	if err := p.b.v.updateState(func(s *State) { s.Disk = DiskOutdated }); err != nil {
		t.Fatal(err)
	}
	if err := p.b.v.Promote(false); !errors.Is(err, ErrNotUpToDate) {
		t.Fatalf("promote of an outdated copy: %v", err)
	}
	if err := p.b.v.Promote(true); err != nil {
		t.Fatalf("forced promote: %v", err)
	}
	if p.b.v.Role() != RolePrimary {
		t.Fatal("not primary after forced promote")
	}
}

// Cuts while a lone writer is acknowledged from the secondary's receive
// loop: whichever goroutine notices the dead link must unregister it, or
// every reconnect is refused as "busy".
func TestPairCutDuringLoneWrites(t *testing.T) {
	p := newPair(t, transport.ModeSync)
	p.waitConnected(p.a)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.a.v.WriteAt(buf, uint64(i%256)*4096, false); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		p.cut()
		p.a.v.repl.kick()
		p.waitConnected(p.a)
	}
	close(stop)
	<-done
	p.assertIdentical(p.a, p.b)
}

// TestCommitDeferral: with a far peer (its fdatasync takes 20 ms), a sync
// write holds its local group commit back until shortly before its peer
// ack is due, so one local commit carries the records of many concurrent
// writes instead of each write committing its own; every write is still
// on both nodes. Without deferral the primary, whose own commits are
// instant here, commits about once per write.
func TestCommitDeferral(t *testing.T) {
	p := newPairPrep(t, transport.ModeSync, "", func(p *pair) { p.syncDelay = 20 * time.Millisecond })
	p.waitConnected(p.a)
	v := p.a.v
	buf := bytes.Repeat([]byte{7}, 4096)
	// A few lone writes teach the primary how long the peer's acks take.
	for i := range 5 {
		if err := v.WriteAt(buf, uint64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if us := v.Status().PeerAckMicros; us < 15000 {
		t.Fatalf("status: peer ack %v µs, want about 20 ms", us)
	}
	const writers, rounds = 16, 8
	st := v.Status()
	before, appends := st.JournalCommits, st.JournalAppends
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(w + 1)}, 4096)
			for r := range rounds {
				if err := v.WriteAt(data, uint64(w*rounds+r)*4096, false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st = v.Status()
	if got := st.JournalAppends - appends; got != writers*rounds {
		t.Fatalf("status: %d journal appends for %d writes", got, writers*rounds)
	}
	syncs := st.JournalCommits - before
	t.Logf("%d writes, %d local group commits", writers*rounds, syncs)
	if syncs > writers*rounds/4 {
		t.Fatalf("%d local group commits for %d writes: commits were not deferred", syncs, writers*rounds)
	}
	p.assertIdentical(p.a, p.b)

	// However long the primary expects the ack to take, a write whose ack
	// arrives earlier stops deferring its commit then, instead of waiting
	// out the estimate.
	v.repl.mu.Lock()
	v.repl.ackAvg.Store(int64(time.Hour))
	v.repl.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- v.WriteAt(buf, 0, false) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write waited for the expected ack time, not the ack")
	}
	if v.j.DurableSeq() < v.j.Stats().LastSeq {
		t.Fatal("write acknowledged before its local commit")
	}
}
