package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/twinblock/twinblock/journal/vfs"
)

// Defaults for Options.
const (
	DefaultSegmentSize = 64 << 20
	DefaultMaxPayload  = 32 << 20
	DefaultMaxBatch    = 8 << 20

	segmentSuffix  = ".seg"
	brokenSuffix   = ".broken"
	checkpointName = "checkpoint"
	checkpointTmp  = "checkpoint.tmp"
	// keepRecycled is how many trimmed segment files are kept for reuse by
	// the preallocator; more would only hold disk space.
	keepRecycled  = 2
	zeroChunk     = 1 << 20
	fillSyncEvery = 4 << 20
	// writeAlign is the block that journal writes are widened to (see
	// writeChunk): the filesystem block size of ext4 and XFS defaults.
	writeAlign = 4096
)

// Options configure a Journal. The zero value of every field but Dir is a
// sensible default.
type Options struct {
	// Dir holds the segment files and the checkpoint file. Created if
	// missing.
	Dir string
	// FS is the filesystem; vfs.OS if nil.
	FS vfs.FS
	// SegmentSize is the size of each preallocated segment file. It must
	// hold a segment header plus one record of MaxPayload bytes.
	SegmentSize int64
	// MaxPayload caps Op.Data and every payload length read from disk.
	MaxPayload int
	// MaxBatch bounds the bytes waiting for the next group commit; Submit
	// blocks (backpressure) while a sync is in progress and this much is
	// already queued behind it.
	MaxBatch int
	// FirstSeq is the sequence number of the first record of a new journal
	// (ignored when the journal exists). Default 1.
	FirstSeq uint64
	// SkipZeroFill preallocates segments with fallocate only. By default
	// new segments are also overwritten with zeroes off the hot path: on
	// ext4 and XFS the first write into a fallocated (unwritten) extent makes
	// the following fdatasync commit an extent conversion too, which here
	// costs ~70% more latency per group commit.
	SkipZeroFill bool
	// Logger receives recovery decisions (Warn) and failures (Error).
	Logger *slog.Logger
}

