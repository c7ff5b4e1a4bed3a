package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/twinblock/twinblock/journal"
	"github.com/twinblock/twinblock/transport"
)

// Block resync and online verify.
//
// Both compare the two copies chunk by chunk with xxhash64 and, for resync
// (or verify --repair), send only what differs. Chunks that differ are
// compared again in 4 KiB blocks, so a 4 KiB write costs 4 KiB on the wire
// whatever the chunk size. The primary drives everything over the normal
// peer link while it keeps streaming live writes.
//
// The ordering rule that keeps a resync from ever undoing an acknowledged
// write: while a range is being compared, the primary holds a range lock
// that new overlapping writes wait for before admission. The hash request
// is sent under the admission lock, so on the FIFO link it comes after
// every earlier write to the range and before every later one; both sides
// hash the range at that same point of the write stream (the secondary
// queues the hashing in its orderer behind earlier overlapping records,
// the primary behind earlier overlapping writes), and the chunk data that
// follows is applied on the secondary in stream order too. So both hashes
// describe the same moment and no write in flight can cause a false
// mismatch (verify) or be overwritten by older data (resync).

// ResyncOptions configure block resync and verify of a replicated volume.
type ResyncOptions struct {
	// MapPath is where the dirty-region map is saved ("" keeps it in memory
	// only: tests).
	MapPath string
	// RegionSize is the dirty map's granularity (power of two, default
	// 1 MiB); ChunkSize the unit hashed and compared (power of two, default
	// 64 KiB, at most RegionSize).
	RegionSize, ChunkSize uint64
	// Rate limits the bytes compared per second (0: unlimited).
	Rate int64
	// batch overrides scanBatch (tests with small volumes).
	batch uint64
}

const (
	DefaultRegionSize = 1 << 20
	DefaultChunkSize  = 64 << 10
	// fineBlock is the unit a differing chunk is compared in again.
	fineBlock = 4096
	// scanBatch is the most bytes one hash request covers; scanWindow how
	// many requests are in flight at once.
	scanBatch  = 4 << 20
	scanWindow = 4
)

// Control message kinds of the resync protocol (docs/formats.md).
const (
	ctlResyncStart    = "resync-start"    // primary → target: body resyncStart
	ctlResyncFlush    = "resync-flush"    // primary → target: body {id}: make chunk data durable
	ctlResyncFlushed  = "resync-flushed"  // target → primary: body {id}
	ctlResyncProgress = "resync-progress" // primary → target: body Progress
	ctlResyncDone     = "resync-done"     // primary → target: the copy is now UpToDate
)

type resyncStart struct {
	SyncID  uint64 `json:"sync_id"`
	NextSeq uint64 `json:"next_seq"`
	Full    bool   `json:"full"`
	Bytes   uint64 `json:"bytes"`
}

type idBody struct {
	ID uint64 `json:"id"`
}

func control(kind string, body any) transport.Control {
	b, _ := json.Marshal(body) // plain structs: cannot fail
	return transport.Control{Kind: kind, Body: b}
}

// Range is a byte range of the volume.
type Range struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
}

// Progress describes a running or finished resync or verify.
type Progress struct {
	// ID numbers the passes a daemon ran (a new pass has a higher ID).
	ID         uint64  `json:"id"`
	Kind       string  `json:"kind"` // "resync" or "verify"
	Full       bool    `json:"full,omitempty"`
	Repair     bool    `json:"repair,omitempty"`
	Running    bool    `json:"running"`
	TotalBytes uint64  `json:"total_bytes"`
	DoneBytes  uint64  `json:"done_bytes"`
	SentBytes  uint64  `json:"sent_bytes"` // chunk data sent (before compression)
	RateBps    float64 `json:"rate_bps"`   // bytes compared per second
	ETASeconds float64 `json:"eta_seconds"`
	Elapsed    float64 `json:"elapsed_seconds"`
	// Verify: the ranges that differed (merged, 4 KiB granularity).
	Mismatches    []Range `json:"mismatches,omitempty"`
	MismatchBytes uint64  `json:"mismatch_bytes,omitempty"`
	RepairedBytes uint64  `json:"repaired_bytes,omitempty"`
	Error         string  `json:"error,omitempty"`
	StartedAt     string  `json:"started_at,omitempty"`
}

// scanJob is one resync or verify pass.
type scanJob struct {
	id      uint64
	kind    string
	full    bool
	repair  bool // verify: send the differing data
	epoch   uint64
	total   uint64
	started time.Time
	done    atomic.Uint64
	sent    atomic.Uint64

	mu         sync.Mutex
	mismatches []Range
	err        error
	finished   bool
	end        time.Time
	fin        chan struct{}
}

