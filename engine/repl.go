package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/transport"
)

// PeerOptions configure replication of a volume to its peer.
type PeerOptions struct {
	// NodeID is the peer's node id; Address its peer-link address (status).
	NodeID  string
	Address string
	// Mode says when a write is acknowledged: sync (peer journal durable),
	// memory (peer received), async (local only, lag bounded).
	Mode transport.Mode
	// RetainBytes bounds the journal kept for a disconnected peer; past it
	// the peer needs a block resync. Default 1 GiB.
	RetainBytes int64
	// AsyncMaxLag and AsyncMaxAge bound how far an async peer may lag
	// (bytes sent and not acknowledged, age of the oldest); writes wait when
	// either is reached. Defaults 64 MiB and 5 s.
	AsyncMaxLag int64
	AsyncMaxAge time.Duration
	// Dial connects to the peer and runs the handshake (use Hello and
	// ValidatePeer). The engine calls it while primary and connected to
	// no one, with backoff. Nil: the engine never dials (links come from a
	// listener through Attach only).
	Dial func(ctx context.Context) (transport.Link, error)
}

const replRetain = "peer"

// unackedRec is a record sent live and not acknowledged yet (async lag;
// the ranges a dirty-region map must mark if the link drops).
type unackedRec struct {
	seq    uint64
	off, n uint64
	bytes  int64
	at     time.Time
}

// replState is the peer-link side of a volume. Guarded by its mu; lock
// order: Volume.admitMu, then replState.mu.
type replState struct {
	mu struct {
		sync.Mutex
		link     transport.Link
		epoch    uint64 // bumped per link, so stale goroutines can tell
		state    ConnState
		err      string
		live     bool // records go to the link as they are admitted
		enabled  bool // admin connect/disconnect
		peerRecv uint64
		peerDur  uint64
		peerDisk DiskState
		unacked  []unackedRec
		lagBytes int64
		// secondary: the primary's durable seq at connect; reaching it
		// makes this copy UpToDate.
		catchUpTarget uint64
		// waiters are writes waiting for the peer (waitPeer); an ack wakes
		// only those it satisfies (a broadcast would wake every write in
		// flight on every ack).
		waiters []*peerWaiter
	}
	cond *sync.Cond // on mu: acks, link changes
	wake chan struct{}
	// ackAvg is a moving average, in nanoseconds, of how long a record
	// sent live on the current link took to be acknowledged durable by
	// the peer (0 until the first ack). It drives commit deferral.
	ackAvg atomic.Int64
}

// peerWaiter is one write waiting until the peer holds seq.
type peerWaiter struct {
	seq  uint64
	done chan struct{}
}

// releaseLocked wakes the waiters the peer's positions satisfy (all of
// them when the link is gone). The caller holds r.mu.
func (r *replState) releaseLocked(mode transport.Mode) {
	if len(r.mu.waiters) == 0 {
		return
	}
	reach := r.mu.peerDur
	if mode == transport.ModeMemory {
		reach = max(reach, r.mu.peerRecv)
	}
	kept := r.mu.waiters[:0]
	for _, w := range r.mu.waiters {
		if r.mu.link == nil || w.seq <= reach {
			close(w.done)
			continue
		}
		kept = append(kept, w)
	}
	clear(r.mu.waiters[len(kept):])
	r.mu.waiters = kept
}

func (r *replState) init() {
	r.cond = sync.NewCond(&r.mu.Mutex)
	r.wake = make(chan struct{}, 1)
	r.mu.enabled = true
	r.mu.state = ConnConnecting
	r.mu.peerDisk = DiskUnknown
}

func (r *replState) kick() { kick(r.wake) }

// --------------------------------------------------------------- handshake

// Hello describes this node's copy of the volume for the peer handshake.
func (v *Volume) Hello() transport.Hello {
	st := v.stateCopy()
	uuid, _ := ParseUUID(st.UUID)
	js := v.j.Stats()
	h := transport.Hello{
		VolumeName: v.name, VolumeUUID: uuid, VolumeSize: v.size, NodeID: v.opts.NodeID,
		Role: transport.RoleSecondary, Mode: v.peer.Mode, Generation: st.Generation,
		FirstSeq: js.FirstSeq, DurableSeq: js.DurableSeq, AppliedSeq: min(v.ord.appliedThrough(), js.DurableSeq),
	}
	if st.Role == RolePrimary {
		h.Role = transport.RolePrimary
	}
	for _, e := range st.History {
		h.History = append(h.History, transport.GenEntry{Gen: e.Gen, EndSeq: e.EndSeq})
	}
	if h.FirstSeq > h.DurableSeq+1 {
		h.FirstSeq = h.DurableSeq + 1
	}
	if st.Disk == DiskInconsistent && st.Role == RoleSecondary {
		h.Flags |= transport.HelloInconsistent
		h.SyncID = st.SyncID
	}
	return h
}