func (o *Options) normalize() error {
	if o.Dir == "" {
		return fmt.Errorf("%w: Options.Dir is empty", ErrInvalid)
	}
	if o.FS == nil {
		o.FS = vfs.OS
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.FirstSeq == 0 {
		o.FirstSeq = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxPayload < 0 || o.MaxPayload > 1<<31 || o.MaxBatch < 0 || o.FirstSeq > maxSeq {
		return fmt.Errorf("%w: MaxPayload, MaxBatch or FirstSeq out of range", ErrInvalid)
	}
	if o.SegmentSize%sectorSize != 0 || o.SegmentSize < minSegmentSz ||
		o.SegmentSize < segmentHeaderSize+recordSize(o.MaxPayload) {
		return fmt.Errorf("%w: SegmentSize %d must be a multiple of %d holding a header and a %d-byte record",
			ErrInvalid, o.SegmentSize, sectorSize, o.MaxPayload)
	}
	return nil
}

// Op is one block operation.
type Op struct {
	Kind   Kind
	Offset uint64
	Length uint32
	// NoHole is only valid with KindZero.
	NoHole bool
	// Data is the payload of KindWrite (len(Data) == Length); nil otherwise.
	Data []byte
}

func (op *Op) validate(maxPayload int) error {
	switch op.Kind {
	case KindWrite:
		if op.Length == 0 || int(op.Length) != len(op.Data) || op.NoHole {
			return fmt.Errorf("%w: write needs len(Data) == Length > 0", ErrInvalid)
		}
		if len(op.Data) > maxPayload {
			return fmt.Errorf("%w: payload %d over MaxPayload %d", ErrInvalid, len(op.Data), maxPayload)
		}
	case KindTrim, KindZero:
		if len(op.Data) != 0 || op.Length == 0 || (op.NoHole && op.Kind != KindZero) {
			return fmt.Errorf("%w: %s needs Length > 0 and no Data", ErrInvalid, op.Kind)
		}
	default:
		return fmt.Errorf("%w: kind %d", ErrInvalid, op.Kind)
	}
	return nil
}

// Stats is a snapshot of the journal's state and counters.
type Stats struct {
	FirstSeq      uint64 // first retained record (LastSeq+1 if none)
	LastSeq       uint64 // last assigned sequence number
	DurableSeq    uint64
	CheckpointSeq uint64
	Segments      int   // live segment files (not counting the spare)
	Bytes         int64 // bytes used in live segments
	Appends       uint64
	Syncs         uint64 // group commits (fdatasync rounds)
	MaxBatch      uint64 // most records made durable by one group commit
	PreallocWaits uint64 // times an append waited for the next segment
	Recycled      uint64 // segments prepared by reusing a trimmed file
}

// segment is a live segment file.
type segment struct {
	id       uint64
	path     string
	f        vfs.File // read-write handle, owned by the journal
	size     int64
	firstSeq uint64 // 0 while the segment holds no record
	lastSeq  uint64 // last sequence assigned to it
	end      int64  // next write offset (0: header not yet written)
	// tail is the content of the partial block at end, file bytes
	// [end &^ (writeAlign-1), end), when tailKnown (see writeChunk). A new
	// or restarted segment (end 0) has an empty, known tail.
	tail      []byte
	tailKnown bool
}

// chunk is a contiguous piece of the pending batch destined for one segment.
type chunk struct {
	seg        *segment
	off        int64
	start, end int // range in batch.buf
}

type batch struct {
	buf     []byte
	chunks  []chunk
	lastSeq uint64
	records uint64
}

// Journal is the write-ahead log. All methods are safe for concurrent use.
type Journal struct {
	opts     Options
	fs       vfs.FS
	log      *slog.Logger
	kickSync chan struct{}
	kickPrep chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
	ckptMu   sync.Mutex // serializes checkpoint file writes
	trimMu   sync.Mutex // serializes Trim

	// commitAvg is a moving average of a group commit's duration (write
	// and fdatasync), in nanoseconds; see CommitTime.
	commitAvg atomic.Int64
	// wbuf assembles a widened journal write (writeChunk); the committer's.
	wbuf []byte

	mu struct {
		sync.Mutex
		cond        sync.Cond // broadcast on: durable advance, failure, spare ready, batch taken, close
		failed      error
		closing     bool
		nextSeq     uint64
		durable     uint64
		checkpoint  uint64
		syncing     bool // a leader holds the group-commit token
		pending     batch
		spareBuf    []byte // the previous batch's buffer, reused
		spareChunks []chunk
		segs        []*segment // live, oldest first; the last is the active one
		spare       *segment   // preallocated next segment
		recycle     []*segment // trimmed files kept for reuse, oldest first
		// reusing: the preallocator has taken the oldest recycled file
		// and not yet made its new name durable. Until it has, no newer
		// trimmed file may be removed (see Trim).
		reusing bool
		nextID  uint64
		retains map[string]uint64
		stats   Stats
	}
}

func segName(id uint64) string { return fmt.Sprintf("%016x%s", id, segmentSuffix) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	return id, err == nil && id != 0
}

func (j *Journal) path(name string) string { return filepath.Join(j.opts.Dir, name) }

// Open opens or creates the journal in opts.Dir and recovers it: it scans
// from the last checkpoint, cuts a torn tail (after copying the segment
// aside as <name>.broken) and fails with ErrCorrupt on damage before the
// tail. See doc.go for the decision table.
func Open(opts Options) (*Journal, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	j := &Journal{
		opts:     opts,
		fs:       opts.FS,
		log:      opts.Logger,
		kickSync: make(chan struct{}, 1),
		kickPrep: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	j.mu.cond.L = &j.mu.Mutex
	j.mu.retains = map[string]uint64{}
	if err := j.recover(); err != nil {
		return nil, err
	}
	j.wg.Add(2)
	go j.syncLoop()
	go j.prepLoop()
	if j.mu.spare == nil {
		kick(j.kickPrep)
	}
	return j, nil
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// usableLocked returns the error that forbids new work, if any.
func (j *Journal) usableLocked() error {
	if j.mu.failed != nil {
		return j.mu.failed
	}
	if j.mu.closing {
		return ErrClosed
	}
	return nil
}

// failLocked makes the journal unusable. The first failure wins; it is
// logged once and every waiter is woken to see it.
func (j *Journal) failLocked(err error) {
	if j.mu.failed != nil {
		return
	}
	j.mu.failed = fmt.Errorf("%w: %w", ErrFailed, err)
	j.log.Error("journal failed; it must be reopened", "dir", j.opts.Dir, "err", err)
	j.mu.cond.Broadcast()
}

func (j *Journal) fail(err error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.failLocked(err)
	return j.mu.failed
}

// Append appends op and returns once it is durable. Concurrent callers share
// fdatasyncs (group commit); a lone caller does the sync itself, so its
// latency is one write plus one fdatasync. If the record was queued but
// could not be made durable, Append returns its seq with the error: the
// record may or may not be found after a restart (but never damaged).
func (j *Journal) Append(op Op) (uint64, error) {
	seq, err := j.submit(op, false)
	if err != nil {
		return 0, err
	}
	return seq, j.WaitDurable(seq)
}

// Submit appends op without waiting: it returns the record's sequence
// number as soon as the record is queued for the next group commit, which a
// background goroutine starts at once. op.Data may be reused on return. Use
// WaitDurable or DurableSeq to learn when it is durable.
func (j *Journal) Submit(op Op) (uint64, error) {
	return j.submit(op, true)
}

// Queue is Submit without starting a group commit: the record becomes
// durable with the next one, which the caller starts itself by calling
// WaitDurable (a lone writer then does its own write and fdatasync, with
// no hand-off to the sync goroutine and back). Only for callers that will
// wait for the record.
func (j *Journal) Queue(op Op) (uint64, error) {
	return j.submit(op, false)
}

func (j *Journal) submit(op Op, async bool) (uint64, error) {
	if err := op.validate(j.opts.MaxPayload); err != nil {
		return 0, err
	}
	// Checksum the payload before taking the lock: it is the only
	// per-byte work besides the copy.
	sum := xxhash.Sum64(op.Data)
	size := recordSize(len(op.Data))
	j.mu.Lock()
	defer j.mu.Unlock()
	var seg *segment
	for {
		if err := j.usableLocked(); err != nil {
			return 0, err
		}
		if len(j.mu.pending.buf) > 0 && len(j.mu.pending.buf)+int(size) > j.opts.MaxBatch {
			kick(j.kickSync)
			j.mu.cond.Wait()
			continue
		}
		seg = j.mu.segs[len(j.mu.segs)-1]
		need := size
		if seg.end == 0 {
			need += segmentHeaderSize
		}
		if seg.end+need <= seg.size {
			break
		}
		if j.mu.spare == nil {
			j.mu.stats.PreallocWaits++
			kick(j.kickPrep)
			j.mu.cond.Wait()
			continue
		}
		// Rotate: the spare's directory entry is already durable, so
		// records may go into it right away.
		j.mu.segs = append(j.mu.segs, j.mu.spare)
		j.mu.spare = nil
		kick(j.kickPrep)
	}
	seq := j.mu.nextSeq
	j.mu.nextSeq++
	b := &j.mu.pending
	if seg.end == 0 {
		start := len(b.buf)
		b.buf = grow(b.buf, segmentHeaderSize)
		sh := segmentHeader{segID: seg.id, firstSeq: seq, syncedThrough: j.mu.durable, size: uint64(seg.size)}
		sh.encode(b.buf[start:])
		b.addChunk(seg, 0, start)
		seg.end = segmentHeaderSize
		seg.firstSeq = seq
	}
	start := len(b.buf)
	b.buf = grow(b.buf, int(size))
	h := recordHeader{
		kind: op.Kind, seq: seq, segID: seg.id, syncedThrough: j.mu.durable,
		offset: op.Offset, length: op.Length, payloadLen: uint32(len(op.Data)), payloadSum: sum,
	}
	if op.NoHole {
		h.flags |= flagNoHole
	}
	h.encode(b.buf[start:])
	copy(b.buf[start+recordHeaderSize:], op.Data)
	b.addChunk(seg, seg.end, start)
	seg.end += size
	seg.lastSeq = seq
	b.lastSeq = seq
	b.records++
	j.mu.stats.Appends++
	if async {
		kick(j.kickSync)
	}
	return seq, nil
}

// grow extends b by n zero bytes (the padding of a record must be zero:
// buffers are reused).
func grow(b []byte, n int) []byte {
	old := len(b)
	if cap(b)-old < n {
		nb := make([]byte, old, 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	b = b[:old+n]
	clear(b[old:])
	return b
}

func (b *batch) addChunk(seg *segment, off int64, start int) {
	end := len(b.buf)
	if n := len(b.chunks); n > 0 {
		c := &b.chunks[n-1]
		if c.seg == seg && c.off+int64(c.end-c.start) == off && c.end == start {
			c.end = end
			return
		}
	}
	b.chunks = append(b.chunks, chunk{seg: seg, off: off, start: start, end: end})
}

// WaitDurable blocks until every record up to seq is durable or the journal
// has failed. If no group commit is running, the caller runs one itself.
func (j *Journal) WaitDurable(seq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		if j.mu.durable >= seq {
			return nil
		}
		if j.mu.failed != nil {
			return j.mu.failed
		}
		if seq >= j.mu.nextSeq {
			return fmt.Errorf("%w: seq %d not appended yet", ErrOutOfRange, seq)
		}
		if !j.mu.syncing && len(j.mu.pending.buf) > 0 {
			j.commitLocked()
			continue
		}
		j.mu.cond.Wait()
	}
}

// commitLocked runs one group commit: it takes the whole pending batch,
// writes it and fdatasyncs every segment it touched, with the lock released
// during the I/O. Records submitted meanwhile wait for the next round. The
// caller holds mu, no commit is running and the batch is not empty.
func (j *Journal) commitLocked() {
	j.mu.syncing = true
	b := j.mu.pending
	j.mu.pending = batch{buf: j.mu.spareBuf[:0], chunks: j.mu.spareChunks[:0]}
	j.mu.spareBuf, j.mu.spareChunks = nil, nil
	j.mu.Unlock()
	start := time.Now()
	err := j.writeBatch(&b)
	took := int64(time.Since(start))
	j.mu.Lock()
	j.mu.syncing = false
	if avg := j.commitAvg.Load(); avg == 0 {
		j.commitAvg.Store(took)
	} else {
		j.commitAvg.Store(avg + (took-avg)/8)
	}
	if cap(b.buf) <= 2*j.opts.MaxBatch {
		j.mu.spareBuf = b.buf[:0]
	}
	clear(b.chunks) // drop segment pointers
	j.mu.spareChunks = b.chunks[:0]
	if err != nil {
		j.failLocked(err)
	} else {
		j.mu.durable = b.lastSeq
		j.mu.stats.Syncs++
		j.mu.stats.MaxBatch = max(j.mu.stats.MaxBatch, b.records)
	}
	j.mu.cond.Broadcast()
	if len(j.mu.pending.buf) > 0 {
		// Records that arrived during this commit may belong to Submit
		// callers that nobody waits for: hand them to the sync loop.
		kick(j.kickSync)
	}
}

func (j *Journal) writeBatch(b *batch) error {
	for _, c := range b.chunks {
		if err := j.writeChunk(c.seg, b.buf[c.start:c.end], c.off); err != nil {
			return fmt.Errorf("write %s: %w", c.seg.path, err)
		}
	}
	// Sync oldest first: a batch spans at most a rotation, and syncing the
	// older segment first keeps "durable prefix" true at every instant.
	var last *segment
	for _, c := range b.chunks {
		if c.seg == last {
			continue
		}
		last = c.seg
		if err := c.seg.f.Sync(); err != nil {
			return fmt.Errorf("fdatasync %s: %w", c.seg.path, err)
		}
	}
	return nil
}

// writeChunk writes data at off, the segment's end, widened to whole
// writeAlign blocks: it starts at the block boundary at or below off,
// carrying again the bytes of that block already written (s.tail), and
// is padded with zeroes to the next boundary (or the segment's size). A
// write that covers only part of a block whose page is not cached (after
// a restart, or once memory pressure evicted a recycled segment's pages)
// makes the kernel read the block from disk before it can take the write:
// a disk read inside every group commit. The disk sees the same bytes
// either way (the kernel writes whole blocks back, the prefix is what is
// already there), so crash safety and the format are unchanged: what
// lies past the end of the log was zeroes, a cut torn tail or an earlier
// use's records, and is zeroes now. Without a known tail (its read failed
// at open) the write goes out as it is.
//
// The widened write is assembled in j.wbuf: one copy of the batch (a few
// KiB to tens of KiB) against the fdatasync that follows, cheaper than a
// second write call. Only the committer calls it (one commit at a time),
// so s.tail and j.wbuf need no lock.
func (j *Journal) writeChunk(s *segment, data []byte, off int64) error {
	head := off % writeAlign
	end := off + int64(len(data))
	padEnd := min((end+writeAlign-1)/writeAlign*writeAlign, s.size)
	known := head == 0 || (s.tailKnown && int64(len(s.tail)) == head)
	if !known {
		if _, err := s.f.WriteAt(data, off); err != nil {
			return err
		}
		s.setTail(data, off, end)
		return nil
	}
	base := off - head
	buf := data
	if head != 0 || padEnd != end {
		n := int(padEnd - base)
		if cap(j.wbuf) < n {
			j.wbuf = make([]byte, n, n+n/4)
		}
		buf = j.wbuf[:n]
		copy(buf, s.tail)
		copy(buf[head:], data)
		clear(buf[head+int64(len(data)):])
	}
	if _, err := s.f.WriteAt(buf, base); err != nil {
		return err
	}
	s.setTail(buf[:end-base], base, end)
	return nil
}

// setTail records the partial block at end from w, the bytes written at
// [from, end); the tail stays unknown when w does not reach back to the
// block's start.
func (s *segment) setTail(w []byte, from, end int64) {
	blk := end - end%writeAlign
	if blk < from {
		s.tail, s.tailKnown = s.tail[:0], false
		return
	}
	s.tail = append(s.tail[:0], w[blk-from:]...)
	s.tailKnown = true
}

// syncLoop commits batches queued by Submit when no waiter leads.
func (j *Journal) syncLoop() {
	defer j.wg.Done()
	for {
		select {
		case <-j.kickSync:
		case <-j.done:
			return
		}
		j.mu.Lock()
		if !j.mu.syncing && len(j.mu.pending.buf) > 0 && j.mu.failed == nil {
			j.commitLocked()
		}
		j.mu.Unlock()
	}
}

// prepLoop keeps one spare segment ready so that rotation never waits for
// file creation, allocation or fsync.
func (j *Journal) prepLoop() {
	defer j.wg.Done()
	for {
		select {
		case <-j.kickPrep:
		case <-j.done:
			return
		}
		j.mu.Lock()
		if j.mu.spare != nil || j.mu.failed != nil || j.mu.closing {
			j.mu.Unlock()
			continue
		}
		id := j.mu.nextID
		j.mu.nextID++
		var reuse *segment
		if len(j.mu.recycle) > 0 {
			reuse = j.mu.recycle[0]
			j.mu.recycle = j.mu.recycle[1:]
			j.mu.reusing = true
		}
		j.mu.Unlock()
		seg, err := j.prepare(id, reuse)
		j.mu.Lock()
		if reuse != nil {
			j.mu.reusing = false
			j.mu.cond.Broadcast() // Restart waits for this
		}
		if err != nil {
			j.failLocked(fmt.Errorf("preallocate segment: %w", err))
		} else {
			j.mu.spare = seg
			j.mu.cond.Broadcast()
		}
		j.mu.Unlock()
	}
}

// prepare makes segment id durable and ready for records: a trimmed file
// renamed (its stale records carry another segment id and are never
// replayed), or a new file allocated, zero-filled and fsynced; then the
// directory is fsynced so that the new name survives a crash.
func (j *Journal) prepare(id uint64, reuse *segment) (*segment, error) {
	path := j.path(segName(id))
	seg := &segment{id: id, path: path, size: j.opts.SegmentSize, tailKnown: true}
	if reuse != nil {
		if err := j.fs.Rename(reuse.path, path); err != nil {
			_ = reuse.f.Close() // the rename error is the one to report
			return nil, err
		}
		seg.f = reuse.f
		j.mu.Lock()
		j.mu.stats.Recycled++
		j.mu.Unlock()
		if reuse.size != seg.size {
			if err := j.fill(seg.f, 0, seg.size); err != nil {
				return nil, errors.Join(err, seg.f.Close())
			}
		}
	} else {
		f, err := j.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		seg.f = f
		if err := j.fill(f, 0, seg.size); err != nil {
			return nil, errors.Join(err, f.Close())
		}
	}
	if err := j.fs.SyncDir(j.opts.Dir); err != nil {
		return nil, errors.Join(fmt.Errorf("sync dir: %w", err), seg.f.Close())
	}
	return seg, nil
}

// fill makes [from, size) of f allocated zeroes and durable, and the file
// exactly size bytes long.
func (j *Journal) fill(f vfs.File, from, size int64) error {
	if err := f.Truncate(from); err != nil {
		return err
	}
	if err := f.Allocate(size); err != nil {
		return err
	}
	if !j.opts.SkipZeroFill {
		zero := make([]byte, min(zeroChunk, size-from))
		for off := from; off < size; off += int64(len(zero)) {
			n := min(int64(len(zero)), size-off)
			if _, err := f.WriteAt(zero[:n], off); err != nil {
				return err
			}
			// Flush in slices: one 64 MiB writeback at the end would
			// queue ahead of the appenders' fdatasyncs for a long time.
			if (off+n-from)%fillSyncEvery == 0 && off+n < size {
				if err := f.Sync(); err != nil {
					return err
				}
			}
		}
	}
	return f.Sync()
}

// CommitTime is how long a group commit (its write and fdatasync) has
// taken lately: a moving average over the last few commits, 0 before the
// first. The engine uses it to decide how long a replicated write may
// hold its commit back (see engine's commit deferral).
func (j *Journal) CommitTime() time.Duration { return time.Duration(j.commitAvg.Load()) }

// DurableSeq returns the highest sequence number known durable.
func (j *Journal) DurableSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.mu.durable
}

// Checkpoint records durably that the backend holds every record through
// applied, so recovery starts after it and Trim may drop it. applied must
// not exceed DurableSeq; a value not above the current checkpoint is a
// no-op. The checkpoint is a small file replaced atomically
// (write temp, fsync, rename, fsync directory).
func (j *Journal) Checkpoint(applied uint64) error {
	j.ckptMu.Lock()
	defer j.ckptMu.Unlock()
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return err
	}
	if applied > j.mu.durable {
		j.mu.Unlock()
		return fmt.Errorf("%w: checkpoint %d beyond durable %d", ErrInvalid, applied, j.mu.durable)
	}
	if applied <= j.mu.checkpoint {
		j.mu.Unlock()
		return nil
	}
	j.mu.Unlock()
	if err := j.writeCheckpoint(applied); err != nil {
		return err
	}
	j.mu.Lock()
	j.mu.checkpoint = applied
	j.mu.Unlock()
	return nil
}

// writeCheckpoint replaces the checkpoint file. An fsync failure fails the
// journal; other errors leave the old checkpoint in place and are returned.
func (j *Journal) writeCheckpoint(applied uint64) error {
	tmp := j.path(checkpointTmp)
	f, err := j.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("journal: checkpoint: %w", err)
	}
	if _, err := f.WriteAt(encodeCheckpoint(applied), 0); err != nil {
		return errors.Join(fmt.Errorf("journal: checkpoint: %w", err), f.Close())
	}
	if err := f.Sync(); err != nil {
		_ = f.Close() // already failing for the fsync error
		return j.fail(fmt.Errorf("fdatasync %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("journal: checkpoint: %w", err)
	}
	if err := j.fs.Rename(tmp, j.path(checkpointName)); err != nil {
		return fmt.Errorf("journal: checkpoint: %w", err)
	}
	if err := j.fs.SyncDir(j.opts.Dir); err != nil {
		return j.fail(fmt.Errorf("sync dir %s: %w", j.opts.Dir, err))
	}
	return nil
}

// SetRetain sets a named lower bound for Trim: records above seq are kept
// (for example the peer's acknowledged sequence number, so that a lagging
// peer can catch up from the journal).
func (j *Journal) SetRetain(name string, seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.mu.retains[name] = seq
}

// ClearRetain removes a bound set by SetRetain.
func (j *Journal) ClearRetain(name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.mu.retains, name)
}

// BytesAbove returns the bytes held by segments that contain records above
// seq: what retaining everything after seq costs, at segment granularity.
func (j *Journal) BytesAbove(seq uint64) int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	var n int64
	for _, s := range j.mu.segs {
		if s.firstSeq != 0 && s.lastSeq > seq {
			n += s.end
		}
	}
	return n
}

// Trim drops every segment whose records are all at or below the
// checkpoint and every retain bound. The active segment is never dropped.
// The newest dropped files are kept for reuse by the preallocator, the rest
// removed; the directory is fsynced afterwards (a failure of that fsync
// fails the journal).
func (j *Journal) Trim() error {
	j.trimMu.Lock()
	defer j.trimMu.Unlock()
	j.mu.Lock()
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return err
	}
	bound := j.mu.checkpoint
	for _, r := range j.mu.retains {
		bound = min(bound, r)
	}
	n := 0
	for n < len(j.mu.segs)-1 && j.mu.segs[n].lastSeq <= bound {
		n++
	}
	if n == 0 {
		j.mu.Unlock()
		return nil
	}
	victims := j.mu.segs[:n:n]
	needSpare := j.mu.spare == nil
	j.mu.segs = append([]*segment(nil), j.mu.segs[n:]...)
	// Keep the newest victims: dropped files must stay a prefix of the
	// journal, so that after a crash the reappearing ones are contiguous
	// with the live segments. While the preallocator is renaming the
	// oldest trimmed file, that file is still on disk under its old name
	// and older than every file here: removing any of them now could
	// leave a gap in the sequence numbers (recovery would then take the
	// old file to end where the next remaining one begins). The next
	// Trim drops the extras instead.
	j.mu.recycle = append(j.mu.recycle, victims...)
	var drop []*segment
	if extra := len(j.mu.recycle) - keepRecycled; extra > 0 && !j.mu.reusing {
		drop = append(drop, j.mu.recycle[:extra]...)
		j.mu.recycle = append([]*segment(nil), j.mu.recycle[extra:]...)
	}
	j.mu.Unlock()
	if needSpare {
		kick(j.kickPrep)
	}
	var errs []error
	for _, s := range drop {
		if err := s.f.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := j.fs.Remove(s.path); err != nil {
			errs = append(errs, err)
		}
	}
	if len(drop) > 0 {
		if err := j.fs.SyncDir(j.opts.Dir); err != nil {
			return j.fail(fmt.Errorf("sync dir %s: %w", j.opts.Dir, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("journal: trim: %w", errors.Join(errs...))
	}
	return nil
}

// Stats returns a snapshot of the journal's state.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.mu.stats
	s.LastSeq = j.mu.nextSeq - 1
	s.DurableSeq = j.mu.durable
	s.CheckpointSeq = j.mu.checkpoint
	s.Segments = len(j.mu.segs)
	s.FirstSeq = j.firstSeqLocked()
	for _, seg := range j.mu.segs {
		s.Bytes += seg.end
	}
	return s
}

func (j *Journal) firstSeqLocked() uint64 {
	for _, s := range j.mu.segs {
		if s.firstSeq != 0 {
			return s.firstSeq
		}
	}
	return j.mu.nextSeq
}

// Close makes every submitted record durable, stops the background
// goroutines and closes the files. It returns the failure if the journal
// has failed. Readers should be closed first.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.mu.closing {
		j.mu.Unlock()
		return ErrClosed
	}
	j.mu.closing = true
	for j.mu.failed == nil && (j.mu.syncing || len(j.mu.pending.buf) > 0) {
		if !j.mu.syncing {
			j.commitLocked()
			continue
		}
		j.mu.cond.Wait()
	}
	j.mu.cond.Broadcast()
	j.mu.Unlock()
	close(j.done)
	j.wg.Wait()
	j.mu.Lock()
	defer j.mu.Unlock()
	var errs []error
	// Re-read: a background preparation may have failed meanwhile.
	if j.mu.failed != nil {
		errs = append(errs, j.mu.failed)
	}
	files := append(append([]*segment(nil), j.mu.segs...), j.mu.recycle...)
	if j.mu.spare != nil {
		files = append(files, j.mu.spare)
	}
	for _, s := range files {
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("journal: close %s: %w", s.path, err))
		}
	}
	j.mu.segs, j.mu.recycle, j.mu.spare = nil, nil, nil
	return errors.Join(errs...)
}

