// Package rbd is the backend.Backend for a Ceph RBD image, through
// go-ceph's librados and librbd bindings.
//
// The implementation needs cgo, librbd and librados, so it is built only
// with the build tags "ceph" (ours) and "pacific" (go-ceph's, for the Ceph
// 16 libraries Debian 12 ships):
//
//	make build-ceph                                  # or:
//	go build -tags ceph,pacific ./cmd/twinblock
//
// Without the tags the package holds only Options and the errors below, and
// Supported is false: the default build stays pure Go (CGO_ENABLED=0).
//
// # Using it
//
//	b, err := rbd.Open(rbd.Options{ConfFile: "/etc/ceph/ceph.conf", Client: "twinblock",
//		Keyring: "/etc/ceph/ceph.client.twinblock.keyring", Pool: "rbd", Image: "vol0"})
//	b, err := rbd.Create(opts, 100<<30) // a new image; ErrExists if it is there
//
// # Settings the backend forces
//
// Whatever ceph.conf says, the connection runs with
//
//	rbd_cache = false                     every write has reached the OSDs when WriteAt returns
//	rbd_skip_partial_discard = false      Discard of part of an object zeroes that part
//	rbd_discard_on_zeroed_write_same = false  WriteZeroes(keepAllocated) really writes
//	client_mount_timeout, rados_mon_op_timeout = Options.ConnectTimeout (default 10s)
//	rados_osd_op_timeout = Options.OpTimeout (default 60s)
//
// The cache is off because the engine's journal is the durability point and
// a write the backend has "applied" must survive the client's crash; with
// the cache on, small writes sit in the client's memory until a flush. The
// discard setting matters because the two replicas of a volume must stay
// byte-identical: librbd skips a discard of less than an object's granule
// by default, leaving the old data readable.
//
// # Bad settings fail at Open, naming the cause
//
// A missing ceph.conf or keyring file, a cluster that does not answer within
// ConnectTimeout (ErrUnreachable), a refused key (ErrAuth), a missing pool
// (ErrNoPool), namespace (ErrNoNamespace) or image (ErrNoImage). Every one
// also matches backend.ErrConfig.
//
// # I/O
//
// ReadAt and WriteAt are rbd_read and rbd_write on one image handle, which
// librbd allows from many threads at once: each goroutine's request is in
// flight independently, so the engine's applier keeps many writes on the
// wire. Discard and WriteZeroes(keepAllocated=false) are rbd_discard;
// WriteZeroes(keepAllocated=true) is rbd_writesame of a zero sector (plus a
// plain write of a sub-sector tail). Flush is rbd_flush; its first error is
// sticky, like the file backend's. Resize grows the image online
// (rbd_resize) and refuses to shrink (backend.ErrShrink).
//
// Create makes images with only the layering feature. exclusive-lock (and
// object-map, which needs it) is left off on purpose: after a kill -9 the
// dead client's lock is only broken once its watch times out (30 s), and
// every write of the restarted daemon would wait for that. The engine
// already guarantees one writer per volume.
package rbd