func lineageOf(h transport.Hello) lineage {
	l := lineage{Gen: h.Generation, FirstSeq: h.FirstSeq, LastSeq: h.DurableSeq}
	for _, e := range h.History {
		l.History = append(l.History, GenEntry{Gen: e.Gen, EndSeq: e.EndSeq})
	}
	return l
}

// ValidatePeer is the handshake's Validate hook: it refuses a peer with
// another volume, size or role conflict, and one whose data cannot be
// brought in line by a journal catch-up, saying why in the refusal and in
// this volume's status.
func (v *Volume) ValidatePeer(local, remote transport.Hello) error {
	err := v.validatePeer(local, remote)
	if err != nil {
		v.noteRefusal(err)
	}
	return err
}

// noteRefusal records a refused handshake (by us or by the peer) in the
// status, so the admin sees split brain or resync needs on both nodes.
// It reports whether err was a refusal.
func (v *Volume) noteRefusal(err error) bool {
	var re *transport.RefuseError
	if !errors.As(err, &re) {
		return false
	}
	state := ConnRefused
	switch re.Reason {
	case transport.ReasonSplitBrain:
		state = ConnSplitBrain
	case transport.ReasonPolicy:
		if strings.Contains(re.Text, "needs resync") {
			state = ConnNeedsResync
		}
	case transport.ReasonBusy, transport.ReasonShutdown:
		return true // transient: not a state change
	}
	v.repl.mu.Lock()
	if v.repl.mu.link == nil {
		v.repl.mu.state = state
		v.repl.mu.err = err.Error()
	}
	v.repl.mu.Unlock()
	v.log.Warn("peer link refused", "peer", v.peer.NodeID, "err", err)
	return true
}

func (v *Volume) validatePeer(local, remote transport.Hello) error {
	if v.peer.NodeID == "" {
		return transport.Refusal(transport.ReasonPolicy, "volume %s has no peer configured", v.name)
	}
	if remote.VolumeName != v.name {
		return transport.Refusal(transport.ReasonVolumeName, "peer offers volume %q, this is %q", remote.VolumeName, v.name)
	}
	if remote.VolumeUUID != local.VolumeUUID {
		return transport.Refusal(transport.ReasonVolumeUUID, "peer volume uuid %x, ours %x", remote.VolumeUUID, local.VolumeUUID)
	}
	if remote.VolumeSize != local.VolumeSize {
		return transport.Refusal(transport.ReasonVolumeSize, "peer volume size %d, ours %d", remote.VolumeSize, local.VolumeSize)
	}
	if remote.Role == local.Role {
		if local.Role == transport.RolePrimary {
			return transport.Refusal(transport.ReasonSplitBrain, "both nodes are primary: demote one (its writes since the split are not merged)")
		}
		return transport.Refusal(transport.ReasonRoleConflict, "both nodes are secondary: promote one")
	}
	v.repl.mu.Lock()
	busy := v.repl.mu.link != nil
	enabled := v.repl.mu.enabled
	v.repl.mu.Unlock()
	if busy {
		return transport.Refusal(transport.ReasonBusy, "a link for volume %s is already up", v.name)
	}
	if !enabled {
		return transport.Refusal(transport.ReasonPolicy, "volume %s is disconnected by the admin", v.name)
	}
	p, s := local, remote
	if local.Role == transport.RoleSecondary {
		p, s = remote, local
	}
	if s.Flags&transport.HelloInconsistent != 0 {
		// The secondary's data is no generation's image: its lineage says
		// nothing, and a block resync from the primary is the only way on.
		return nil
	}
	act, _, why := decideSync(lineageOf(p), lineageOf(s))
	switch act {
	case syncInSync, syncCatchUp, syncNeedsResync:
		return nil
	case syncSplitBrain:
		return transport.Refusal(transport.ReasonSplitBrain, "%s (on the node whose writes are to be discarded: `twinblock resync` makes it a resync target)", why)
	}
	return transport.Refusal(transport.ReasonRoleConflict, "%s", why)
}

// Attach takes an established, validated link to the peer and starts
// replicating over it (primary) or receiving (secondary).
func (v *Volume) Attach(link transport.Link) error {
	if err := v.validatePeer(v.Hello(), link.Remote()); err != nil {
		link.Close()
		return err
	}
	if v.isPrimary() {
		v.attachPrimary(link)
	} else {
		v.attachSecondary(link)
	}
	return nil
}

func (v *Volume) newLinkLocked(link transport.Link, state ConnState) uint64 {
	v.repl.mu.link = link
	v.repl.mu.epoch++
	v.repl.mu.state = state
	v.repl.mu.err = ""
	v.repl.mu.live = false
	v.repl.mu.unacked = nil
	v.repl.mu.lagBytes = 0
	v.repl.ackAvg.Store(0)
	v.repl.cond.Broadcast()
	return v.repl.mu.epoch
}