func (j *scanJob) progress() Progress {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := Progress{
		ID: j.id, Kind: j.kind, Full: j.full, Repair: j.repair, Running: !j.finished,
		TotalBytes: j.total, DoneBytes: min(j.done.Load(), j.total), SentBytes: j.sent.Load(),
		StartedAt: j.started.UTC().Format(time.RFC3339),
	}
	end := time.Now()
	if j.finished {
		end = j.end
	}
	el := end.Sub(j.started).Seconds()
	p.Elapsed = el
	if el > 0 {
		p.RateBps = float64(p.DoneBytes) / el
	}
	if p.RateBps > 0 && p.Running {
		p.ETASeconds = float64(p.TotalBytes-p.DoneBytes) / p.RateBps
	}
	p.Mismatches = slices.Clone(j.mismatches)
	for _, r := range j.mismatches {
		p.MismatchBytes += r.Length
	}
	if j.repair {
		p.RepairedBytes = p.SentBytes
	}
	if j.err != nil {
		p.Error = j.err.Error()
	}
	return p
}

func (j *scanJob) finish(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.finished {
		return
	}
	j.finished, j.err, j.end = true, err, time.Now()
	close(j.fin)
}

// addMismatch records [off, off+n), merging with the previous range.
func (j *scanJob) addMismatch(off, n uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, r := range j.mismatches {
		if r.Offset+r.Length == off {
			j.mismatches[i].Length += n
			return
		}
		if off+n == r.Offset {
			j.mismatches[i] = Range{off, r.Length + n}
			return
		}
	}
	j.mismatches = append(j.mismatches, Range{off, n})
	slices.SortFunc(j.mismatches, func(a, b Range) int {
		if a.Offset < b.Offset {
			return -1
		}
		if a.Offset > b.Offset {
			return 1
		}
		return 0
	})
}

// rangeLock holds off admission of writes overlapping [off, end).
type rangeLock struct {
	off, end uint64
	released chan struct{}
}

// resyncState is the resync/verify side of a volume.
type resyncState struct {
	opts  ResyncOptions
	dirty *dirtyMap
	// tracking: the dirty map is in use (the peer needs a block resync).
	// Written under admitMu.
	tracking atomic.Bool
	// locks are guarded by Volume.admitMu.
	locks []*rangeLock
	rate  atomic.Int64
	pace  pacer
	// wg counts resync and verify passes, so Close can wait for them.
	wg sync.WaitGroup

	mu struct {
		sync.Mutex
		nextID  uint64 // request ids on the link
		jobs    uint64 // passes started
		waiters map[uint64]chan transport.Frame
		job     *scanJob // current or last resync/verify (primary)
		last    map[string]*scanJob
		// target side: the primary's latest progress report
		target *Progress
		// target side: chunk writes not yet applied, for resync-flush
		chunks []*pendingOp
	}
}

func (r *resyncState) init(opts ResyncOptions) {
	if opts.RegionSize == 0 {
		opts.RegionSize = DefaultRegionSize
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.batch == 0 {
		opts.batch = scanBatch
	}
	r.opts = opts
	r.rate.Store(opts.Rate)
	r.mu.waiters = map[uint64]chan transport.Frame{}
	r.mu.last = map[string]*scanJob{}
}

func (r *resyncState) newID() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.nextID++
	return r.mu.nextID
}

// await registers a waiter for the reply with this id.
func (r *resyncState) await(id uint64) chan transport.Frame {
	ch := make(chan transport.Frame, 1)
	r.mu.Lock()
	r.mu.waiters[id] = ch
	r.mu.Unlock()
	return ch
}

func (r *resyncState) forget(id uint64) {
	r.mu.Lock()
	delete(r.mu.waiters, id)
	r.mu.Unlock()
}

// deliver hands a reply to its waiter; false if nobody waits for it.
func (r *resyncState) deliver(id uint64, f transport.Frame) bool {
	r.mu.Lock()
	ch, ok := r.mu.waiters[id]
	delete(r.mu.waiters, id)
	r.mu.Unlock()
	if ok {
		ch <- f
	}
	return ok
}

// overlapLocked returns a range lock overlapping [off, off+n). The caller
// holds admitMu.
func (r *resyncState) overlapLocked(off, n uint64) *rangeLock {
	for _, l := range r.locks {
		if l.off < off+n && off < l.end {
			return l
		}
	}
	return nil
}

// pacer spaces out work to a byte rate.
type pacer struct {
	mu   sync.Mutex
	next time.Time
}

