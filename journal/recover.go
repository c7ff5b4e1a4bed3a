package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/twinblock/twinblock/journal/vfs"
)

// scanSeg is a segment file found by recovery.
type scanSeg struct {
	id     uint64
	path   string
	f      vfs.File
	size   int64
	hdr    segmentHeader
	hdrErr error // nil: a valid header of this segment (id matches the name)
}

// window reads a file through a buffer, so that scanning a segment costs a
// few large reads instead of two small ones per record.
type window struct {
	f    vfs.File
	size int64
	buf  []byte
	off  int64
	n    int
}

// at returns up to n bytes at off; fewer only at the end of the file.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(w.n) {
		return w.buf[off-w.off : off-w.off+int64(n)], nil
	}
	want := max(n, zeroChunk)
	if rest := w.size - off; int64(want) > rest {
		want = int(max(rest, 0))
	}
	if cap(w.buf) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	m, err := w.f.ReadAt(w.buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		w.n = 0
		return nil, err
	}
	w.off, w.n = off, m
	return w.buf[:min(n, m)], nil
}

func (j *Journal) corrupt(path string, off int64, format string, args ...any) error {
	return fmt.Errorf("%w: segment %s offset %d: %s", ErrCorrupt, path, off, fmt.Sprintf(format, args...))
}

