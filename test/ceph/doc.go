// Package ceph tests twinblock on Ceph RBD end to end, against real
// throw-away clusters started by scripts/ceph-cluster.sh. Every file but
// this one is behind the build tag "ceph":
//
//	make test-ceph
//	go test -tags ceph,pacific ./test/ceph/    # starts its own two clusters
//
// TestMain builds ./cmd/twinblock with -tags ceph,pacific and uses the
// clusters TWINBLOCK_CEPH_A and TWINBLOCK_CEPH_B name (directories made by
// the script, as make test-ceph does), or starts two itself and stops them
// at the end. Cluster a and cluster b stand for two datacenters. The
// processes, nodes, status polls and verified loads are test/testenv's,
// shared with test/e2e.
//
//	TestRBDVolumeNBD        qemu-io patterns, write-zeroes, discard, then
//	                        fio --ioengine=nbd --verify=crc32c on an
//	                        rbd-backed volume; the bytes reach the image
//	                        (rbd export) and survive a restart
//	TestRBDServeBadSettings serve refuses a missing image or pool, or a bad
//	                        keyring, before exporting, and says which
//	TestRBDCreate           create makes the image, refuses an existing one
//	                        unless --existing, leaves nothing behind on failure
//	TestRBDClusterOutage    the OSD paused under load: EIO within op_timeout,
//	                        every acknowledged write there after a restart
//	TestRBDPairKill9        a sync pair RBD (cluster a) -> RBD (cluster b):
//	                        verified write load, kill -9 (and site loss) of
//	                        the primary, promote: every acknowledged write
//	                        is on the secondary
//	TestMigrateFileToRBD    a file-backed primary under load gets an
//	                        rbd-backed secondary, filled by catch-up or by
//	                        block resync; roles switch, the old side is
//	                        retired; the client sees no error
package ceph
