package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twinblock/twinblock/engine/backend"
	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/transport"
)

// Errors returned by a Volume, tested with errors.Is.
var (
	ErrReadOnly   = errors.New("engine: volume is read-only")
	ErrOutOfRange = errors.New("engine: range outside the volume")
	ErrClosed     = errors.New("engine: volume closed")
	ErrFailed     = errors.New("engine: volume failed")
)

// Defaults for VolumeOptions.
const (
	DefaultCheckpointBytes    = 64 << 20
	DefaultCheckpointInterval = 5 * time.Second
	DefaultJournalMaxBytes    = 1 << 30
	DefaultWritebackBytes     = 16 << 20
)

// VolumeOptions configures a Volume.
type VolumeOptions struct {
	Name    string
	Backend backend.Backend
	// Journal, when set, makes every write durable in it before the write
	// is acknowledged, and is replayed into the backend by OpenVolume. A
	// volume without a journal writes the backend directly (mem volumes:
	// nothing survives the process anyway).
	Journal  *journal.Journal
	ReadOnly bool
	// CheckpointBytes: checkpoint (flush backend, record applied seq, trim
	// journal) once this many journal bytes were written since the last.
	CheckpointBytes int64
	// CheckpointInterval: checkpoint at least this often while writes come.
	CheckpointInterval time.Duration
	// JournalMaxBytes bounds the journal above the checkpoint: writes wait
	// for a checkpoint when it is reached (back-pressure, never unbounded
	// disk use).
	JournalMaxBytes int64
	// WritebackBytes: with a journal and a backend that can
	// (backend.Writebacker), start writing the backend's dirty cache back
	// each time this many journal bytes were written, so that a checkpoint
	// flushes a little instead of a burst (default 16 MiB; < 0: never).
	WritebackBytes int64
	Logger         *slog.Logger

	// State persists role and generations (nil: a standalone volume, always
	// primary, remembered nowhere).
	State StateStore
	// NodeID is this node's id (replication).
	NodeID string
	// Peer configures replication; nil or empty NodeID: no peer.
	Peer *PeerOptions
	// Resync configures block resync and verify (replicated volumes).
	Resync ResyncOptions
	// OnRoleChange is called after the role changed (the daemon starts or
	// stops exporting the volume). It must not call back into the volume's
	// role methods.
	OnRoleChange func(Role)
	// AsyncApply acknowledges a write once it is durable in the journal
	// (and at the peer, per mode) without waiting for the backend write,
	// which follows in order in the background; reads wait for unapplied
	// writes they overlap, so they still see every acknowledged write.
	// For backends whose writes cost a network round trip (RBD): the
	// journal's fdatasync is then the whole latency. Needs a journal.
	AsyncApply bool
	// ApplyMaxBytes bounds the bytes acknowledged and not yet applied
	// (AsyncApply); writes wait beyond it. Default 64 MiB.
	ApplyMaxBytes int64
}

// Volume is one exported volume: the object the NBD server calls. It is safe
// for concurrent use.
type Volume struct {
	name     string
	be       backend.Backend
	j        *journal.Journal
	size     uint64
	readOnly bool
	log      *slog.Logger
	opts     VolumeOptions

	// admitMu makes journal order and orderer admission order the same.
	admitMu sync.Mutex
	ord     *orderer

	// failed holds the first durability error. After it the volume refuses
	// every write and flush: we cannot know what reached the disk, so
	// pretending otherwise would lose data silently ("fsyncgate").
	failed atomic.Pointer[error]
	closed atomic.Bool

	// inflightN counts mutating requests in progress.
	inflightN atomic.Int64
	// unapplied counts bytes of acknowledged writes not yet in the backend
	// (AsyncApply); applyCond (on applyMu) is signalled as they drain.
	unapplied atomic.Int64
	applyMu   sync.Mutex
	applyCond *sync.Cond

	peer PeerOptions
	repl replState
	rs   resyncState
	// role: 0 primary, 1 secondary. Changed under admitMu (so admission
	// sees a consistent role) and roleMu (one role change at a time).
	role     atomic.Int32
	roleMu   sync.Mutex
	stMu     sync.Mutex
	st       State
	dialDone chan struct{}
	// sinceCkpt counts journal payload bytes since the last checkpoint.
	sinceCkpt atomic.Int64
	ckptKick  chan struct{}
	// sinceWB counts journal bytes since the last writeback kick (wbKick);
	// wb is the backend's Writebacker, nil when not used.
	sinceWB atomic.Int64
	wbKick  chan struct{}
	wb      backend.Writebacker
	wbOff   atomic.Bool // writeback failed in a way that turned it off
	// recv is the backend's Receiver on a volume without a journal (see
	// ReceiveWrite), else nil.
	recv       backend.Receiver
	ckptMu     sync.Mutex // serialises checkpoints
	ckptCond   *sync.Cond // broadcast after each checkpoint (back-pressure waiters)
	ckptCondMu sync.Mutex
	stop       chan struct{}
	done       chan struct{}
}