// wait blocks until n more bytes fit the rate (bytes/s; <= 0: no limit),
// or stop is closed.
func (p *pacer) wait(n, rate int64, stop <-chan struct{}) {
	if rate <= 0 {
		return
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-time.Second)) {
		p.next = now.Add(-time.Second) // at most one second of burst
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
	p.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

// --------------------------------------------------------------- tracking

// openDirtyMap loads the saved map, or makes an empty one.
func (v *Volume) openDirtyMap() error {
	o := v.rs.opts
	if o.MapPath != "" {
		m, err := loadDirtyMap(o.MapPath)
		if err != nil {
			return err
		}
		if m != nil && m.size == v.size {
			if v.st.PeerNeedsResync {
				v.rs.dirty = m
				v.rs.tracking.Store(true)
				return nil
			}
		}
	}
	m, err := newDirtyMap(o.MapPath, o.RegionSize, v.size)
	if err != nil {
		return err
	}
	v.rs.dirty = m
	if v.st.PeerNeedsResync {
		// Tracking, but the map is gone (or from another size): only a
		// full pass is safe.
		m.setAll(newGeneration(), 0)
		v.rs.tracking.Store(true)
		v.log.Warn("no dirty-region map: the peer gets a full checksummed resync when it connects", "path", o.MapPath)
	}
	return nil
}

// startTracking puts the dirty map in use: from now on every write that
// does not reach the peer live is marked. Records the peer may lack that are
// already in the journal (above peerSeq) are marked from the journal; if
// they are gone, or full is set, every region is marked.
func (v *Volume) startTracking(peerSeq uint64, full bool, why string) error {
	v.admitMu.Lock()
	already := v.rs.tracking.Load()
	v.rs.tracking.Store(true)
	last := v.j.Stats().LastSeq
	v.admitMu.Unlock()
	m := v.rs.dirty
	switch {
	case full:
		m.setAll(newGeneration(), last)
	case !already:
		m.reset(newGeneration(), peerSeq)
		if err := v.markFromJournal(peerSeq+1, last); err != nil {
			v.log.Warn("cannot mark the peer's missing records from the journal; resync will compare every chunk", "err", err)
			m.setAll(newGeneration(), last)
			full = true
		}
	}
	if err := m.save(); err != nil {
		return v.fail(err)
	}
	if err := v.updateState(func(s *State) { s.PeerNeedsResync = true }); err != nil {
		return err
	}
	if !already || full {
		v.log.Warn("peer needs a block resync", "peer", v.peer.NodeID, "why", why, "full", full,
			"regions_bytes", m.dirtyBytes(), "peer_seq", peerSeq)
	}
	return nil
}

// markFromJournal marks the regions of records [from, through].
func (v *Volume) markFromJournal(from, through uint64) error {
	if from > through {
		return nil
	}
	if err := v.j.WaitDurable(through); err != nil {
		return err
	}
	r, err := v.j.NewReader(from)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) || (err == nil && rec.Seq > through) {
			return nil
		}
		if err != nil {
			return err
		}
		v.rs.dirty.mark(rec.Op.Offset, uint64(rec.Op.Length))
	}
}

// markPeerNeedsResync gives up retaining the journal for a disconnected
// peer: what it lacks is marked in the dirty map instead.
func (v *Volume) markPeerNeedsResync(peerSeq uint64, cause error) {
	if err := v.startTracking(peerSeq, false, cause.Error()); err != nil {
		v.log.Error("starting dirty-region tracking", "err", err)
		return
	}
	v.j.ClearRetain(replRetain)
	v.repl.mu.Lock()
	if v.repl.mu.link == nil {
		v.repl.mu.state = ConnNeedsResync
		v.repl.mu.err = cause.Error()
	}
	v.repl.mu.Unlock()
}

// markUnacked marks records that were sent live but not acknowledged when
// the link went down (tracking only: otherwise the journal keeps them),
// then saves the map and lets the journal trim.
func (v *Volume) markUnacked(recs []unackedRec) {
	if !v.rs.tracking.Load() {
		return
	}
	for _, r := range recs {
		v.rs.dirty.mark(r.off, r.n)
	}
	if err := v.rs.dirty.save(); err != nil {
		v.log.Error("saving dirty map; keeping the journal for the peer", "err", err)
		return
	}
	v.j.ClearRetain(replRetain)
}

// --------------------------------------------------------------- primary

// attachResync brings a peer that the journal cannot catch up (or whose
// copy is Inconsistent) in line: the link goes live at once and a resync
// pass compares the dirty regions (all of them for a full resync).
func (v *Volume) attachResync(link transport.Link, act syncAction) {
	remote := link.Remote()
	tracking := v.rs.tracking.Load()
	syncID, fromSeq := v.rs.dirty.session()
	last := v.j.Stats().LastSeq
	var full bool
	var why string
	switch {
	case remote.Flags&transport.HelloInconsistent != 0:
		full = !(tracking && remote.SyncID != 0 && remote.SyncID == syncID)
		why = "the peer's copy is Inconsistent"
		if !full {
			why = "resuming the interrupted resync"
		}
	case act == syncNeedsResync && remote.DurableSeq > last:
		full, why = true, "the peer holds records this node does not"
	case tracking:
		full = remote.DurableSeq < fromSeq
		why = "the dirty-region map holds what the peer lacks"
	default:
		why = "the journal no longer holds what the peer lacks"
		full = true
	}
	if err := v.startTracking(remote.DurableSeq, full, why); err != nil {
		link.Close()
		return
	}
	full = full || v.rs.dirty.dirtyBytes() == v.size // e.g. an admin's full resync
	syncID, _ = v.rs.dirty.session()
	total := v.rs.dirty.dirtyBytes()

	v.admitMu.Lock()
	last = v.j.Stats().LastSeq
	v.repl.mu.Lock()
	epoch := v.newLinkLocked(link, ConnSyncSource)
	v.repl.mu.live = true
	v.repl.mu.peerRecv, v.repl.mu.peerDur = last, last
	v.repl.mu.peerDisk = DiskInconsistent
	v.repl.mu.Unlock()
	err := link.Send(control(ctlResyncStart, resyncStart{SyncID: syncID, NextSeq: last + 1, Full: full, Bytes: total}))
	v.j.SetRetain(replRetain, last)
	v.admitMu.Unlock()
	if err != nil {
		v.dropLink(epoch, err)
		return
	}
	v.log.Info("peer connected; block resync", "peer", remote.NodeID, "why", why, "full", full, "bytes", total, "next_seq", last+1)
	go v.recvAcks(link, epoch)
	v.rs.wg.Add(1)
	go func() {
		defer v.rs.wg.Done()
		v.runResync(link, epoch, full, total)
	}()
}

