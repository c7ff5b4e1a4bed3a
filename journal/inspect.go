package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// EntryType says what an Entry describes.
type EntryType int

const (
	EntryCheckpoint EntryType = iota // Seq is the checkpoint
	EntrySegment                     // a segment header (Err if unreadable)
	EntryRecord                      // an intact record of the segment
	EntryEnd                         // where the walk of a segment stopped, and why (Err)
)

// Entry is one item of Inspect's walk.
type Entry struct {
	Type          EntryType
	Segment       string // file name in Dir
	SegmentID     uint64
	Offset        int64  // byte offset in the segment file
	FirstSeq      uint64 // EntrySegment
	Seq           uint64 // EntryRecord, EntryCheckpoint
	SyncedThrough uint64 // EntryRecord, EntrySegment
	Op            Op     // EntryRecord; Data valid only during the callback
	Err           error  // EntrySegment, EntryEnd: nil for a clean end (zeroes)
}

// Inspect walks the journal in opts.Dir read-only (no recovery, nothing is
// modified, so it can run while a daemon has the journal open) and calls fn
// for the checkpoint, each segment header, each intact record and the end
// of each segment. It is what `twinblock journal dump` prints.
func Inspect(opts Options, fn func(Entry) error) error {
	if err := opts.normalize(); err != nil {
		return err
	}
	j := &Journal{opts: opts, fs: opts.FS}
	names, err := j.fs.List(opts.Dir)
	if err != nil {
		return fmt.Errorf("journal: inspect: %w", err)
	}
	for _, n := range names {
		if n == checkpointName {
			ckpt, err := j.readCheckpoint()
			if err != nil {
				return err
			}
			if err := fn(Entry{Type: EntryCheckpoint, Seq: ckpt}); err != nil {
				return err
			}
		}
	}
	for _, n := range names {
		id, ok := parseSegName(n)
		if !ok {
			continue
		}
		if err := j.inspectSegment(n, id, fn); err != nil {
			return err
		}
	}
	return nil
}

func (j *Journal) inspectSegment(name string, id uint64, fn func(Entry) error) (err error) {
	f, err := j.fs.OpenFile(j.path(name), os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: inspect: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("journal: inspect: %w", cerr)
		}
	}()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("journal: inspect: %w", err)
	}
	w := &window{f: f, size: size}
	b, err := w.at(0, segHeaderUsed)
	if err != nil {
		return fmt.Errorf("journal: inspect: %w", err)
	}
	sh, herr := decodeSegmentHeader(b)
	if herr == nil && sh.segID != id {
		herr = fmt.Errorf("stale header of segment %d (recycled or unused file)", sh.segID)
	}
	if errors.Is(herr, errNotRecord) {
		herr = errors.New("no segment header (unused file)")
	}
	e := Entry{Type: EntrySegment, Segment: name, SegmentID: id, FirstSeq: sh.firstSeq, SyncedThrough: sh.syncedThrough, Err: herr}
	if err := fn(e); err != nil || herr != nil {
		return err
	}
	pos := int64(segmentHeaderSize)
	for {
		end := Entry{Type: EntryEnd, Segment: name, SegmentID: id, Offset: pos}
		if pos+recordHeaderSize > size {
			return fn(end)
		}
		b, err := w.at(pos, recordHeaderSize)
		if err != nil {
			return fmt.Errorf("journal: inspect: %w", err)
		}
		h, herr := decodeRecordHeader(b)
		var payload []byte
		switch {
		case errors.Is(herr, errNotRecord):
			if !allZero(b) {
				end.Err = errors.New("garbage (torn write or stale data)")
			}
		case herr != nil:
			end.Err = herr
		case h.segID != id:
			end.Err = fmt.Errorf("stale record of segment %d", h.segID)
		case int64(h.payloadLen) > int64(j.opts.MaxPayload) || pos+recordSize(int(h.payloadLen)) > size:
			end.Err = fmt.Errorf("%w: seq %d payload length %d out of bounds", ErrCorrupt, h.seq, h.payloadLen)
		default:
			rb, err := w.at(pos, recordHeaderSize+int(h.payloadLen))
			if err != nil {
				return fmt.Errorf("journal: inspect: %w", err)
			}
			_, payload, end.Err = decodeRecord(rb, j.opts.MaxPayload)
		}
		if herr != nil || end.Err != nil {
			return fn(end)
		}
		op := Op{Kind: h.kind, Offset: h.offset, Length: h.length, NoHole: h.flags&flagNoHole != 0}
		if h.kind == KindWrite {
			op.Data = payload
		}
		if err := fn(Entry{Type: EntryRecord, Segment: name, SegmentID: id, Offset: pos,
			Seq: h.seq, SyncedThrough: h.syncedThrough, Op: op}); err != nil {
			return err
		}
		pos += recordSize(int(h.payloadLen))
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Dump writes a human-readable listing of Inspect's walk to w.
func Dump(opts Options, w io.Writer) error {
	return Inspect(opts, func(e Entry) error {
		var err error
		switch e.Type {
		case EntryCheckpoint:
			_, err = fmt.Fprintf(w, "checkpoint %d\n", e.Seq)
		case EntrySegment:
			if e.Err != nil {
				_, err = fmt.Fprintf(w, "segment %s id=%d: %v\n", e.Segment, e.SegmentID, e.Err)
			} else {
				_, err = fmt.Fprintf(w, "segment %s id=%d first=%d\n", e.Segment, e.SegmentID, e.FirstSeq)
			}
		case EntryRecord:
			extra := ""
			if e.Op.NoHole {
				extra = " nohole"
			}
			_, err = fmt.Fprintf(w, "  @%-10d seq=%d %s off=%d len=%d synced=%d%s\n",
				e.Offset, e.Seq, e.Op.Kind, e.Op.Offset, e.Op.Length, e.SyncedThrough, extra)
		case EntryEnd:
			if e.Err != nil {
				_, err = fmt.Fprintf(w, "  @%-10d end: %v\n", e.Offset, e.Err)
			} else {
				_, err = fmt.Fprintf(w, "  @%-10d end\n", e.Offset)
			}
		}
		return err
	})
}
