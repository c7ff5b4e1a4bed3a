// Package file is the backend.Backend for a regular file or a raw block
// device, the embedded default.
//
//	b, err := file.Create("/srv/vol0.img", 100<<30, file.Options{}) // sparse, 100 GiB
//	b, err := file.Open("/dev/vg0/vol0", file.Options{})            // existing file or device
//	b, err := file.Open(path, file.Options{ReadOnly: true})         // writes fail with backend.ErrReadOnly
//
// Create makes a sparse file with ftruncate (no space used until written),
// syncs it and its directory, and refuses to reuse a non-empty file unless
// Options.Overwrite is set (ErrExists, which also matches fs.ErrExist).
// Open accepts a regular file or a block device and nothing else
// (backend.ErrConfig). A block device's size comes from BLKGETSIZE64; a
// read-write open of one uses O_EXCL, so it fails with EBUSY while the
// device is mounted or claimed.
//
// I/O is buffered pread/pwrite through os.File, safe for concurrent use.
// Flush is fdatasync. Flush calls are serialized and the first error is
// sticky: every later Flush returns it without calling fdatasync again,
// because Linux reports a writeback error only once and may already have
// dropped the pages it could not write.
//
// Discard and WriteZeroes map to fallocate:
//
//	Discard, WriteZeroes(keep=false)  FALLOC_FL_PUNCH_HOLE|KEEP_SIZE
//	WriteZeroes(keep=true)            FALLOC_FL_ZERO_RANGE|KEEP_SIZE
//
// On a block device Linux implements both with REQ_OP_WRITE_ZEROES, which
// guarantees zeroes (BLKDISCARD does not, so it is never used); requests are
// aligned to the logical block size and the unaligned edges written. If
// fallocate is unsupported a block device falls back to BLKZEROOUT, and
// anything else to writing zeroes; a missing fast path is remembered so it
// costs one failed syscall, not one per request.
//
// Resize grows a regular file with ftruncate and makes the new size durable
// with Flush. A block device is grown outside (lvextend, losetup -c) and
// Resize then accepts any size up to the device's new size. Shrinking is
// refused with backend.ErrShrink.
//
// Close is idempotent and does not flush. O_DIRECT is not used: the engine's
// journal is the durability point and the backend is flushed at
// checkpoints, so the page cache only helps.
package file