// startJob registers a resync or verify pass; only one runs at a time.
func (v *Volume) startJob(kind string, epoch uint64, full, repair bool, total uint64) (*scanJob, error) {
	v.rs.mu.Lock()
	defer v.rs.mu.Unlock()
	if j := v.rs.mu.job; j != nil {
		j.mu.Lock()
		running := !j.finished
		j.mu.Unlock()
		if running && j.epoch == epoch {
			return nil, fmt.Errorf("%w: a %s is running", ErrBusy, j.kind)
		}
	}
	v.rs.mu.jobs++
	j := &scanJob{id: v.rs.mu.jobs, kind: kind, full: full, repair: repair, epoch: epoch, total: total, started: time.Now(), fin: make(chan struct{})}
	v.rs.mu.job = j
	v.rs.mu.last[kind] = j
	return j, nil
}

// runResync compares and sends the dirty regions until the map is empty,
// then tells the target it is UpToDate.
func (v *Volume) runResync(link transport.Link, epoch uint64, full bool, total uint64) {
	job, err := v.startJob("resync", epoch, full, false, total)
	if err != nil {
		v.dropLink(epoch, err)
		return
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		v.reportProgress(link, job, stopProgress)
	}()
	err = v.scanDirty(link, job)
	close(stopProgress)
	<-progressDone
	if err == nil {
		err = v.finishResync(link, epoch)
	}
	job.finish(err)
	if err != nil {
		v.log.Warn("resync interrupted; it resumes when the peer is back", "err", err,
			"left_bytes", v.rs.dirty.dirtyBytes())
		if saveErr := v.rs.dirty.save(); saveErr != nil {
			v.log.Error("saving dirty map", "err", saveErr)
		}
		v.dropLink(epoch, err)
		return
	}
	p := job.progress()
	v.log.Info("resync done: peer is UpToDate", "peer", v.peer.NodeID, "compared_bytes", p.DoneBytes,
		"sent_bytes", p.SentBytes, "seconds", fmt.Sprintf("%.1f", p.Elapsed))
}

// reportProgress saves the map and tells the target how far the resync
// is, once a second.
func (v *Volume) reportProgress(link transport.Link, job *scanJob, stop chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-link.Done():
			return
		case <-t.C:
		}
		if err := v.rs.dirty.save(); err != nil {
			v.log.Error("saving dirty map", "err", err)
		}
		if err := link.Send(control(ctlResyncProgress, job.progress())); err != nil {
			return
		}
	}
}

// scanDirty walks the dirty map in batches, scanWindow at a time.
func (v *Volume) scanDirty(link transport.Link, job *scanJob) error {
	return v.scanRanges(link, job, func(pos uint64) (uint64, uint64, bool) {
		return v.rs.dirty.next(pos, v.rs.opts.batch)
	}, true)
}

// scanRanges runs syncRange over what next yields, scanWindow batches in
// flight. With wrap, it starts over from 0 once the end is reached, until
// next yields nothing from 0 (regions re-marked meanwhile).
func (v *Volume) scanRanges(link transport.Link, job *scanJob, next func(pos uint64) (uint64, uint64, bool), wrap bool) error {
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	setErr := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	getErr := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr
	}
	sem := make(chan struct{}, scanWindow)
	pos := uint64(0)
	for {
		if err := getErr(); err != nil {
			break
		}
		select {
		case <-link.Done():
			setErr(fmt.Errorf("peer link lost: %w", link.Err()))
		case <-v.stop:
			setErr(ErrClosed)
		default:
		}
		if getErr() != nil {
			break
		}
		off, n, ok := next(pos)
		if !ok {
			wg.Wait()
			if !wrap || pos == 0 || getErr() != nil {
				break
			}
			pos = 0
			continue
		}
		v.rs.pace.wait(int64(n), v.rs.rate.Load(), v.stop)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := v.syncRange(link, job, off, n); err != nil {
				setErr(err)
			}
		}()
		pos = off + n
	}
	wg.Wait()
	return getErr()
}