// isNotExist reports whether err says a file is missing.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Restart drops every record and makes firstSeq the sequence number of the
// next one. It is for a replica whose records are all in its backend and
// whose numbering must jump to another node's (a block resync target: the
// records it lacks are not in any journal, the resync carries their data).
// Every record must be checkpointed (CheckpointSeq == LastSeq) and the
// caller must not append concurrently.
//
// Crash safety: the segments are removed first, then the checkpoint is
// moved to firstSeq-1. A crash in between leaves an empty journal at the
// old numbering, which is equally true (nothing above the checkpoint).
func (j *Journal) Restart(firstSeq uint64) error {
	if firstSeq == 0 || firstSeq > maxSeq {
		return fmt.Errorf("%w: restart at seq %d", ErrInvalid, firstSeq)
	}
	j.trimMu.Lock()
	defer j.trimMu.Unlock()
	j.ckptMu.Lock()
	defer j.ckptMu.Unlock()
	j.mu.Lock()
	// A trimmed file being renamed by the preallocator is the oldest on
	// disk: let it get its new name first, or a crash during the removals
	// below could leave it behind, alone (see Trim).
	for j.mu.reusing && j.mu.failed == nil {
		j.mu.cond.Wait()
	}
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return err
	}
	last := j.mu.nextSeq - 1
	if j.mu.syncing || len(j.mu.pending.buf) > 0 || j.mu.durable != last || j.mu.checkpoint != last {
		j.mu.Unlock()
		return fmt.Errorf("%w: restart with records not checkpointed (last %d, durable %d, checkpoint %d)",
			ErrInvalid, last, j.mu.durable, j.mu.checkpoint)
	}
	if firstSeq == last+1 {
		j.mu.Unlock()
		return nil
	}
	// Oldest first: the trimmed files kept for reuse, then the live
	// segments.
	drop := append(append([]*segment(nil), j.mu.recycle...), j.mu.segs...)
	j.mu.segs, j.mu.recycle = nil, nil
	j.mu.Unlock()

	// One removal, then one directory sync, at a time, oldest first: a
	// crash in between then leaves the newest segments, which end at the
	// checkpoint. Without the syncs a crash may keep a later removal and
	// lose an earlier one, leaving an old segment alone, and recovery
	// would find the journal ending below its checkpoint. Restart is
	// rare (role changes, resyncs); a sync per segment is cheap there.
	closeRest := func(i int) {
		for _, rest := range drop[i+1:] {
			_ = rest.f.Close()
		}
	}
	for i, s := range drop {
		if err := s.f.Close(); err != nil {
			closeRest(i)
			return j.fail(fmt.Errorf("restart: closing %s: %w", s.path, err))
		}
		if err := j.fs.Remove(s.path); err != nil && !isNotExist(err) {
			closeRest(i)
			return j.fail(fmt.Errorf("restart: removing %s: %w", s.path, err))
		}
		if err := j.fs.SyncDir(j.opts.Dir); err != nil {
			closeRest(i)
			return j.fail(fmt.Errorf("sync dir %s: %w", j.opts.Dir, err))
		}
	}
	if err := j.writeCheckpoint(firstSeq - 1); err != nil {
		return j.fail(fmt.Errorf("restart: %w", err))
	}
	// The next record opens a new segment: the spare (wait for the
	// preallocator rather than making one here, so segment ids keep
	// increasing with sequence numbers).
	j.mu.Lock()
	for j.mu.spare == nil && j.mu.failed == nil && !j.mu.closing {
		kick(j.kickPrep)
		j.mu.cond.Wait()
	}
	if err := j.usableLocked(); err != nil {
		j.mu.Unlock()
		return err
	}
	seg := j.mu.spare
	j.mu.spare = nil
	j.mu.Unlock()
	seg.firstSeq, seg.lastSeq, seg.end = 0, 0, 0
	seg.tail, seg.tailKnown = seg.tail[:0], true
	j.mu.Lock()
	j.mu.segs = []*segment{seg}
	j.mu.nextSeq, j.mu.durable, j.mu.checkpoint = firstSeq, firstSeq-1, firstSeq-1
	j.mu.cond.Broadcast()
	j.mu.Unlock()
	kick(j.kickPrep)
	j.log.Info("journal restarted", "dir", j.opts.Dir, "first_seq", firstSeq, "previous_last", last)
	return nil
}
