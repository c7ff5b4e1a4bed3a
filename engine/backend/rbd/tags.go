//go:build ceph && !pacific

package rbd

// go-ceph v0.40.0 needs its "pacific" build tag to compile against the
// Ceph 16 libraries of Debian 12. Building with "ceph" alone stops here
// with this identifier in the error, rather than deep inside go-ceph.
var _ = build_with_tags_ceph_and_pacific__use_make_build_ceph_or_go_build_tags_ceph_pacific
