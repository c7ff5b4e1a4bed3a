package engine

import "sync"

// orderer keeps the write-ordering rule of the engine in one place:
//
//	a write never overtakes an earlier overlapping write.
//
// Every mutating request (write, trim, zero) gets a sequence number when it
// is admitted; admission order is journal order. Before a request touches
// the backend it waits for every earlier request whose range overlaps it to
// have been applied, so after any mix of concurrent overlapping writes the
// backend holds what applying them one by one in sequence order would give.
// Non-overlapping requests run fully in parallel.
//
// The orderer also keeps the applied watermark: the highest seq S such that
// every request with seq <= S has been applied to the backend. A checkpoint
// may only cover seqs at or below it.
//
// It does no I/O. Callers hold no lock of theirs while waiting on the
// channels it returns.
type orderer struct {
	mu struct {
		sync.Mutex
		// inflight holds admitted, not yet applied requests in seq order.
		inflight []*pendingOp
		// applied is the watermark; done holds applied seqs above it.
		applied uint64
		done    map[uint64]struct{}
	}
}

// pendingOp is one admitted request. applied is closed once it is in the
// backend.
type pendingOp struct {
	seq      uint64
	off, end uint64
	applied  chan struct{}
}

func newOrderer(appliedThrough uint64) *orderer {
	o := &orderer{}
	o.mu.applied = appliedThrough
	o.mu.done = make(map[uint64]struct{})
	return o
}

// admit registers a request with the next seq. Seq 0 registers a
// barrier that is not a journal record (a resync read or write of a
// range): it orders like any request but never moves the watermark.
//
// admit registers a request with the next seq. The caller must assign
// seqs in increasing order and call admit in that same order (it holds the
// lock that serialises seq assignment while calling). It returns the
// requests the new one must wait for.
func (o *orderer) admit(seq, off, n uint64) (*pendingOp, []*pendingOp) {
	p := &pendingOp{seq: seq, off: off, end: off + n, applied: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	var deps []*pendingOp
	if n > 0 {
		for _, q := range o.mu.inflight {
			if q.off < p.end && off < q.end {
				deps = append(deps, q)
			}
		}
	}
	o.mu.inflight = append(o.mu.inflight, p)
	return p, deps
}

// overlapping returns the admitted, unapplied requests overlapping
// [off, off+n), without registering anything (a read that must see them).
func (o *orderer) overlapping(off, n uint64) []*pendingOp {
	o.mu.Lock()
	defer o.mu.Unlock()
	var deps []*pendingOp
	for _, q := range o.mu.inflight {
		if q.off < off+n && off < q.end {
			deps = append(deps, q)
		}
	}
	return deps
}

// wait blocks until every dependency is applied.
func wait(deps []*pendingOp) {
	for _, d := range deps {
		<-d.applied
	}
}

// markApplied records that p is in the backend and returns the new watermark.
func (o *orderer) markApplied(p *pendingOp) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, q := range o.mu.inflight {
		if q == p {
			o.mu.inflight = append(o.mu.inflight[:i], o.mu.inflight[i+1:]...)
			break
		}
	}
	close(p.applied)
	if p.seq == o.mu.applied+1 {
		o.mu.applied++
		for {
			if _, ok := o.mu.done[o.mu.applied+1]; !ok {
				break
			}
			delete(o.mu.done, o.mu.applied+1)
			o.mu.applied++
		}
	} else if p.seq > o.mu.applied {
		o.mu.done[p.seq] = struct{}{}
	}
	return o.mu.applied
}

// appliedThrough returns the watermark.
func (o *orderer) appliedThrough() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mu.applied
}

// inflightCount is the number of admitted, unapplied requests.
func (o *orderer) inflightCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.mu.inflight)
}

// reset moves the watermark to appliedThrough after the journal was
// renumbered (a resync target following its primary). No numbered request
// may be in flight.
func (o *orderer) reset(appliedThrough uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.mu.applied = appliedThrough
	clear(o.mu.done)
}