// dropLink ends the link of the given epoch (if still current), records
// why, and releases every write waiting for the peer: from now on the
// volume runs degraded and the journal keeps records for a catch-up.
func (v *Volume) dropLink(epoch uint64, err error) {
	v.repl.mu.Lock()
	if v.repl.mu.epoch != epoch || v.repl.mu.link == nil {
		v.repl.mu.Unlock()
		return
	}
	link := v.repl.mu.link
	unacked := v.repl.mu.unacked
	v.repl.mu.link = nil
	v.repl.mu.live = false
	v.repl.mu.unacked = nil
	v.repl.mu.lagBytes = 0
	v.repl.mu.peerDisk = DiskUnknown
	if v.repl.mu.enabled {
		v.repl.mu.state = ConnConnecting
	} else {
		v.repl.mu.state = ConnStandalone
	}
	if err != nil {
		v.repl.mu.err = err.Error()
	}
	v.repl.releaseLocked(v.peer.Mode)
	v.repl.cond.Broadcast()
	v.repl.mu.Unlock()
	link.Close()
	v.markUnacked(unacked)
	v.repl.kick()
	if err != nil && !v.closed.Load() {
		v.log.Warn("peer link lost; running without the peer", "peer", v.peer.NodeID, "err", err)
	}
}

// --------------------------------------------------------------- primary

func (v *Volume) attachPrimary(link transport.Link) {
	remote := link.Remote()
	act, _, _ := decideSync(lineageOf(v.Hello()), lineageOf(remote))
	if remote.Flags&transport.HelloInconsistent != 0 || v.rs.tracking.Load() || act == syncNeedsResync {
		v.attachResync(link, act)
		return
	}
	v.repl.mu.Lock()
	epoch := v.newLinkLocked(link, ConnCatchingUp)
	v.repl.mu.peerRecv = remote.DurableSeq
	v.repl.mu.peerDur = remote.DurableSeq
	v.repl.mu.peerDisk = DiskOutdated
	v.repl.mu.Unlock()
	v.j.SetRetain(replRetain, remote.DurableSeq)
	v.log.Info("peer connected", "peer", remote.NodeID, "peer_seq", remote.DurableSeq, "local_seq", v.j.DurableSeq())
	go v.recvAcks(link, epoch)
	go v.catchUp(link, epoch, remote.DurableSeq+1)
}

// catchUp replays the journal from `from` to the secondary, then switches
// the link to live streaming at a point where no record can be missed: with
// admission locked, every record up to the journal's last seq has been
// sent.
func (v *Volume) catchUp(link transport.Link, epoch uint64, from uint64) {
	r, err := v.j.NewReader(from)
	if err != nil {
		if errors.Is(err, journal.ErrTrimmed) {
			v.markPeerNeedsResync(from-1, fmt.Errorf("catch-up from seq %d: %w", from, err))
		}
		v.dropLink(epoch, err)
		return
	}
	defer r.Close()
	next := from
	sent := 0
	for {
		rec, err := r.Next()
		if err == nil {
			if rec.Seq != next {
				v.dropLink(epoch, fmt.Errorf("engine: catch-up read seq %d, expected %d", rec.Seq, next))
				return
			}
			if err := link.Send(recordOf(rec.Seq, rec.Op)); err != nil {
				v.dropLink(epoch, err)
				return
			}
			next++
			sent++
			continue
		}
		if !errors.Is(err, io.EOF) {
			if errors.Is(err, journal.ErrTrimmed) {
				v.markPeerNeedsResync(next-1, err)
			}
			v.dropLink(epoch, fmt.Errorf("engine: catch-up: %w", err))
			return
		}
		v.admitMu.Lock()
		last := v.j.Stats().LastSeq
		if next == last+1 {
			v.repl.mu.Lock()
			if v.repl.mu.epoch == epoch && v.repl.mu.link != nil {
				v.repl.mu.live = true
				v.repl.mu.state = ConnConnected
				if v.repl.mu.peerDur >= last {
					v.repl.mu.peerDisk = DiskUpToDate
				}
			}
			v.repl.mu.Unlock()
			v.admitMu.Unlock()
			if sent > 0 {
				v.log.Info("peer caught up", "peer", v.peer.NodeID, "records", sent, "through_seq", last)
			}
			return
		}
		v.admitMu.Unlock()
		// Records admitted but not yet durable: wait, then read them.
		if err := v.j.WaitDurable(last); err != nil {
			v.dropLink(epoch, err)
			return
		}
		select {
		case <-link.Done():
			v.dropLink(epoch, link.Err())
			return
		default:
		}
	}
}

func recordOf(seq uint64, op journal.Op) transport.Record {
	r := transport.Record{Seq: seq, Offset: op.Offset, Length: op.Length}
	switch op.Kind {
	case journal.KindWrite:
		r.Kind = transport.KindWrite
		r.Data = op.Data
	case journal.KindTrim:
		r.Kind = transport.KindTrim
	case journal.KindZero:
		r.Kind = transport.KindZero
		if op.NoHole {
			r.Flags = transport.RecordNoHole
		}
	}
	return r
}