// recover rebuilds the journal state from Dir. See "Recovery" in doc.go.
func (j *Journal) recover() (err error) {
	fsys, dir := j.fs, j.opts.Dir
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("journal: open: %w", err)
	}
	names, err := fsys.List(dir)
	if err != nil {
		return fmt.Errorf("journal: open: %w", err)
	}
	var ids []uint64
	hasCkpt := false
	for _, n := range names {
		switch n {
		case checkpointName:
			hasCkpt = true
		case checkpointTmp:
			// A checkpoint that was never renamed into place.
			if err := fsys.Remove(j.path(n)); err != nil {
				return fmt.Errorf("journal: open: %w", err)
			}
		default:
			if id, ok := parseSegName(n); ok {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	var ckpt uint64
	if hasCkpt {
		if ckpt, err = j.readCheckpoint(); err != nil {
			return err
		}
	} else {
		if len(ids) > 0 {
			return fmt.Errorf("%w: %s has segments but no checkpoint file", ErrCorrupt, dir)
		}
		// A new journal: the checkpoint file goes first, so that segments
		// never exist without it.
		ckpt = j.opts.FirstSeq - 1
		if err := j.writeCheckpoint(ckpt); err != nil {
			return err
		}
	}

	segs := make([]*scanSeg, 0, len(ids))
	kept := map[*scanSeg]bool{}
	defer func() {
		if err != nil {
			for _, s := range segs {
				if !kept[s] {
					_ = s.f.Close() // Open fails anyway; report the first error
				}
			}
			for _, s := range j.mu.segs {
				_ = s.f.Close()
			}
			if j.mu.spare != nil {
				_ = j.mu.spare.f.Close()
			}
			j.mu.segs, j.mu.spare = nil, nil
		}
	}()
	for _, id := range ids {
		s := &scanSeg{id: id, path: j.path(segName(id))}
		if s.f, err = fsys.OpenFile(s.path, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("journal: open: %w", err)
		}
		segs = append(segs, s)
		if s.size, err = s.f.Size(); err != nil {
			return fmt.Errorf("journal: open: %w", err)
		}
		buf := make([]byte, segHeaderUsed)
		if _, rerr := s.f.ReadAt(buf, 0); rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("journal: open: %w", rerr)
		}
		s.hdr, s.hdrErr = decodeSegmentHeader(buf)
		if errors.Is(s.hdrErr, ErrVersion) {
			return fmt.Errorf("segment %s: %w", s.path, s.hdrErr)
		}
		if s.hdrErr == nil && s.hdr.segID != id {
			// A recycled file still carrying its previous identity.
			s.hdrErr = fmt.Errorf("stale header of segment %d", s.hdr.segID)
		}
	}
	j.mu.nextID = 1
	if len(ids) > 0 {
		j.mu.nextID = ids[len(ids)-1] + 1
	}
	j.mu.checkpoint = ckpt

	if len(segs) == 0 {
		seg, err := j.prepare(j.mu.nextID, nil)
		if err != nil {
			return fmt.Errorf("journal: create first segment: %w", err)
		}
		j.mu.nextID++
		j.mu.segs = []*segment{seg}
		j.mu.nextSeq, j.mu.durable = ckpt+1, ckpt
		return nil
	}

	// Start at the last segment whose first record is at or before the
	// checkpoint's successor. Segments before it are retained for readers
	// and only have their headers checked here.
	start := -1
	for i, s := range segs {
		if s.hdrErr != nil {
			break
		}
		if i > 0 && s.hdr.firstSeq <= segs[i-1].hdr.firstSeq {
			return j.corrupt(s.path, 0, "first seq %d not above previous segment's %d", s.hdr.firstSeq, segs[i-1].hdr.firstSeq)
		}
		if s.hdr.firstSeq <= ckpt+1 {
			start = i
		}
	}
	k, p, expected := 0, int64(0), ckpt+1
	if start >= 0 {
		k, p, expected = start, segmentHeaderSize, segs[start].hdr.firstSeq
	} else if segs[0].hdrErr == nil {
		return j.corrupt(segs[0].path, 0, "first record %d but checkpoint is %d: records missing", segs[0].hdr.firstSeq, ckpt)
	}

	// Walk records in order until the first one that is not the expected
	// record of this segment.
	w := &window{f: segs[k].f, size: segs[k].size}
	for {
		s := segs[k]
		if p == 0 {
			if s.hdrErr == nil && s.hdr.firstSeq == expected {
				p = segmentHeaderSize
				continue
			}
			if s.hdrErr == nil {
				return j.corrupt(s.path, 0, "segment starts at seq %d, expected %d", s.hdr.firstSeq, expected)
			}
			break
		}
		h, size, ok, ours, err := j.recordAt(w, s, p, expected)
		if err != nil {
			return err
		}
		if ok {
			p += size
			expected = h.seq + 1
			continue
		}
		if !ours && k+1 < len(segs) && segs[k+1].hdrErr == nil && segs[k+1].hdr.firstSeq == expected {
			k, p = k+1, segmentHeaderSize
			w = &window{f: segs[k].f, size: segs[k].size}
			continue
		}
		break
	}
	if expected-1 < ckpt {
		return j.corrupt(segs[k].path, p, "journal ends at seq %d below checkpoint %d", expected-1, ckpt)
	}
	if err := j.resolveEnd(segs, k, p, expected, kept); err != nil {
		return err
	}
	if p == segmentHeaderSize {
		// A header without records: rewrite it with the next record.
		p = 0
	}

	for i := 0; i <= k; i++ {
		s := segs[i]
		seg := &segment{id: s.id, path: s.path, f: s.f, size: s.size, end: s.size}
		kept[s] = true
		switch {
		case i < k:
			seg.firstSeq = s.hdr.firstSeq
			if i+1 < k || p > 0 {
				seg.lastSeq = segs[i+1].hdr.firstSeq - 1
			} else {
				seg.lastSeq = expected - 1
			}
		case p > 0:
			seg.firstSeq, seg.lastSeq, seg.end = s.hdr.firstSeq, expected-1, p
		default:
			seg.end, seg.tailKnown = 0, true
		}
		j.mu.segs = append(j.mu.segs, seg) // from here closed on error
		if i == k && p > 0 {
			if err := j.loadTail(seg); err != nil {
				return err
			}
		}
	}
	j.mu.nextSeq, j.mu.durable = expected, expected-1
	return nil
}

// loadTail reads the partial block at the end of the active segment, which
// the next commit writes again (see writeChunk). Recovery has just read
// these bytes, so an error here is an I/O error like any other at open.
func (j *Journal) loadTail(seg *segment) error {
	blk := seg.end - seg.end%writeAlign
	tail := make([]byte, seg.end-blk, writeAlign)
	if n, err := seg.f.ReadAt(tail, blk); n < len(tail) {
		return fmt.Errorf("journal: open: reading the tail block of %s at %d: %w", seg.path, blk, err)
	}
	seg.tail, seg.tailKnown = tail, true
	return nil
}

// recordAt reads the record at p of s. ok: it is the expected record,
// intact. ours: a header of this segment is there (intact or not), which
// is evidence that data of this segment was written at p. size is the
// record's on-disk size when ok.
func (j *Journal) recordAt(w *window, s *scanSeg, p int64, expected uint64) (h recordHeader, size int64, ok, ours bool, err error) {
	b, err := w.at(p, recordHeaderSize)
	if err != nil {
		return h, 0, false, false, fmt.Errorf("journal: open: %w", err)
	}
	h, herr := decodeRecordHeader(b)
	if errors.Is(herr, ErrVersion) {
		return h, 0, false, false, fmt.Errorf("segment %s offset %d: %w", s.path, p, herr)
	}
	if herr != nil || h.segID != s.id {
		return h, 0, false, false, nil
	}
	if h.seq != expected || int64(h.payloadLen) > int64(j.opts.MaxPayload) {
		return h, 0, false, true, nil
	}
	size = recordSize(int(h.payloadLen))
	if p+size > s.size {
		return h, 0, false, true, nil
	}
	rec, err := w.at(p, int(recordHeaderSize+h.payloadLen))
	if err != nil {
		return h, 0, false, false, fmt.Errorf("journal: open: %w", err)
	}
	if _, _, derr := decodeRecord(rec, j.opts.MaxPayload); derr != nil {
		return h, 0, false, true, nil
	}
	return h, size, true, true, nil
}

// evidence scans segs[k] from p, and every later segment whole, for headers
// of their own segment: records or segment headers written by this journal.
// It returns, per segment, whether any was found, and the highest
// syncedThrough among them.
func (j *Journal) evidence(segs []*scanSeg, k int, p int64) (found []bool, maxSynced uint64, where string, err error) {
	found = make([]bool, len(segs))
	for i := k; i < len(segs); i++ {
		s := segs[i]
		from := max(p, segmentHeaderSize)
		if i > k {
			from = segmentHeaderSize
			if s.hdrErr == nil {
				found[i] = true
				if s.hdr.syncedThrough >= maxSynced {
					maxSynced = s.hdr.syncedThrough
					where = fmt.Sprintf("the header of segment %s (first seq %d)", s.path, s.hdr.firstSeq)
				}
			}
		}
		w := &window{f: s.f, size: s.size}
		for off := from; off+recordHeaderSize <= s.size; off += sectorSize {
			b, err := w.at(off, recordHeaderSize)
			if err != nil {
				return nil, 0, "", fmt.Errorf("journal: open: %w", err)
			}
			h, herr := decodeRecordHeader(b)
			if herr != nil || h.segID != s.id {
				continue
			}
			found[i] = true
			if h.syncedThrough >= maxSynced && (where == "" || h.syncedThrough > maxSynced) {
				maxSynced = h.syncedThrough
				where = fmt.Sprintf("seq %d at segment %s offset %d", h.seq, s.path, off)
			}
		}
	}
	return found, maxSynced, where, nil
}

// resolveEnd decides what the first position (segs[k], p) that does not
// hold the expected record means, and repairs the tail:
//
//   - a header of this journal after it whose syncedThrough >= expected was
//     written after `expected` had been made durable: the record was acked
//     and is now damaged: ErrCorrupt, nothing is changed;
//   - other headers of this journal after it belong to the last, unsynced
//     group commit: a torn tail. segs[k] is copied to <name>.broken, then
//     zeroed from p; later segments holding such headers are renamed to
//     <name>.broken;
//   - nothing of this journal after it (zeroes, a recycled file's stale
//     records, garbage without a valid header): the clean end.
//
// Later segments without evidence are spares: the first becomes the
// preallocated spare, the others are removed.
func (j *Journal) resolveEnd(segs []*scanSeg, k int, p int64, expected uint64, kept map[*scanSeg]bool) error {
	found, maxSynced, where, err := j.evidence(segs, k, p)
	if err != nil {
		return err
	}
	anyFound := slices.Contains(found[k:], true)
	if anyFound && maxSynced >= expected {
		return j.corrupt(segs[k].path, p, "seq %d is damaged or missing, but %s was written after it had become durable", expected, where)
	}
	dirty := false
	if found[k] {
		s := segs[k]
		j.log.Warn("journal: cutting torn tail", "segment", s.path, "offset", p, "seq", expected)
		if err := j.copyAside(s); err != nil {
			return err
		}
		if err := j.fill(s.f, p, s.size); err != nil {
			return fmt.Errorf("journal: cut torn tail of %s: %w", s.path, err)
		}
		dirty = true
	}
	for i := k + 1; i < len(segs); i++ {
		s := segs[i]
		kept[s] = true // closed here, or handed over as the spare
		switch {
		case found[i]:
			j.log.Warn("journal: moving aside segment written after the torn tail", "segment", s.path)
			err = errors.Join(s.f.Close(), j.fs.Rename(s.path, s.path+brokenSuffix))
		case j.mu.spare == nil && s.size == j.opts.SegmentSize:
			j.mu.spare = &segment{id: s.id, path: s.path, f: s.f, size: s.size, tailKnown: true}
			continue
		default:
			err = errors.Join(s.f.Close(), j.fs.Remove(s.path))
		}
		if err != nil {
			return fmt.Errorf("journal: open: %w", err)
		}
		dirty = true
	}
	if dirty {
		if err := j.fs.SyncDir(j.opts.Dir); err != nil {
			return fmt.Errorf("journal: open: sync dir: %w", err)
		}
	}
	return nil
}

// copyAside writes a durable copy of s to <name>.broken before the tail is
// cut, for forensics (like etcd's wal repair).
func (j *Journal) copyAside(s *scanSeg) error {
	dst := s.path + brokenSuffix
	f, err := j.fs.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("journal: copy %s aside: %w", s.path, err)
	}
	buf := make([]byte, min(zeroChunk, s.size))
	for off := int64(0); off < s.size; off += int64(len(buf)) {
		n, rerr := s.f.ReadAt(buf, off)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return errors.Join(fmt.Errorf("journal: copy %s aside: %w", s.path, rerr), f.Close())
		}
		if _, werr := f.WriteAt(buf[:n], off); werr != nil {
			return errors.Join(fmt.Errorf("journal: copy %s aside: %w", s.path, werr), f.Close())
		}
		if n < len(buf) {
			break
		}
	}
	if err := f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("journal: copy %s aside: %w", s.path, err), f.Close())
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("journal: copy %s aside: %w", s.path, err)
	}
	if err := j.fs.SyncDir(j.opts.Dir); err != nil {
		return fmt.Errorf("journal: copy %s aside: sync dir: %w", s.path, err)
	}
	return nil
}

func (j *Journal) readCheckpoint() (uint64, error) {
	f, err := j.fs.OpenFile(j.path(checkpointName), os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("journal: open checkpoint: %w", err)
	}
	buf := make([]byte, checkpointSize)
	n, rerr := f.ReadAt(buf, 0)
	cerr := f.Close()
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return 0, fmt.Errorf("journal: read checkpoint: %w", rerr)
	}
	if cerr != nil {
		return 0, fmt.Errorf("journal: read checkpoint: %w", cerr)
	}
	ckpt, err := decodeCheckpoint(buf[:n])
	if err != nil {
		return 0, fmt.Errorf("%s: %w", j.path(checkpointName), err)
	}
	return ckpt, nil
}
