package journal

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/twinblock/twinblock/journal/vfs"
)

// Record is a record read back from the journal.
type Record struct {
	Seq uint64
	// Op.Data aliases the reader's buffer: valid until the next call.
	Op Op
}

// Reader reads durable records in sequence order while the journal keeps
// appending (replication catch-up, replay). It opens its own file handles.
// A Reader is not safe for concurrent use; several Readers may run at once.
type Reader struct {
	j       *Journal
	next    uint64
	segID   uint64
	segPath string
	segLast uint64 // last seq of the segment as known at lookup
	f       vfs.File
	w       *window
	pos     int64
	err     error
}

// NewReader returns a reader whose first record is from. It fails with
// ErrTrimmed if from is no longer retained and ErrOutOfRange if from is
// beyond the next sequence number to be assigned.
func (j *Journal) NewReader(from uint64) (*Reader, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.mu.closing {
		return nil, ErrClosed
	}
	if first := j.firstSeqLocked(); from < first {
		return nil, fmt.Errorf("%w: seq %d, first retained %d", ErrTrimmed, from, first)
	}
	if from > j.mu.nextSeq {
		return nil, fmt.Errorf("%w: seq %d, next is %d", ErrOutOfRange, from, j.mu.nextSeq)
	}
	return &Reader{j: j, next: from}, nil
}

// Next returns the next record. It returns io.EOF when the next record is
// not durable yet (call again later), ErrTrimmed if it was trimmed while
// reading, ErrCorrupt if it is damaged. Other errors are sticky.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	if r.next > r.j.DurableSeq() {
		return Record{}, io.EOF
	}
	if r.f == nil || r.next > r.segLast {
		if err := r.locate(); err != nil {
			r.err = err
			return Record{}, err
		}
	}
	for {
		h, payload, size, err := r.readAt(r.pos)
		if err != nil {
			r.err = err
			return Record{}, err
		}
		if h.seq < r.next {
			r.pos += size // positioning inside the first segment
			continue
		}
		if h.seq != r.next {
			r.err = r.bad(r.pos, fmt.Errorf("found seq %d, expected %d", h.seq, r.next))
			return Record{}, r.err
		}
		r.pos += size
		r.next++
		op := Op{Kind: h.kind, Offset: h.offset, Length: h.length, NoHole: h.flags&flagNoHole != 0}
		if h.kind == KindWrite {
			op.Data = payload
		}
		return Record{Seq: h.seq, Op: op}, nil
	}
}

// locate finds and opens the segment holding r.next.
func (r *Reader) locate() error {
	j := r.j
	j.mu.Lock()
	var seg *segment
	for _, s := range j.mu.segs {
		if s.firstSeq != 0 && s.firstSeq <= r.next {
			seg = s
		}
	}
	if seg == nil {
		j.mu.Unlock()
		return fmt.Errorf("%w: seq %d", ErrTrimmed, r.next)
	}
	id, path, last := seg.id, seg.path, seg.lastSeq
	j.mu.Unlock()
	r.segLast = last
	if r.f != nil && id == r.segID {
		return nil
	}
	if r.f != nil {
		f := r.f
		r.f = nil
		if err := f.Close(); err != nil {
			return err
		}
	}
	f, err := j.fs.OpenFile(path, os.O_RDONLY, 0)
	if isNotExist(err) {
		return fmt.Errorf("%w: segment %s: %w", ErrTrimmed, path, err)
	}
	if err != nil {
		return err
	}
	size, err := f.Size()
	if err != nil {
		return errors.Join(err, f.Close())
	}
	r.f, r.segID, r.segPath, r.pos = f, id, path, segmentHeaderSize
	r.w = &window{f: f, size: size}
	return nil
}

// readAt decodes the record at pos. The window may hold bytes read before
// the record was written, so a failure is retried once with a fresh read
// before it counts.
func (r *Reader) readAt(pos int64) (recordHeader, []byte, int64, error) {
	var last error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt == 1 {
			r.w.n = 0
		}
		b, err := r.w.at(pos, recordHeaderSize)
		if err != nil {
			return recordHeader{}, nil, 0, err
		}
		h, err := decodeRecordHeader(b)
		if err != nil {
			last = err
			continue
		}
		if h.segID != r.segID {
			last = fmt.Errorf("record of segment %d", h.segID)
			continue
		}
		size := recordSize(int(h.payloadLen))
		if int64(h.payloadLen) > int64(r.j.opts.MaxPayload) || pos+size > r.w.size {
			last = fmt.Errorf("payload length %d out of bounds", h.payloadLen)
			continue
		}
		b, err = r.w.at(pos, recordHeaderSize+int(h.payloadLen))
		if err != nil {
			return recordHeader{}, nil, 0, err
		}
		h, payload, err := decodeRecord(b, r.j.opts.MaxPayload)
		if err != nil {
			last = err
			continue
		}
		return h, payload, size, nil
	}
	return recordHeader{}, nil, 0, r.bad(pos, last)
}

// bad classifies a record that cannot be read: trimmed (the segment left
// the journal, its file may be reused) or corrupt.
func (r *Reader) bad(pos int64, cause error) error {
	r.j.mu.Lock()
	live := false
	for _, s := range r.j.mu.segs {
		live = live || s.id == r.segID
	}
	r.j.mu.Unlock()
	if !live {
		return fmt.Errorf("%w: segment %s", ErrTrimmed, r.segPath)
	}
	return fmt.Errorf("%w: segment %s offset %d: seq %d: %w", ErrCorrupt, r.segPath, pos, r.next, cause)
}

// Close releases the reader's file handle.
func (r *Reader) Close() error {
	if r.err == nil {
		r.err = ErrClosed
	}
	if r.f == nil {
		return nil
	}
	f := r.f
	r.f = nil
	return f.Close()
}

// Replay calls fn for every record from `from` through the durable
// sequence number at the time of the call, in order. op.Data is only valid
// during the call. An error from fn stops the replay and is returned.
func (j *Journal) Replay(from uint64, fn func(seq uint64, op Op) error) (err error) {
	limit := j.DurableSeq()
	r, err := j.NewReader(from)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := r.Close(); err == nil {
			err = cerr
		}
	}()
	for r.next <= limit {
		rec, err := r.Next()
		if err != nil {
			return err
		}
		if err := fn(rec.Seq, rec.Op); err != nil {
			return err
		}
	}
	return nil
}