func opOf(r transport.Record) journal.Op {
	op := journal.Op{Offset: r.Offset, Length: r.Length}
	switch r.Kind {
	case transport.KindWrite:
		op.Kind = journal.KindWrite
		op.Data = r.Data
	case transport.KindTrim:
		op.Kind = journal.KindTrim
	case transport.KindZero:
		op.Kind = journal.KindZero
		op.NoHole = r.Flags&transport.RecordNoHole != 0
	}
	return op
}

// sendLiveLocked sends a just-admitted record when the link is live and
// reports whether it did. The caller holds admitMu, so records go out in
// seq order.
func (v *Volume) sendLiveLocked(seq uint64, op journal.Op) bool {
	v.repl.mu.Lock()
	if !v.repl.mu.live {
		v.repl.mu.Unlock()
		return false
	}
	link, epoch := v.repl.mu.link, v.repl.mu.epoch
	n := int64(op.Length) + 64
	v.repl.mu.unacked = append(v.repl.mu.unacked, unackedRec{seq: seq, off: op.Offset, n: uint64(op.Length), bytes: n, at: time.Now()})
	v.repl.mu.lagBytes += n
	v.repl.mu.Unlock()
	if err := link.Send(recordOf(seq, op)); err != nil {
		go v.dropLink(epoch, err)
	}
	return true
}

// recvAcks reads the secondary's acknowledgements.
func (v *Volume) recvAcks(link transport.Link, epoch uint64) {
	for {
		f, err := link.Recv()
		if err != nil {
			v.dropLink(epoch, err)
			return
		}
		var a transport.Ack
		switch m := f.(type) {
		case transport.Ack:
			a = m
		case transport.HashList:
			if !v.rs.deliver(m.ID, m) {
				v.dropLink(epoch, fmt.Errorf("engine: hash list %d that nobody asked for", m.ID))
				return
			}
			continue
		case transport.Control:
			var b idBody
			if m.Kind != ctlResyncFlushed || json.Unmarshal(m.Body, &b) != nil || !v.rs.deliver(b.ID, m) {
				v.dropLink(epoch, fmt.Errorf("engine: unexpected control %q from the secondary", m.Kind))
				return
			}
			continue
		default:
			v.dropLink(epoch, fmt.Errorf("engine: unexpected %T from the secondary", f))
			return
		}
		v.repl.mu.Lock()
		if v.repl.mu.epoch != epoch {
			v.repl.mu.Unlock()
			return
		}
		v.repl.mu.peerRecv = max(v.repl.mu.peerRecv, a.ReceivedSeq)
		v.repl.mu.peerDur = max(v.repl.mu.peerDur, a.DurableSeq)
		if v.repl.mu.live && v.repl.mu.state != ConnSyncSource {
			v.repl.mu.peerDisk = DiskUpToDate
		}
		i := 0
		for i < len(v.repl.mu.unacked) && v.repl.mu.unacked[i].seq <= v.repl.mu.peerDur {
			v.repl.mu.lagBytes -= v.repl.mu.unacked[i].bytes
			i++
		}
		if i > 0 {
			v.repl.noteAck(time.Since(v.repl.mu.unacked[i-1].at))
		}
		v.repl.mu.unacked = v.repl.mu.unacked[i:]
		dur := v.repl.mu.peerDur
		v.repl.releaseLocked(v.peer.Mode)
		v.repl.cond.Broadcast()
		v.repl.mu.Unlock()
		v.j.SetRetain(replRetain, dur)
	}
}

// noteAck adds one ack latency to ackAvg (weight 1/8). The caller holds
// mu, which serializes updates.
func (r *replState) noteAck(d time.Duration) {
	if avg := r.ackAvg.Load(); avg == 0 {
		r.ackAvg.Store(int64(d))
	} else {
		r.ackAvg.Store(avg + (int64(d)-avg)/8)
	}
}

// waitPeer blocks until the peer holds seq as the mode requires, or the
// link is gone (then the write is acknowledged degraded: it stays in the
// journal for the peer's catch-up).
func (v *Volume) waitPeer(seq uint64) {
	if w := v.peerWait(seq); w != nil {
		<-w.done
	}
}

// peerWait registers a wait for the peer to hold seq; nil when there is
// nothing to wait for (no peer, async mode, no link, or already there).
// The returned waiter's done is closed once the peer holds seq or the
// link is gone.
func (v *Volume) peerWait(seq uint64) *peerWaiter {
	if v.peer.NodeID == "" || v.peer.Mode == transport.ModeAsync {
		return nil
	}
	v.repl.mu.Lock()
	defer v.repl.mu.Unlock()
	if v.repl.mu.link == nil || v.repl.mu.peerDur >= seq ||
		(v.peer.Mode == transport.ModeMemory && v.repl.mu.peerRecv >= seq) {
		return nil
	}
	w := &peerWaiter{seq: seq, done: make(chan struct{})}
	v.repl.mu.waiters = append(v.repl.mu.waiters, w)
	return w
}