// syncRange compares [off, off+n) on both sides at one point of the write
// stream and, for a resync or a repair, sends what differs.
func (v *Volume) syncRange(link transport.Link, job *scanJob, off, n uint64) error {
	chunk := v.rs.opts.ChunkSize
	count := (n + chunk - 1) / chunk
	id := v.rs.newID()
	reply := v.rs.await(id)
	defer v.rs.forget(id)

	// Lock the range and ask for the peer's hashes at this point of the
	// stream.
	lk := &rangeLock{off: off, end: off + n, released: make(chan struct{})}
	v.admitMu.Lock()
	v.rs.locks = append(v.rs.locks, lk)
	p, deps := v.ord.admit(0, off, n)
	err := link.Send(transport.HashRequest{ID: id, Offset: off, ChunkSize: uint32(chunk), Count: uint32(count)})
	v.admitMu.Unlock()
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		v.admitMu.Lock()
		if i := slices.Index(v.rs.locks, lk); i >= 0 {
			v.rs.locks = slices.Delete(v.rs.locks, i, i+1)
		}
		v.admitMu.Unlock()
		close(lk.released)
		v.ord.markApplied(p)
	}
	defer release()
	if err != nil {
		return err
	}
	wait(deps)
	buf := getScanBuf(n)
	defer putScanBuf(buf)
	data := *buf
	if _, err := v.be.ReadAt(data, int64(off)); err != nil {
		return v.fail(fmt.Errorf("resync read at %d: %w", off, err))
	}
	f, err := v.awaitReply(link, reply)
	if err != nil {
		return err
	}
	hl, ok := f.(transport.HashList)
	if !ok || hl.Offset != off || uint64(hl.ChunkSize) != chunk || uint64(len(hl.Hashes)) != count {
		return fmt.Errorf("engine: peer answered hash request %d at %d with %T", id, off, f)
	}
	var differ []uint64 // chunk offsets relative to off
	for i := range count {
		s, e := i*chunk, min((i+1)*chunk, n)
		if xxhash.Sum64(data[s:e]) != hl.Hashes[i] {
			differ = append(differ, s)
		}
	}
	sent := false
	if len(differ) > 0 {
		if sent, err = v.syncChunks(link, job, off, data, differ); err != nil {
			return err
		}
	}
	// The data is queued on the link ahead of any later write: writes to
	// the range may go on.
	release()
	job.done.Add(n)
	if job.kind == "verify" && !job.repair {
		return nil
	}
	if sent {
		fid := v.rs.newID()
		fr := v.rs.await(fid)
		defer v.rs.forget(fid)
		if err := link.Send(control(ctlResyncFlush, idBody{fid})); err != nil {
			return err
		}
		if _, err := v.awaitReply(link, fr); err != nil {
			return err
		}
	}
	if job.kind == "resync" {
		v.rs.dirty.clearRange(off, n)
	}
	return nil
}

// syncChunks compares differing chunks in fineBlock units and sends (or,
// for verify, records) the blocks that differ.
func (v *Volume) syncChunks(link transport.Link, job *scanJob, off uint64, data []byte, differ []uint64) (bool, error) {
	chunk := v.rs.opts.ChunkSize
	n := uint64(len(data))
	type fineReq struct {
		rel   uint64
		count uint64
		reply chan transport.Frame
		id    uint64
	}
	var reqs []fineReq
	defer func() {
		for _, r := range reqs {
			v.rs.forget(r.id)
		}
	}()
	for _, rel := range differ {
		ln := min(chunk, n-rel)
		if chunk <= fineBlock {
			reqs = append(reqs, fineReq{rel: rel, count: 0})
			continue
		}
		id := v.rs.newID()
		r := fineReq{rel: rel, count: (ln + fineBlock - 1) / fineBlock, reply: v.rs.await(id), id: id}
		if err := link.Send(transport.HashRequest{ID: id, Offset: off + rel, ChunkSize: fineBlock, Count: uint32(r.count)}); err != nil {
			return false, err
		}
		reqs = append(reqs, r)
	}
	sent := false
	send := func(s, e uint64) error {
		job.addMismatch(off+s, e-s)
		if job.kind == "verify" && !job.repair {
			return nil
		}
		sent = true
		job.sent.Add(e - s)
		return link.Send(transport.ChunkData{Offset: off + s, Length: uint32(e - s), Data: data[s:e]})
	}
	for _, r := range reqs {
		ln := min(chunk, n-r.rel)
		if r.count == 0 {
			if err := send(r.rel, r.rel+ln); err != nil {
				return sent, err
			}
			continue
		}
		f, err := v.awaitReply(link, r.reply)
		if err != nil {
			return sent, err
		}
		hl, ok := f.(transport.HashList)
		if !ok || uint64(len(hl.Hashes)) != r.count {
			return sent, fmt.Errorf("engine: peer answered a block hash request at %d with %T", off+r.rel, f)
		}
		runStart := int64(-1)
		for i := range r.count {
			s, e := r.rel+i*fineBlock, min(r.rel+(i+1)*fineBlock, r.rel+ln)
			if xxhash.Sum64(data[s:e]) != hl.Hashes[i] {
				if runStart < 0 {
					runStart = int64(s)
				}
				continue
			}
			if runStart >= 0 {
				if err := send(uint64(runStart), s); err != nil {
					return sent, err
				}
				runStart = -1
			}
		}
		if runStart >= 0 {
			if err := send(uint64(runStart), r.rel+ln); err != nil {
				return sent, err
			}
		}
	}
	return sent, nil
}

