package e2e

import (
	"strings"
	"testing"
)

// nbdshCommands exercises every command through libnbd and the errors the
// server itself must return. set_strict_mode(0) switches off libnbd's
// client-side checks so that out-of-range requests reach the server.
const nbdshCommands = `
size = h.get_size()
assert size == 64 << 20, size
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero() and h.can_multi_conn()
pat = bytes((i * 7 + 3) & 0xff for i in range(8192))
h.pwrite(pat, 4096)
assert h.pread(8192, 4096) == pat, "pread after pwrite"
h.pwrite(b"\x5a" * 4096, 16384, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 16384) == b"\x5a" * 4096, "FUA write"
h.flush()
h.zero(4096, 4096)
assert h.pread(8192, 4096) == bytes(4096) + pat[4096:], "zero"
h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8192) == bytes(4096), "zero NO_HOLE|FUA"
h.pwrite(b"\x77" * 65536, 1 << 20)
h.trim(32768, (1 << 20) + 16384)
got = h.pread(65536, 1 << 20)
assert got == b"\x77" * 16384 + bytes(32768) + b"\x77" * 16384, "trim must read back zeroes, neighbours kept"
h.trim(4096, 16384, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 16384) == bytes(4096), "trim FUA"
# Last byte and a read that ends exactly at the end are fine.
h.pwrite(b"\xee", size - 1)
assert h.pread(4096, size - 4096)[-1:] == b"\xee"

h.set_strict_mode(0)
def expect(name, errnos, op):
    try:
        op()
    except nbd.Error as e:
        assert e.errno in errnos, "%s: errno %s, want %s (%s)" % (name, e.errno, errnos, e.string)
        print("refused", name, e.errno)
    else:
        raise AssertionError("%s succeeded" % name)
    # The connection must survive every refused request.
    assert h.pread(4096, 16384) == bytes(4096), "read after refused " + name
expect("pread past end", ["EINVAL"], lambda: h.pread(4096, size))
expect("pread straddling end", ["EINVAL"], lambda: h.pread(8192, size - 4096))
expect("pread offset overflow", ["EINVAL"], lambda: h.pread(4096, (1 << 64) - 2048))
expect("pwrite past end", ["ENOSPC"], lambda: h.pwrite(b"x" * 4096, size - 2048))
expect("zero past end", ["ENOSPC"], lambda: h.zero(8192, size - 4096))
expect("trim past end", ["EINVAL", "ENOSPC"], lambda: h.trim(8192, size - 4096))
expect("pread zero length", ["EINVAL"], lambda: h.pread(0, 0))
expect("pread 64 MiB (over the 32 MiB block size maximum)", ["EINVAL", "EOVERFLOW"], lambda: h.pread(64 << 20, 0))
assert h.pread(1, size - 1) == b"\xee", "last byte after the errors"
print("NBDSH-OK")
`

// TestNbdsh drives pwrite, pread, flush, zero and trim through libnbd and
// checks that out-of-range requests get the NBD error codes the protocol
// asks for while the connection keeps working.
func TestNbdsh(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdsh")
	s := memServer(t, "64M", true)
	for _, uri := range []string{s.URI("vol0"), s.UnixURI("vol0")} {
		r := nbdsh(t, uri, nbdshCommands)
		if r.err != nil || !strings.Contains(r.stdout, "NBDSH-OK") {
			t.Fatalf("nbdsh %s: %s", uri, r)
		}
		if n := strings.Count(r.stdout, "refused "); n != 8 {
			t.Errorf("nbdsh %s: %d refused requests, want 8:\n%s", uri, n, r.stdout)
		}
	}
	s.Stop()
}