// Commit deferral. A sync-mode write is acknowledged once the local
// journal and the peer both hold it durably. Over a WAN link the peer's
// ack takes milliseconds while a local group commit takes a fraction of
// one, so committing every record at once only multiplies fdatasyncs:
// at queue depth 32 behind a 5 ms round trip, each local commit would
// carry one or two records. Instead the write waits for its peer ack,
// but no longer than until its record's expected ack time (ackAvg after
// it was sent) less two commit times and a margin, and then leads its
// local commit, which now carries every record admitted meanwhile. The
// write's latency stays the peer's; if the ack comes earlier than
// expected, the wait ends with it and the write pays one local commit
// after the ack (never more). On a LAN, where the ack is about as quick
// as a commit, nothing is deferred.
const (
	// commitDeferMargin is slack for the commit starting late and taking
	// longer than its average.
	commitDeferMargin = 200 * time.Microsecond
	// commitDeferMin: shorter deferrals are not worth a timer.
	commitDeferMin = 100 * time.Microsecond
)

// deferCommit waits, before a write leads its local commit, for w (its
// peer ack) or its commit deadline, whichever comes first; sent is when
// its record went to the peer. Sync mode only (the caller checks).
func (v *Volume) deferCommit(w *peerWaiter, sent time.Time) {
	ack := time.Duration(v.repl.ackAvg.Load())
	if ack == 0 {
		return
	}
	d := time.Until(sent.Add(ack - 2*v.j.CommitTime() - commitDeferMargin))
	if d < commitDeferMin {
		return
	}
	t := time.NewTimer(d)
	select {
	case <-w.done:
	case <-t.C:
	}
	t.Stop()
}

// waitAsyncRoom bounds an async peer's lag: writes wait while the bytes sent
// and not acknowledged, or the age of the oldest such record, is at its
// bound.
func (v *Volume) waitAsyncRoom() {
	if v.peer.NodeID == "" || v.peer.Mode != transport.ModeAsync {
		return
	}
	v.repl.mu.Lock()
	defer v.repl.mu.Unlock()
	for v.repl.mu.link != nil && v.repl.mu.live && len(v.repl.mu.unacked) > 0 &&
		(v.repl.mu.lagBytes >= v.peer.AsyncMaxLag || time.Since(v.repl.mu.unacked[0].at) >= v.peer.AsyncMaxAge) {
		v.repl.cond.Wait()
	}
}

// enforceRetention stops keeping the journal for a disconnected peer once
// it holds more than RetainBytes above what the peer has.
func (v *Volume) enforceRetention() {
	if v.peer.NodeID == "" || !v.isPrimary() || v.rs.tracking.Load() {
		return
	}
	v.repl.mu.Lock()
	dur, connected := v.repl.mu.peerDur, v.repl.mu.link != nil
	v.repl.mu.Unlock()
	if connected {
		return
	}
	if n := v.j.BytesAbove(dur); n > v.peer.RetainBytes {
		v.markPeerNeedsResync(dur, fmt.Errorf("journal above the peer's seq %d is %d bytes, over the retention bound %d", dur, n, v.peer.RetainBytes))
	}
}

// dialLoop keeps a primary connected to its peer, with backoff.
func (v *Volume) dialLoop() {
	defer close(v.dialDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-v.stop
		cancel()
	}()
	bo := transport.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	var delay time.Duration
	for {
		t := time.NewTimer(max(delay, time.Millisecond))
		if delay == 0 {
			t.Stop()
		}
		select {
		case <-v.stop:
			t.Stop()
			return
		case <-v.repl.wake:
		case <-t.C:
		}
		t.Stop()
		v.repl.mu.Lock()
		want := v.repl.mu.enabled && v.repl.mu.link == nil && v.isPrimary()
		v.repl.mu.Unlock()
		if !want {
			delay = 0
			if v.isPrimary() {
				delay = 2 * time.Second // re-check (e.g. refused states)
			}
			continue
		}
		link, err := v.peer.Dial(ctx)
		if err != nil {
			if !v.noteRefusal(err) {
				v.repl.mu.Lock()
				if v.repl.mu.link == nil {
					v.repl.mu.state = ConnConnecting
					v.repl.mu.err = err.Error()
				}
				v.repl.mu.Unlock()
			}
			delay = bo.Next()
			continue
		}
		bo.Reset()
		delay = 0
		if err := v.Attach(link); err != nil {
			delay = bo.Next()
		}
	}
}

// --------------------------------------------------------------- secondary