// scanBufs recycles the batch buffers of resync and verify (a pass over a
// large volume would otherwise allocate, and zero, the volume's size).
var scanBufs sync.Pool

func getScanBuf(n uint64) *[]byte {
	if p, ok := scanBufs.Get().(*[]byte); ok && uint64(cap(*p)) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, max(n, scanBatch))
	return &b
}

func putScanBuf(p *[]byte) {
	if cap(*p) <= 2*scanBatch {
		scanBufs.Put(p)
	}
}

// awaitReply waits for a reply delivered by recvAcks, the link's end or
// the volume's.
func (v *Volume) awaitReply(link transport.Link, ch chan transport.Frame) (transport.Frame, error) {
	select {
	case f := <-ch:
		return f, nil
	case <-link.Done():
		return nil, fmt.Errorf("peer link lost: %w", link.Err())
	case <-v.stop:
		return nil, ErrClosed
	}
}

// finishResync ends tracking once the map is empty: the journal again
// keeps what the peer has not acknowledged, and the target is told it is
// UpToDate.
func (v *Volume) finishResync(link transport.Link, epoch uint64) error {
	v.admitMu.Lock()
	if v.rs.dirty.dirtyBytes() != 0 {
		v.admitMu.Unlock()
		return errors.New("engine: regions re-marked during the resync")
	}
	v.repl.mu.Lock()
	current := v.repl.mu.epoch == epoch && v.repl.mu.link != nil && v.repl.mu.live
	peerDur := v.repl.mu.peerDur
	v.repl.mu.Unlock()
	if !current {
		v.admitMu.Unlock()
		return errors.New("engine: peer link lost at the end of the resync")
	}
	v.rs.tracking.Store(false)
	v.j.SetRetain(replRetain, peerDur)
	v.admitMu.Unlock()
	if err := v.rs.dirty.save(); err != nil {
		return err
	}
	if err := v.updateState(func(s *State) { s.PeerNeedsResync = false }); err != nil {
		return err
	}
	if err := link.Send(control(ctlResyncDone, struct{}{})); err != nil {
		return err
	}
	v.repl.mu.Lock()
	if v.repl.mu.epoch == epoch {
		v.repl.mu.state = ConnConnected
		v.repl.mu.peerDisk = DiskUpToDate
	}
	v.repl.mu.Unlock()
	return nil
}

// --------------------------------------------------------------- admin

// ErrBusy: a resync or verify is already running.
var ErrBusy = errors.New("engine: busy")

// Resync starts a full checksummed resync of the peer. On the primary every
// region is marked and compared (only differing chunks travel); the pass
// starts now if the peer is connected, else when it connects. On a
// secondary it declares the local copy Inconsistent and asks the primary
// for a full resync (how a split brain's victim gives up its writes).
func (v *Volume) Resync() error {
	if v.peer.NodeID == "" {
		return ErrNoPeer
	}
	if !v.isPrimary() {
		if err := v.updateState(func(s *State) { s.Disk = DiskInconsistent; s.SyncID = 0 }); err != nil {
			return err
		}
		v.log.Warn("local copy declared Inconsistent: the primary will overwrite what differs", "peer", v.peer.NodeID)
		v.repl.mu.Lock()
		epoch := v.repl.mu.epoch
		v.repl.mu.Unlock()
		v.dropLink(epoch, errors.New("resync requested on this node"))
		return nil
	}
	v.rs.mu.Lock()
	j := v.rs.mu.job
	v.rs.mu.Unlock()
	if j != nil && j.kind == "resync" && j.progress().Running {
		return nil // already resyncing
	}
	if err := v.startTracking(v.j.Stats().LastSeq, true, "resync requested by the admin"); err != nil {
		return err
	}
	v.repl.mu.Lock()
	epoch := v.repl.mu.epoch
	v.repl.mu.Unlock()
	// Reconnect: the new link starts with the resync.
	v.dropLink(epoch, errors.New("resync requested by the admin"))
	v.repl.kick()
	return nil
}

// SetResyncRate changes the resync/verify rate limit (bytes/s, 0: none).
func (v *Volume) SetResyncRate(bps int64) { v.rs.rate.Store(max(bps, 0)) }