// OpenVolume opens a volume. With a journal it first replays every record
// above the journal's checkpoint into the backend, flushes the backend and
// records the new checkpoint, so the volume starts with every acknowledged
// write in place.
func OpenVolume(opts VolumeOptions) (*Volume, error) {
	if opts.Backend == nil {
		return nil, fmt.Errorf("engine: volume %q: no backend", opts.Name)
	}
	size := opts.Backend.Size()
	if size <= 0 {
		return nil, fmt.Errorf("engine: volume %q: backend size %d", opts.Name, size)
	}
	if opts.CheckpointBytes <= 0 {
		opts.CheckpointBytes = DefaultCheckpointBytes
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.JournalMaxBytes <= 0 {
		opts.JournalMaxBytes = DefaultJournalMaxBytes
	}
	if opts.JournalMaxBytes < 2*opts.CheckpointBytes {
		opts.CheckpointBytes = opts.JournalMaxBytes / 2
	}
	if opts.WritebackBytes == 0 {
		opts.WritebackBytes = DefaultWritebackBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	v := &Volume{
		name: opts.Name, be: opts.Backend, j: opts.Journal, size: uint64(size),
		readOnly: opts.ReadOnly, log: opts.Logger.With("volume", opts.Name), opts: opts,
		ckptKick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		wbKick: make(chan struct{}, 1),
	}
	if wb, ok := opts.Backend.(backend.Writebacker); ok && opts.WritebackBytes > 0 {
		v.wb = wb
	}
	if rc, ok := opts.Backend.(backend.Receiver); ok && opts.Journal == nil {
		v.recv = rc
	}
	v.ckptCond = sync.NewCond(&v.ckptCondMu)
	v.applyCond = sync.NewCond(&v.applyMu)
	if opts.ApplyMaxBytes <= 0 {
		v.opts.ApplyMaxBytes = 64 << 20
	}
	if opts.AsyncApply && opts.Journal == nil {
		return nil, fmt.Errorf("engine: volume %q: asynchronous apply needs a journal", opts.Name)
	}
	v.repl.init()
	v.dialDone = make(chan struct{})
	if opts.Peer != nil && opts.Peer.NodeID != "" {
		v.peer = *opts.Peer
		if v.j == nil {
			return nil, fmt.Errorf("engine: volume %q: replication needs a journal", opts.Name)
		}
		if v.peer.Mode == 0 {
			v.peer.Mode = transport.ModeSync
		}
		if v.peer.RetainBytes <= 0 {
			v.peer.RetainBytes = 1 << 30
		}
		if v.peer.AsyncMaxLag <= 0 {
			v.peer.AsyncMaxLag = 64 << 20
		}
		if v.peer.AsyncMaxAge <= 0 {
			v.peer.AsyncMaxAge = 5 * time.Second
		}
	} else {
		v.repl.mu.state = ConnStandalone
	}
	if err := v.loadState(); err != nil {
		return nil, err
	}
	if v.st.Role == RoleSecondary {
		v.role.Store(1)
	}
	v.rs.init(opts.Resync)
	if v.peer.NodeID != "" {
		if err := v.openDirtyMap(); err != nil {
			return nil, fmt.Errorf("engine: volume %s: %w", v.name, err)
		}
	}
	applied := uint64(0)
	if v.j != nil {
		var err error
		if applied, err = v.recover(); err != nil {
			return nil, err
		}
	}
	v.ord = newOrderer(applied)
	if v.j != nil {
		go v.checkpointLoop()
	} else {
		close(v.done)
	}
	if v.peer.NodeID != "" && v.isPrimary() && !v.st.PeerNeedsResync {
		// Keep everything for the peer until it says what it holds: the
		// journal never trims above what the peer acknowledged, so it held
		// at least the record before the first one retained.
		first := v.j.Stats().FirstSeq
		v.j.SetRetain(replRetain, first-1)
		v.repl.mu.peerDur, v.repl.mu.peerRecv = first-1, first-1
	}
	if v.peer.NodeID != "" && v.peer.Dial != nil {
		go v.dialLoop()
		v.repl.kick()
	} else {
		close(v.dialDone)
	}
	return v, nil
}

// loadState reads (or, for a standalone volume, makes) the volume state.
func (v *Volume) loadState() error {
	if v.opts.State == nil {
		v.st = State{UUID: NewUUID(), Size: v.size, Role: RolePrimary, Disk: DiskUpToDate}
		return nil
	}
	st, err := v.opts.State.Load()
	if errors.Is(err, ErrNoState) {
		if v.peer.NodeID != "" {
			return fmt.Errorf("engine: volume %s: no state (uuid, role): create replicated volumes with `twinblock create --uuid ... --role ...`", v.name)
		}
		st = State{UUID: NewUUID(), Size: v.size, Role: RolePrimary, Disk: DiskUpToDate, Generation: newGeneration()}
		if err := v.opts.State.Save(st); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if st.Size != 0 && st.Size != v.size {
		return fmt.Errorf("engine: volume %s: backend is %d bytes, the volume was created with %d", v.name, v.size, st.Size)
	}
	if st.Role != RolePrimary && st.Role != RoleSecondary {
		return fmt.Errorf("engine: volume %s: state has role %q", v.name, st.Role)
	}
	if st.Disk == "" {
		st.Disk = DiskUpToDate
	}
	v.st = st
	return nil
}

func (v *Volume) isPrimary() bool { return v.role.Load() == 0 }

// Role is the volume's current role.
func (v *Volume) Role() Role {
	if v.isPrimary() {
		return RolePrimary
	}
	return RoleSecondary
}

func (v *Volume) stateCopy() State {
	v.stMu.Lock()
	defer v.stMu.Unlock()
	s := v.st
	s.History = append([]GenEntry(nil), s.History...)
	return s
}

// updateState changes the state and persists it before returning.
func (v *Volume) updateState(fn func(*State)) error {
	v.stMu.Lock()
	defer v.stMu.Unlock()
	s := v.st
	s.History = append([]GenEntry(nil), s.History...)
	fn(&s)
	if v.opts.State != nil {
		if err := v.opts.State.Save(s); err != nil {
			return err
		}
	}
	v.st = s
	return nil
}

// recover replays the journal above its checkpoint into the backend.
func (v *Volume) recover() (uint64, error) {
	st := v.j.Stats()
	from := st.CheckpointSeq + 1
	n, bytes := 0, int64(0)
	err := v.j.Replay(from, func(seq uint64, op journal.Op) error {
		n++
		bytes += int64(op.Length)
		if v.rs.tracking.Load() {
			// Whether it reached the peer is unknown: compare it.
			v.rs.dirty.mark(op.Offset, uint64(op.Length))
		}
		if err := v.applyOp(op); err != nil {
			return fmt.Errorf("engine: volume %s: replay seq %d: %w", v.name, seq, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	last := v.j.Stats().LastSeq
	if n > 0 {
		if err := v.be.Flush(); err != nil {
			return 0, fmt.Errorf("engine: volume %s: flush after replay: %w", v.name, err)
		}
		if err := v.j.Checkpoint(last); err != nil {
			return 0, fmt.Errorf("engine: volume %s: checkpoint after replay: %w", v.name, err)
		}
		if err := v.j.Trim(); err != nil {
			return 0, fmt.Errorf("engine: volume %s: trim after replay: %w", v.name, err)
		}
		v.log.Info("journal replayed", "records", n, "bytes", bytes, "from_seq", from, "through_seq", last)
	}
	return last, nil
}

// Name is the volume name.
func (v *Volume) Name() string { return v.name }

// Size is the volume size in bytes.
func (v *Volume) Size() uint64 { return v.size }

// ReadOnly reports whether writes are refused.
func (v *Volume) ReadOnly() bool { return v.readOnly }

// Journal returns the volume's journal (nil without one).
func (v *Volume) Journal() *journal.Journal { return v.j }

// Err returns the error that failed the volume, or nil.
func (v *Volume) Err() error {
	if p := v.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first fatal error and says so loudly.
func (v *Volume) fail(err error) error {
	if v.failed.CompareAndSwap(nil, &err) {
		v.log.Error("VOLUME FAILED: refusing all writes until restarted; the journal holds every acknowledged write", "err", err)
	}
	return fmt.Errorf("%w: %w", ErrFailed, err)
}

func (v *Volume) check(off uint64, n uint64, write bool) error {
	if v.closed.Load() {
		return ErrClosed
	}
	if off > v.size || n > v.size-off {
		return fmt.Errorf("%w: [%d, +%d) of %d", ErrOutOfRange, off, n, v.size)
	}
	if write {
		if v.readOnly {
			return ErrReadOnly
		}
		if p := v.failed.Load(); p != nil {
			return fmt.Errorf("%w: %w", ErrFailed, *p)
		}
	}
	return nil
}

// ReadAt reads len(p) bytes at off. Every acknowledged write is visible:
// a write is acknowledged only after it reached the backend.
func (v *Volume) ReadAt(p []byte, off uint64) error {
	if err := v.check(off, uint64(len(p)), false); err != nil {
		return err
	}
	if v.opts.AsyncApply && v.unapplied.Load() > 0 {
		// Acknowledged writes may still be on their way to the backend.
		wait(v.ord.overlapping(off, uint64(len(p))))
	}
	_, err := v.be.ReadAt(p, int64(off))
	return err
}

// WriteAt writes p at off. With a journal the write is durable on return
// whatever fua says; without one, fua flushes the backend.
func (v *Volume) WriteAt(p []byte, off uint64, fua bool) error {
	return v.mutate(journal.Op{Kind: journal.KindWrite, Offset: off, Length: uint32(len(p)), Data: p}, fua)
}

// ReceiveWrite is WriteAt (without FUA) for a payload still on its way
// from a client: on a volume without a journal whose backend keeps its
// data in memory (backend.Receiver), the bytes go from r straight into the
// backend, and the NBD server saves its payload buffer and a copy. Every
// other volume answers false, having read nothing: a journaled write needs
// the payload in a buffer for its record (and the peer).
func (v *Volume) ReceiveWrite(r io.Reader, off uint64, n uint32) (bool, error) {
	if v.recv == nil {
		return false, nil
	}
	if err := v.check(off, uint64(n), true); err != nil {
		return true, err
	}
	if n == 0 {
		return true, nil
	}
	v.inflightN.Add(1)
	defer v.inflightN.Add(-1)
	return true, v.recv.ReceiveAt(r, int64(off), int64(n))
}

// Trim discards a range; it reads as zeroes afterwards.
func (v *Volume) Trim(off uint64, length uint32, fua bool) error {
	return v.mutate(journal.Op{Kind: journal.KindTrim, Offset: off, Length: length}, fua)
}

// WriteZeroes zeroes a range; with noHole the range stays allocated.
func (v *Volume) WriteZeroes(off uint64, length uint32, noHole, fua bool) error {
	return v.mutate(journal.Op{Kind: journal.KindZero, Offset: off, Length: length, NoHole: noHole}, fua)
}

// applyOp performs op on the backend.
func (v *Volume) applyOp(op journal.Op) error {
	switch op.Kind {
	case journal.KindWrite:
		_, err := v.be.WriteAt(op.Data, int64(op.Offset))
		return err
	case journal.KindTrim:
		return backend.Discard(v.be, int64(op.Offset), int64(op.Length))
	case journal.KindZero:
		return backend.WriteZeroes(v.be, int64(op.Offset), int64(op.Length), op.NoHole)
	}
	return fmt.Errorf("engine: unknown op kind %v", op.Kind)
}

// mutate is the write path:
//  1. admission: the op is queued in the journal (which assigns its seq) and
//     registered with the orderer under one lock, so journal order and
//     apply order agree;
//  2. the backend write waits only for earlier overlapping ops, and runs in
//     parallel with the journal's group commit;
//  3. the op is acknowledged once it is in the backend and durable in the
//     journal.
func (v *Volume) mutate(op journal.Op, fua bool) error {
	if err := v.check(op.Offset, uint64(op.Length), true); err != nil {
		return err
	}
	if op.Length == 0 {
		return nil
	}
	v.inflightN.Add(1)
	defer v.inflightN.Add(-1)
	if v.j == nil {
		if err := v.applyOp(op); err != nil {
			return err
		}
		if fua {
			return v.Flush()
		}
		return nil
	}
	v.waitJournalRoom()
	v.waitAsyncRoom()
	if v.opts.AsyncApply {
		return v.mutateAsync(op)
	}

	seq, p, deps, err := v.admit(op, v.queue)
	if err != nil {
		return err
	}
	var sent time.Time // for commit deferral: sync-mode writes only
	if v.peer.Mode == transport.ModeSync {
		sent = time.Now()
	}

	wait(deps)
	aerr := v.applyOp(op)
	if aerr != nil {
		// The record is durable (or about to be) but the backend refused it:
		// fail the volume so no checkpoint passes this seq; a restart
		// replays it from the journal.
		aerr = v.fail(fmt.Errorf("backend write at seq %d: %w", seq, aerr))
	}
	v.ord.markApplied(p)
	pw := v.peerWait(seq)
	if pw != nil && aerr == nil && !sent.IsZero() {
		v.deferCommit(pw, sent)
	}
	if err := v.j.WaitDurable(seq); err != nil {
		return v.fail(err)
	}
	if aerr != nil {
		return aerr
	}
	if pw != nil {
		<-pw.done
	}
	return nil
}

// admit is the admission step of the write path: under admitMu, wait for
// any resync/verify range lock the op overlaps (it holds writes off until
// its data is on the link, see resync.go), give the op its journal seq,
// register it with the orderer, send it to the peer when the link is live
// and mark the dirty map when it is not. It returns what the backend write
// must wait for.
func (v *Volume) admit(op journal.Op, appendRec func(journal.Op) (uint64, error)) (uint64, *pendingOp, []*pendingOp, error) {
	v.admitMu.Lock()
	for l := v.rs.overlapLocked(op.Offset, uint64(op.Length)); l != nil; l = v.rs.overlapLocked(op.Offset, uint64(op.Length)) {
		v.admitMu.Unlock()
		<-l.released
		v.admitMu.Lock()
	}
	if !v.isPrimary() {
		v.admitMu.Unlock()
		return 0, nil, nil, ErrNotPrimary
	}
	seq, err := appendRec(op)
	if err != nil {
		v.admitMu.Unlock()
		return 0, nil, nil, v.fail(err)
	}
	p, deps := v.ord.admit(seq, op.Offset, uint64(op.Length))
	v.recordMarksLocked(op, v.sendLiveLocked(seq, op))
	v.admitMu.Unlock()
	v.noteJournalBytes(op)
	return seq, p, deps, nil
}

// mutateAsync is mutate for AsyncApply: the same admission, then the
// backend write goes to the background and the reply waits only for the
// journal (and the peer).
func (v *Volume) mutateAsync(op journal.Op) error {
	n := int64(op.Length)
	v.waitApplyRoom(n)
	if op.Kind == journal.KindWrite {
		op.Data = append([]byte(nil), op.Data...) // the caller reuses its buffer once answered
	}
	// Submit: the commit starts now, nothing else runs before the wait.
	seq, p, deps, err := v.admit(op, v.j.Submit)
	if err != nil {
		v.applyDone(n)
		return err
	}

	v.inflightN.Add(1)
	go func() {
		defer v.inflightN.Add(-1)
		wait(deps)
		if err := v.applyOp(op); err != nil {
			// Acknowledged and durable in the journal, but not in the
			// backend: fail the volume so no checkpoint passes it; a
			// restart replays it.
			v.fail(fmt.Errorf("backend write at seq %d: %w", seq, err))
		}
		v.ord.markApplied(p)
		v.applyDone(n)
	}()
	if err := v.j.WaitDurable(seq); err != nil {
		return v.fail(err)
	}
	v.waitPeer(seq)
	return nil
}

// waitApplyRoom blocks while ApplyMaxBytes of acknowledged writes wait for
// the backend, then counts n more.
func (v *Volume) waitApplyRoom(n int64) {
	v.applyMu.Lock()
	defer v.applyMu.Unlock()
	for cur := v.unapplied.Load(); cur > 0 && cur+n > v.opts.ApplyMaxBytes && v.failed.Load() == nil; cur = v.unapplied.Load() {
		v.applyCond.Wait()
	}
	v.unapplied.Add(n)
}

func (v *Volume) applyDone(n int64) {
	v.unapplied.Add(-n)
	v.applyMu.Lock()
	v.applyCond.Broadcast()
	v.applyMu.Unlock()
}

// leadBytes: a write at most this large leaves its group commit to itself
// (WaitDurable runs it once the backend write is done: one hand-off less
// per write at low load); a larger one starts the commit at once so that
// its fdatasync overlaps the longer backend copy.
const leadBytes = 64 << 10

func (v *Volume) queue(op journal.Op) (uint64, error) {
	if op.Length <= leadBytes {
		return v.j.Queue(op)
	}
	return v.j.Submit(op)
}

// noteJournalBytes counts a record towards the next checkpoint and kicks
// the checkpointer at the threshold.
func (v *Volume) noteJournalBytes(op journal.Op) {
	n := int64(op.Length) + 512 // payload and about a record header
	if v.wb != nil && !v.wbOff.Load() && v.sinceWB.Add(n) >= v.opts.WritebackBytes {
		v.sinceWB.Store(0)
		kick(v.wbKick)
	}
	if v.sinceCkpt.Add(n) >= v.opts.CheckpointBytes {
		kick(v.ckptKick)
	}
}

// kick wakes the goroutine that waits on ch (buffered, capacity 1) unless
// a wake-up is already pending.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// waitJournalRoom blocks while the journal above the checkpoint is at its
// bound, kicking the checkpointer.
func (v *Volume) waitJournalRoom() {
	if v.sinceCkpt.Load() < v.opts.JournalMaxBytes {
		return
	}
	v.ckptCondMu.Lock()
	defer v.ckptCondMu.Unlock()
	for v.sinceCkpt.Load() >= v.opts.JournalMaxBytes && v.failed.Load() == nil && !v.closed.Load() {
		kick(v.ckptKick)
		v.ckptCond.Wait()
	}
}

// Flush makes every completed write durable. With a journal they already
// are (a write is acknowledged only once durable), so Flush only reports a
// failed volume; without one it flushes the backend. A flush error is
// sticky.
func (v *Volume) Flush() error {
	if v.closed.Load() {
		return ErrClosed
	}
	if p := v.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	if v.readOnly || v.j != nil {
		return nil
	}
	if err := v.be.Flush(); err != nil {
		return v.fail(err)
	}
	return nil
}

// checkpointLoop checkpoints when kicked (bytes threshold, back-pressure)
// or on the interval while there is something to checkpoint.
func (v *Volume) checkpointLoop() {
	defer close(v.done)
	t := time.NewTicker(v.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-v.ckptKick:
		case <-t.C:
		case <-v.wbKick:
			v.startWriteback()
			continue
		}
		if err := v.Checkpoint(); err != nil && !errors.Is(err, ErrFailed) {
			v.log.Warn("checkpoint", "err", err)
		}
	}
}

// startWriteback asks the backend to start writing its dirty cache back
// (see VolumeOptions.WritebackBytes). An I/O error fails the volume as a
// failed flush would: it may be the only report of a lost page. Any other
// error turns writeback off for this volume and says so once.
func (v *Volume) startWriteback() {
	if v.wb == nil || v.wbOff.Load() || v.failed.Load() != nil {
		return
	}
	err := v.wb.StartWriteback()
	switch {
	case err == nil:
	case errors.Is(err, syscall.EIO):
		v.fail(fmt.Errorf("backend writeback: %w", err))
	default:
		v.log.Warn("backend writeback unavailable, checkpoints flush everything at once", "err", err)
		v.wbOff.Store(true)
	}
}

// Checkpoint flushes the backend, records in the journal that every record
// through the applied watermark is in the backend, and trims the journal.
func (v *Volume) Checkpoint() error {
	if v.j == nil {
		return nil
	}
	v.ckptMu.Lock()
	defer v.ckptMu.Unlock()
	defer func() {
		v.ckptCondMu.Lock()
		v.ckptCond.Broadcast()
		v.ckptCondMu.Unlock()
	}()
	if p := v.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrFailed, *p)
	}
	applied := min(v.ord.appliedThrough(), v.j.DurableSeq())
	if applied <= v.j.Stats().CheckpointSeq {
		return nil
	}
	// Bytes written before we read the watermark are covered (or will be by
	// the next checkpoint); subtract what we saw, not what arrives after.
	seen := v.sinceCkpt.Load()
	if err := v.be.Flush(); err != nil {
		return v.fail(fmt.Errorf("backend flush for checkpoint: %w", err))
	}
	if v.rs.tracking.Load() {
		// Marks go to disk before the records they stand for can be
		// trimmed (they were made at admission, before `applied` was read).
		if err := v.rs.dirty.save(); err != nil {
			return v.fail(err)
		}
	}
	if err := v.j.Checkpoint(applied); err != nil {
		if errors.Is(err, journal.ErrFailed) {
			return v.fail(err)
		}
		return err
	}
	if err := v.j.Trim(); err != nil {
		if errors.Is(err, journal.ErrFailed) {
			return v.fail(err)
		}
		return err
	}
	v.sinceCkpt.Add(-seen)
	v.enforceRetention()
	return nil
}

// Close stops the volume: callers must have stopped sending requests (the
// NBD server drained). It waits for writes in progress, checkpoints, and
// closes journal and backend.
func (v *Volume) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	close(v.stop)
	v.repl.mu.Lock()
	epoch := v.repl.mu.epoch
	v.repl.mu.Unlock()
	v.dropLink(epoch, nil)
	<-v.dialDone
	v.rs.wg.Wait()
	_ = v.waitIdle(context.Background())
	var errs []error
	if v.rs.tracking.Load() {
		// What the passes cleared, so a restart resumes there.
		errs = append(errs, v.rs.dirty.save())
	}
	if v.j != nil {
		<-v.done
		if v.failed.Load() == nil {
			if err := v.Checkpoint(); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, v.j.Close())
	} else if !v.readOnly && v.failed.Load() == nil {
		errs = append(errs, v.be.Flush())
	}
	errs = append(errs, v.be.Close())
	return errors.Join(errs...)
}