func (v *Volume) attachSecondary(link transport.Link) {
	remote := link.Remote()
	local := v.j.DurableSeq()
	// What the primary will do: stream (in sync), replay its journal
	// (catch-up), or resync blocks (it says so with resync-start first).
	disk, state := DiskUpToDate, ConnConnected
	hello := v.Hello()
	act, _, _ := decideSync(lineageOf(remote), lineageOf(hello))
	switch {
	case hello.Flags&transport.HelloInconsistent != 0:
		disk, state = DiskInconsistent, ConnSyncTarget
	case act == syncInSync:
	case act == syncCatchUp:
		disk, state = DiskOutdated, ConnCatchingUp
	default:
		disk, state = DiskOutdated, ConnSyncTarget
	}
	v.repl.mu.Lock()
	epoch := v.newLinkLocked(link, state)
	v.repl.mu.catchUpTarget = remote.DurableSeq
	v.repl.mu.peerDisk = DiskUpToDate
	v.repl.mu.Unlock()
	// From now on this copy follows the primary's lineage: adopt its
	// generation and history (validated above), so that after a link drop
	// both sides still agree on who is behind whom. Behind the primary it
	// is crash-consistent but not up to date until the catch-up reaches
	// what the primary held at connect.
	err := v.updateState(func(s *State) {
		s.Generation = remote.Generation
		s.History = s.History[:0]
		for _, e := range remote.History {
			s.History = append(s.History, GenEntry{Gen: e.Gen, EndSeq: e.EndSeq})
		}
		s.Disk = disk // UpToDate only when it holds everything the primary has
	})
	if err != nil {
		v.log.Error("saving state", "err", err)
		v.dropLink(epoch, err)
		return
	}
	v.log.Info("primary connected", "peer", remote.NodeID, "peer_seq", remote.DurableSeq, "local_seq", local)
	go v.receive(link, epoch)
}