// Verify compares both copies chunk by chunk while the volume is in use
// and returns at once; Progress reports the result. With repair the
// differing blocks are sent to the peer.
func (v *Volume) Verify(repair bool) error {
	if v.peer.NodeID == "" {
		return ErrNoPeer
	}
	if !v.isPrimary() {
		return fmt.Errorf("%w: run verify on the primary (%s)", ErrNotPrimary, v.peer.NodeID)
	}
	v.repl.mu.Lock()
	link, epoch, state := v.repl.mu.link, v.repl.mu.epoch, v.repl.mu.state
	v.repl.mu.Unlock()
	if link == nil || state != ConnConnected {
		return fmt.Errorf("%w: the peer link is %s, verify needs it Connected", ErrNotConnected, state)
	}
	job, err := v.startJob("verify", epoch, true, repair, v.size)
	if err != nil {
		return err
	}
	v.rs.wg.Add(1)
	go func() {
		defer v.rs.wg.Done()
		err := v.scanRanges(link, job, func(pos uint64) (uint64, uint64, bool) {
			if pos >= v.size {
				return 0, 0, false
			}
			return pos, min(v.rs.opts.batch, v.size-pos), true
		}, false)
		job.finish(err)
		p := job.progress()
		v.log.Info("verify done", "compared_bytes", p.DoneBytes, "mismatch_bytes", p.MismatchBytes,
			"ranges", len(p.Mismatches), "repaired_bytes", p.RepairedBytes, "err", err)
	}()
	return nil
}

// Progress returns the current or last pass of the given kind ("resync"
// or "verify"); ok is false if there was none since the daemon started.
func (v *Volume) Progress(kind string) (Progress, bool) {
	v.rs.mu.Lock()
	j := v.rs.mu.last[kind]
	v.rs.mu.Unlock()
	if j == nil {
		return Progress{}, false
	}
	return j.progress(), true
}

// WaitProgress waits until the pass of that kind finishes or ctx ends.
func (v *Volume) WaitProgress(ctx context.Context, kind string) (Progress, error) {
	v.rs.mu.Lock()
	j := v.rs.mu.last[kind]
	v.rs.mu.Unlock()
	if j == nil {
		return Progress{}, fmt.Errorf("engine: no %s has run", kind)
	}
	select {
	case <-j.fin:
		return j.progress(), nil
	case <-ctx.Done():
		return j.progress(), ctx.Err()
	}
}

// ErrNotConnected: the operation needs a live peer link.
var ErrNotConnected = errors.New("engine: peer not connected")

// --------------------------------------------------------------- target

// handleTargetFrame runs a resync or verify frame from the primary (hash
// request, chunk data, control message) in stream order.
func (v *Volume) handleTargetFrame(link transport.Link, epoch uint64, f transport.Frame) error {
	switch m := f.(type) {
	case transport.HashRequest:
		return v.answerHashes(link, epoch, m)
	case transport.ChunkData:
		return v.applyChunk(m)
	case transport.Control:
		return v.handleControl(link, epoch, m)
	}
	return fmt.Errorf("engine: unexpected %T from the primary", f)
}

// handleControl runs a resync control message on the secondary, in
// stream order.
func (v *Volume) handleControl(link transport.Link, epoch uint64, c transport.Control) error {
	switch c.Kind {
	case ctlResyncStart:
		var b resyncStart
		if err := json.Unmarshal(c.Body, &b); err != nil {
			return fmt.Errorf("engine: %s: %w", c.Kind, err)
		}
		return v.beginTarget(epoch, b)
	case ctlResyncFlush:
		var b idBody
		if err := json.Unmarshal(c.Body, &b); err != nil {
			return fmt.Errorf("engine: %s: %w", c.Kind, err)
		}
		v.rs.mu.Lock()
		pending := slices.Clone(v.rs.mu.chunks)
		v.rs.mu.Unlock()
		go func() {
			for _, p := range pending {
				<-p.applied
			}
			if err := v.be.Flush(); err != nil {
				v.fail(fmt.Errorf("backend flush for resync: %w", err))
				v.dropLink(epoch, err)
				return
			}
			_ = link.Send(control(ctlResyncFlushed, b))
		}()
		return nil
	case ctlResyncProgress:
		var p Progress
		if err := json.Unmarshal(c.Body, &p); err != nil {
			return fmt.Errorf("engine: %s: %w", c.Kind, err)
		}
		v.rs.mu.Lock()
		v.rs.mu.target = &p
		v.rs.mu.Unlock()
		return nil
	case ctlResyncDone:
		if err := v.updateState(func(s *State) { s.Disk = DiskUpToDate; s.SyncID = 0 }); err != nil {
			return err
		}
		v.repl.mu.Lock()
		if v.repl.mu.epoch == epoch {
			v.repl.mu.state = ConnConnected
		}
		v.repl.mu.Unlock()
		v.rs.mu.Lock()
		if t := v.rs.mu.target; t != nil {
			t.Running, t.DoneBytes, t.ETASeconds = false, t.TotalBytes, 0
		}
		v.rs.mu.Unlock()
		v.log.Info("resync done: this copy is UpToDate", "peer", v.peer.NodeID)
		return nil
	}
	return fmt.Errorf("engine: unknown control message %q from the primary", c.Kind)
}

