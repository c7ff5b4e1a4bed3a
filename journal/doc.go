// Package journal is twinblock's write-ahead journal: a segmented,
// checksummed log of block operations (write, trim, write-zeroes). Every
// operation a volume accepts is made durable here before it is
// acknowledged; the backend is updated from the journal; a restart replays
// it; the replication layer ships its records to the peer, and a lagging
// peer catches up from it. The package imports nothing of twinblock's.
//
// # Tutorial
//
//	j, err := journal.Open(journal.Options{Dir: "/var/lib/twinblock/vol0/journal"})
//	// Open recovered the journal. Re-apply what the backend may lack:
//	err = j.Replay(j.Stats().CheckpointSeq+1, func(seq uint64, op journal.Op) error {
//		return backend.Apply(op) // op.Data is only valid during the call
//	})
//	// Hot path: many goroutines at once; each call returns once durable.
//	seq, err := j.Append(journal.Op{Kind: journal.KindWrite, Offset: off, Length: uint32(len(p)), Data: p})
//	// Or pipeline: Submit returns at once, WaitDurable/DurableSeq tell when.
//	seq, err = j.Submit(op)
//	err = j.WaitDurable(seq)
//	// After the backend flushed everything through seq n:
//	err = j.Checkpoint(n)
//	j.SetRetain("peer", peerAckedSeq) // keep what the peer still needs
//	err = j.Trim()                    // drop/recycle segments below both
//	// Catch-up of a peer while appends continue:
//	r, err := j.NewReader(peerAckedSeq + 1)
//	for { rec, err := r.Next(); if err == io.EOF { /* caught up for now */ } ... }
//	// Admin: journal.Dump(journal.Options{Dir: dir}, os.Stdout) lists every
//	// record with its segment and offset, read-only.
//
// # Contract
//
//   - Sequence numbers are assigned by the journal, strictly increasing by
//     one, starting at Options.FirstSeq for a new journal. Records become
//     durable in sequence order: DurableSeq() == n means every record <= n
//     is durable.
//   - All methods are safe for concurrent use. Append, Submit and Op.Data:
//     the journal copies the data before returning; the caller may reuse it.
//     Data handed out by Replay and Reader.Next is only valid until the
//     callback returns or the next Next call.
//   - Group commit: a caller of Append or WaitDurable whose record is not
//     durable and finds no sync running runs one itself (so a lone
//     appender pays one write plus one fdatasync, no goroutine hand-off);
//     everything queued while a sync runs goes into the next one, which
//     starts as soon as the running one ends. There is no timer. Records
//     queued by Submit with nobody waiting are synced by a background
//     goroutine.
//   - Failure is sticky: if a write or fdatasync of the write path, a
//     segment preallocation or a directory fsync fails, the journal is
//     unusable: every waiter and every later Append, Submit, WaitDurable,
//     Checkpoint, Trim and Close returns an error wrapping ErrFailed and the
//     original error. It is logged once at Error level. fsync is never
//     retried: after a failed fsync the kernel may have dropped the dirty
//     pages, so a later successful fsync proves nothing. Reopen the journal
//     (recovery re-reads what is really on disk). Read errors (Replay,
//     Reader) fail only that read.
//   - Append returns the assigned seq together with the error if the
//     record was queued but not made durable: after a restart it may or may
//     not be there, but it is never damaged and never half-applied.
//   - Checkpoint(n) requires n <= DurableSeq. Trim removes segments whose
//     records are all <= min(checkpoint, every SetRetain bound); the active
//     segment is never removed. Replay/NewReader below the first retained
//     record fail with ErrTrimmed (the peer then needs a resync).
//   - Close makes every submitted record durable first. Close readers first.
//
// # Files
//
// Dir holds <16 hex digit segment id>.seg files, the checkpoint file
// "checkpoint" and, after a repair, *.broken copies. docs/formats.md
// has the byte layout. A segment is preallocated (fallocate, then zeroes
// written, fsync, directory fsync) by a background goroutine before it is
// needed, or made from a trimmed segment file by renaming it (recycling;
// its old records carry another segment id and are never read as records
// of the new segment). Records are 512-byte aligned; each carries its
// segment id, its seq and "syncedThrough": the highest seq known durable
// when it was encoded. The checkpoint is a separate small file replaced
// atomically (write temp, fsync, rename, fsync directory): it changes
// rarely, and a file keeps Trim and the start of recovery simple.
//
// # Recovery
//
// Open reads the checkpoint c, then scans records in order from the
// segment holding c+1 (older segments, kept for the peer, have only their
// headers checked; a Reader verifies their records when it reads them).
// The scan stops at the first position P that does not hold the expected
// record E intact (with this segment's id), unless the next segment starts
// exactly at E (the normal end of a full segment). What follows P decides:
//
//	after P (rest of this segment, later segments)         decision
//	--------------------------------------------------------------------------
//	a header of ours with syncedThrough >= E               ErrCorrupt (refuse):
//	                                                       it was written after E
//	                                                       was durable, so E was
//	                                                       acknowledged and is now
//	                                                       damaged: bit rot, not a
//	                                                       crash. Repair from peer.
//	headers of ours, all with syncedThrough < E            torn tail: the last group
//	(or the record at P is ours but damaged)               commit was cut by the crash
//	                                                       and none of it was acked.
//	                                                       Copy segment to .broken,
//	                                                       zero from P, fsync; later
//	                                                       segments with such headers
//	                                                       are renamed to .broken.
//	nothing of ours: zeroes, garbage without a valid       clean end. Nothing to cut
//	header, stale records of a recycled file (other id)    (the next append overwrites).
//	checkpoint above the last record, records missing      ErrCorrupt.
//	after the checkpoint, a valid header with the wrong
//	first seq
//	a header with a valid checksum but a newer version     ErrVersion (refuse).
//
// "Ours" means a record or segment header whose checksum is valid and
// whose segment id is that of the file it is in. Why the syncedThrough
// rule is sound: a group commit is only written once the previous one is
// durable, so a record that was never acknowledged is always followed
// only by records with syncedThrough < its seq; a torn commit can leave
// holes and survivors in any order (sectors are not written in order) and
// is still cut, never reported as corruption. The limit: damage to the
// last acknowledged records with nothing of ours written after them looks
// exactly like a torn tail and is cut; only the peer's copy can tell.
//
// # Disk assumptions
//
//   - A sector write is not atomic: after a crash a 512-byte sector may
//     hold any mix of old and new bytes, and the sectors of one write may
//     persist in any subset and order. Checksums on header and payload,
//     the segment id and seq in every record, and the table above cover it.
//   - Bytes that were durable stay intact when a later write to a
//     neighbouring region of the same sector or page is torn (the device
//     does not corrupt data it is not asked to change). Records are
//     aligned to 512 bytes; a 4 KiB payload takes 4608 bytes on disk.
//   - fdatasync makes written data and the size of the file durable; it
//     does not make a new directory entry durable. Creating, renaming or
//     removing a file is durable only after fsync of the directory, which
//     the journal does after each of them, before using the file.
//   - A preallocated file (fallocate plus zeroes written plus fdatasync,
//     then directory fsync) keeps its size and allocation after a crash, so
//     later appends need no metadata update; zero-filling also avoids the
//     unwritten-extent conversion that makes fdatasync on ext4/XFS slower.
//   - A failed fsync leaves the file in an unknown state (see Failure).
//   - Renaming over a file is atomic (the checkpoint relies on it).
//   - Nobody else writes in Dir while the journal is open (no lock file:
//     the daemon owns the directory).
//
// # Testing helpers
//
// Package journal/vfs holds the FS interface all disk access goes
// through, the OS implementation, MemFS (which can Crash: keep what was
// synced plus a random, torn part of the rest, and forget directory
// entries that were not fsynced) and FailFS (fail the Nth operation).
package journal