// receive journals and applies the primary's records in order and
// acknowledges them: received at once, durable after the group commit.
func (v *Volume) receive(link transport.Link, epoch uint64) {
	var (
		ackMu    sync.Mutex
		received uint64
		kick     = make(chan struct{}, 1)
		mode     = link.Remote().Mode
		// ackRun is held by whoever acknowledges: the acker goroutine, or
		// the receive loop itself when nothing else is waiting to be read
		// (a lone write: one goroutine hand-off less on its round trip).
		ackRun  sync.Mutex
		sentDur uint64
	)
	pending, _ := link.(interface{ Pending() int })
	ack := func(recv uint64) bool {
		if mode == transport.ModeMemory {
			if err := link.Send(transport.Ack{ReceivedSeq: recv, DurableSeq: min(sentDur, recv)}); err != nil {
				return false
			}
		}
		if err := v.j.WaitDurable(recv); err != nil {
			v.fail(err)
			v.dropLink(epoch, err)
			return false
		}
		if recv <= sentDur {
			return true
		}
		if err := link.Send(transport.Ack{ReceivedSeq: recv, DurableSeq: recv}); err != nil {
			return false
		}
		sentDur = recv
		v.noteSecondaryDurable(epoch, recv)
		return true
	}
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		for {
			select {
			case <-kick:
			case <-link.Done():
				return
			}
			ackMu.Lock()
			recv := received
			ackMu.Unlock()
			ackRun.Lock()
			ok := ack(recv)
			ackRun.Unlock()
			if !ok {
				return
			}
		}
	}()
	defer func() { <-ackDone }()
	for {
		f, err := link.Recv()
		if err != nil {
			v.dropLink(epoch, err)
			return
		}
		var rec transport.Record
		switch m := f.(type) {
		case transport.Record:
			rec = m
		default:
			if err := v.handleTargetFrame(link, epoch, f); err != nil {
				v.dropLink(epoch, err)
				return
			}
			continue
		}
		if err := v.applyRemote(rec); err != nil {
			v.dropLink(epoch, err)
			return
		}
		ackMu.Lock()
		received = rec.Seq
		ackMu.Unlock()
		if pending != nil && pending.Pending() == 0 && ackRun.TryLock() {
			ok := ack(rec.Seq)
			ackRun.Unlock()
			if !ok {
				// The link failed under the ack (or the journal did, and
				// ack dropped it already): the link must not stay
				// registered, or every reconnect is refused as busy.
				v.dropLink(epoch, link.Err())
				return
			}
			continue
		}
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// applyRemote journals one record from the primary under the same seq and
// applies it with the same ordering rule as local writes.
func (v *Volume) applyRemote(rec transport.Record) error {
	if off, n := rec.Offset, uint64(rec.Length); off > v.size || n > v.size-off {
		return fmt.Errorf("engine: record %d beyond the volume: [%d, +%d)", rec.Seq, off, n)
	}
	if p := v.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	op := opOf(rec)
	if op.Kind == journal.KindWrite {
		op.Data = append([]byte(nil), op.Data...) // the frame buffer is not ours past Recv
	}
	v.admitMu.Lock()
	if v.isPrimary() {
		v.admitMu.Unlock()
		return ErrNotSecondary
	}
	if want := v.j.Stats().LastSeq + 1; rec.Seq != want {
		v.admitMu.Unlock()
		return fmt.Errorf("engine: record seq %d from the primary, expected %d", rec.Seq, want)
	}
	// The acknowledging goroutine waits for it and so runs the commit.
	seq, err := v.j.Queue(op)
	if err != nil {
		v.admitMu.Unlock()
		return v.fail(err)
	}
	if seq != rec.Seq {
		v.admitMu.Unlock()
		return v.fail(fmt.Errorf("journal assigned seq %d to the primary's record %d", seq, rec.Seq))
	}
	p, deps := v.ord.admit(seq, op.Offset, uint64(op.Length))
	v.admitMu.Unlock()
	v.inflightN.Add(1)
	v.noteJournalBytes(op)
	go func() {
		defer v.inflightN.Add(-1)
		wait(deps)
		if err := v.applyOp(op); err != nil {
			v.fail(fmt.Errorf("backend write at seq %d: %w", seq, err))
		}
		v.ord.markApplied(p)
	}()
	return nil
}

// noteSecondaryDurable marks the copy UpToDate once it holds everything
// the primary had when the link came up (every later acknowledged write
// waited for this node by construction).
func (v *Volume) noteSecondaryDurable(epoch, seq uint64) {
	v.repl.mu.Lock()
	if v.repl.mu.epoch != epoch || v.repl.mu.state != ConnCatchingUp || seq < v.repl.mu.catchUpTarget {
		v.repl.mu.Unlock()
		return
	}
	v.repl.mu.state = ConnConnected
	v.repl.mu.Unlock()
	if err := v.updateState(func(s *State) { s.Disk = DiskUpToDate }); err != nil {
		v.log.Error("saving state", "err", err)
	}
	v.log.Info("caught up with the primary", "seq", seq)
}

// --------------------------------------------------------------- roles

// Promote makes a secondary primary. It refuses while the peer is primary,
// and when this copy is not up to date unless force is set. A new data
// generation is recorded, so a later reconnect can tell which side is
// newer.
func (v *Volume) Promote(force bool) error {
	v.roleMu.Lock()
	defer v.roleMu.Unlock()
	if v.isPrimary() {
		return nil
	}
	v.repl.mu.Lock()
	link := v.repl.mu.link
	v.repl.mu.Unlock()
	if link != nil && link.Remote().Role == transport.RolePrimary {
		// A peer that is demoting closes the link right after; give it a
		// moment rather than failing a promote typed just after a demote.
		select {
		case <-link.Done():
		case <-time.After(time.Second):
			return fmt.Errorf("%w: demote %s first", ErrPeerPrimary, v.peer.NodeID)
		}
	}
	st := v.stateCopy()
	if st.Disk != DiskUpToDate && !force {
		return fmt.Errorf("%w (disk %s): use --force to promote anyway", ErrNotUpToDate, st.Disk)
	}
	if link != nil {
		v.repl.mu.Lock()
		epoch := v.repl.mu.epoch
		v.repl.mu.Unlock()
		v.dropLink(epoch, nil)
	}
	if err := v.waitIdle(context.Background()); err != nil {
		return err
	}
	last := v.j.Stats().LastSeq
	err := v.updateState(func(s *State) {
		s.History = append([]GenEntry{{Gen: s.Generation, EndSeq: last}}, s.History...)
		if len(s.History) > maxHistory {
			s.History = s.History[:maxHistory]
		}
		s.Generation = newGeneration()
		s.Role = RolePrimary
		s.Disk = DiskUpToDate
		s.PeerNeedsResync = false
		s.SyncID = 0
	})
	if err != nil {
		return err
	}
	v.rs.tracking.Store(false)
	v.j.SetRetain(replRetain, v.j.Stats().FirstSeq-1)
	v.role.Store(int32(0))
	v.repl.mu.Lock()
	v.repl.mu.state = ConnConnecting
	v.repl.mu.err = ""
	v.repl.mu.peerDisk = DiskUnknown
	v.repl.mu.Unlock()
	v.repl.kick()
	v.log.Info("promoted to primary", "generation", fmt.Sprintf("%016x", v.stateCopy().Generation), "seq", last, "forced", force)
	if v.opts.OnRoleChange != nil {
		v.opts.OnRoleChange(RolePrimary)
	}
	return nil
}

// Demote makes a primary secondary: new writes are refused at once, writes
// in flight finish (and reach the peer), the peer is given time to hold
// everything, then the role is recorded.
func (v *Volume) Demote(ctx context.Context) error {
	v.roleMu.Lock()
	defer v.roleMu.Unlock()
	if !v.isPrimary() {
		return nil
	}
	if v.peer.NodeID == "" {
		return fmt.Errorf("%w: a volume without a peer stays primary", ErrNoPeer)
	}
	v.admitMu.Lock()
	v.role.Store(1)
	v.admitMu.Unlock()
	if v.opts.OnRoleChange != nil {
		v.opts.OnRoleChange(RoleSecondary) // stop exporting: clients drain
	}
	if err := v.waitIdle(ctx); err != nil {
		v.role.Store(0)
		if v.opts.OnRoleChange != nil {
			v.opts.OnRoleChange(RolePrimary)
		}
		return err
	}
	// Let a connected peer receive everything (async mode, catch-up).
	last := v.j.Stats().LastSeq
	v.repl.mu.Lock()
	for v.repl.mu.link != nil && v.repl.mu.peerDur < last && ctx.Err() == nil {
		stop := context.AfterFunc(ctx, func() {
			v.repl.mu.Lock()
			v.repl.cond.Broadcast()
			v.repl.mu.Unlock()
		})
		v.repl.cond.Wait()
		stop()
	}
	peerDur := v.repl.mu.peerDur
	v.repl.mu.Unlock()
	if err := v.updateState(func(s *State) { s.Role = RoleSecondary; s.PeerNeedsResync = false }); err != nil {
		return err
	}
	v.rs.tracking.Store(false)
	v.j.ClearRetain(replRetain)
	v.repl.mu.Lock()
	epoch := v.repl.mu.epoch
	v.repl.mu.Unlock()
	v.dropLink(epoch, nil)
	v.log.Info("demoted to secondary", "seq", last, "peer_seq", peerDur)
	return nil
}

// Connect enables the peer link (after Disconnect).
func (v *Volume) Connect() error {
	if v.peer.NodeID == "" {
		return ErrNoPeer
	}
	v.repl.mu.Lock()
	v.repl.mu.enabled = true
	if v.repl.mu.link == nil {
		v.repl.mu.state = ConnConnecting
		v.repl.mu.err = ""
	}
	v.repl.mu.Unlock()
	v.repl.kick()
	return nil
}

// Disconnect drops the peer link and keeps it down until Connect.
func (v *Volume) Disconnect() error {
	if v.peer.NodeID == "" {
		return ErrNoPeer
	}
	v.repl.mu.Lock()
	v.repl.mu.enabled = false
	epoch := v.repl.mu.epoch
	if v.repl.mu.link == nil {
		v.repl.mu.state = ConnStandalone
	}
	v.repl.mu.Unlock()
	v.dropLink(epoch, nil)
	v.repl.mu.Lock()
	v.repl.mu.state = ConnStandalone
	v.repl.mu.Unlock()
	return nil
}

// waitIdle waits until no write is in progress.
func (v *Volume) waitIdle(ctx context.Context) error {
	for v.inflightN.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("engine: waiting for %d writes in flight: %w", v.inflightN.Load(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Status returns a snapshot for `twinblock status`.
func (v *Volume) Status() Status {
	st := v.stateCopy()
	s := Status{
		Name: v.name, UUID: st.UUID, Size: v.size, Node: v.opts.NodeID,
		Role: st.Role, Disk: st.Disk, InFlight: int(v.inflightN.Load()),
	}
	if s.Role == "" {
		s.Role = RolePrimary
	}
	if s.Disk == "" {
		s.Disk = DiskUpToDate
	}
	if st.Generation != 0 {
		s.Generation = fmt.Sprintf("%016x", st.Generation)
	}
	if v.j != nil {
		js := v.j.Stats()
		s.LastSeq, s.DurableSeq, s.CheckpointSeq = js.LastSeq, js.DurableSeq, js.CheckpointSeq
		s.AppliedSeq = v.ord.appliedThrough()
		s.JournalAppends, s.JournalCommits = js.Appends, js.Syncs
		s.CommitMicros = float64(v.j.CommitTime()) / float64(time.Microsecond)
	}
	if p := v.failed.Load(); p != nil {
		s.Failed = (*p).Error()
	}
	if v.peer.NodeID == "" {
		s.Conn = ConnStandalone
		return s
	}
	s.Peer, s.PeerAddr, s.Mode = v.peer.NodeID, v.peer.Address, v.peer.Mode.String()
	v.repl.mu.Lock()
	s.Conn, s.ConnError, s.PeerDisk = v.repl.mu.state, v.repl.mu.err, v.repl.mu.peerDisk
	s.PeerAckedSeq = v.repl.mu.peerDur
	s.PeerAckMicros = float64(v.repl.ackAvg.Load()) / float64(time.Microsecond)
	link := v.repl.mu.link
	v.repl.mu.Unlock()
	if link != nil {
		s.RTTMicros = link.RTT().Microseconds()
		if ls, ok := link.(interface{ Stats() transport.Stats }); ok {
			st := ls.Stats()
			s.LinkBytesSent, s.LinkBytesReceived = st.BytesSent, st.BytesReceived
		}
	}
	if v.rs.tracking.Load() && s.Role == RolePrimary {
		s.ResyncPendingBytes = v.rs.dirty.dirtyBytes()
		if link == nil {
			s.Conn = ConnNeedsResync
			s.PeerDisk = DiskInconsistent
		}
	}
	if s.Role == RolePrimary {
		if p, ok := v.Progress("resync"); ok {
			s.Resync = &p
		}
		if p, ok := v.Progress("verify"); ok {
			s.Verify = &p
		}
	} else {
		v.rs.mu.Lock()
		if t := v.rs.mu.target; t != nil {
			p := *t
			s.Resync = &p
		}
		v.rs.mu.Unlock()
	}
	if s.Role == RolePrimary && v.j != nil && s.LastSeq > s.PeerAckedSeq {
		s.LagRecords = s.LastSeq - s.PeerAckedSeq
		s.LagBytes = v.j.BytesAbove(s.PeerAckedSeq)
	}
	return s
}