// beginTarget makes this copy a resync target: Inconsistent until the
// primary says it is done, its journal renumbered to follow the primary's
// live stream.
func (v *Volume) beginTarget(epoch uint64, b resyncStart) error {
	if err := v.updateState(func(s *State) { s.Disk = DiskInconsistent; s.SyncID = b.SyncID }); err != nil {
		return err
	}
	v.repl.mu.Lock()
	if v.repl.mu.epoch == epoch {
		v.repl.mu.state = ConnSyncTarget
	}
	v.repl.mu.Unlock()
	v.rs.mu.Lock()
	v.rs.mu.target = &Progress{ID: b.SyncID, Kind: "resync", Full: b.Full, Running: true, TotalBytes: b.Bytes, StartedAt: time.Now().UTC().Format(time.RFC3339)}
	v.rs.mu.Unlock()
	if last := v.j.Stats().LastSeq; b.NextSeq != last+1 {
		// Every local record into the backend, then follow the primary's
		// numbering: the records in between are not in any journal, the
		// resync carries their data.
		if err := v.waitIdle(context.Background()); err != nil {
			return err
		}
		if err := v.j.WaitDurable(last); err != nil {
			return v.fail(err)
		}
		if err := v.Checkpoint(); err != nil {
			return err
		}
		if err := v.j.Restart(b.NextSeq); err != nil {
			return v.fail(err)
		}
		v.ord.reset(b.NextSeq - 1)
	}
	v.log.Info("block resync from the primary started; this copy is Inconsistent until it ends",
		"peer", v.peer.NodeID, "full", b.Full, "bytes", b.Bytes, "next_seq", b.NextSeq)
	return nil
}

// answerHashes hashes the requested chunks at this point of the stream
// (behind earlier overlapping records) and replies.
func (v *Volume) answerHashes(link transport.Link, epoch uint64, h transport.HashRequest) error {
	off, chunk := h.Offset, uint64(h.ChunkSize)
	if off >= v.size || uint64(h.Count-1)*chunk >= v.size-off {
		return fmt.Errorf("engine: hash request [%d, %d×%d) beyond the volume", off, h.Count, chunk)
	}
	n := min(uint64(h.Count)*chunk, v.size-off)
	v.admitMu.Lock()
	p, deps := v.ord.admit(0, off, n)
	v.admitMu.Unlock()
	go func() {
		defer v.ord.markApplied(p)
		wait(deps)
		buf := getScanBuf(n)
		defer putScanBuf(buf)
		data := *buf
		if _, err := v.be.ReadAt(data, int64(off)); err != nil {
			v.dropLink(epoch, fmt.Errorf("resync read at %d: %w", off, err))
			return
		}
		hl := transport.HashList{ID: h.ID, Offset: off, ChunkSize: h.ChunkSize, Hashes: make([]uint64, h.Count)}
		for i := range hl.Hashes {
			s, e := uint64(i)*chunk, min(uint64(i+1)*chunk, n)
			hl.Hashes[i] = xxhash.Sum64(data[s:e])
		}
		_ = link.Send(hl)
	}()
	return nil
}

// applyChunk writes resync data at this point of the stream.
func (v *Volume) applyChunk(c transport.ChunkData) error {
	if c.Offset >= v.size || uint64(c.Length) > v.size-c.Offset {
		return fmt.Errorf("engine: chunk data [%d, +%d) beyond the volume", c.Offset, c.Length)
	}
	data := append([]byte(nil), c.Data...) // the frame buffer is not ours past Recv
	v.admitMu.Lock()
	p, deps := v.ord.admit(0, c.Offset, uint64(c.Length))
	v.admitMu.Unlock()
	v.rs.mu.Lock()
	v.rs.mu.chunks = append(v.rs.mu.chunks, p)
	v.rs.mu.Unlock()
	v.inflightN.Add(1)
	go func() {
		defer v.inflightN.Add(-1)
		wait(deps)
		if _, err := v.be.WriteAt(data, int64(c.Offset)); err != nil {
			v.fail(fmt.Errorf("resync write at %d: %w", c.Offset, err))
		}
		v.ord.markApplied(p)
		v.rs.mu.Lock()
		if i := slices.Index(v.rs.mu.chunks, p); i >= 0 {
			v.rs.mu.chunks = slices.Delete(v.rs.mu.chunks, i, i+1)
		}
		v.rs.mu.Unlock()
	}()
	return nil
}

// recordMarksLocked marks op in the dirty map when tracking and the op did
// not go to the peer live. The caller holds admitMu.
func (v *Volume) recordMarksLocked(op journal.Op, sentLive bool) {
	if !sentLive && v.rs.tracking.Load() {
		v.rs.dirty.mark(op.Offset, uint64(op.Length))
	}
}
