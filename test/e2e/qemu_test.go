package e2e

import (
	"bytes"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// qemuIOLines keeps the per-command result lines of qemu-io output ("wrote
// N/N bytes at offset X", "read ...", "discard ...", "... failed: ...") and
// drops the statistics lines, so a session can be compared with what each
// command should have printed, in order.
var qemuIOResultRE = regexp.MustCompile(`^(wrote|read|discard) \d+/\d+ bytes at offset \d+$|failed: |^Pattern verification failed`)

func qemuIOLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if qemuIOResultRE.MatchString(l) {
			lines = append(lines, l)
		}
	}
	return lines
}

// qemuIO runs one qemu-io session: every -c command on one connection.
func qemuIO(t *testing.T, uri string, cmds ...string) result {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return run(t, "qemu-io", append(args, uri)...)
}

// TestQemuIO drives writes with patterns, a FUA write, write-zeroes and
// discard with qemu-io over TCP and over the unix socket, and checks that
// a failed command leaves the session usable.
func TestQemuIO(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-io")
	s := memServer(t, "64M", true)
	for _, tc := range []struct{ name, uri string }{
		{"tcp", s.URI("vol0")},
		{"unix", s.UnixURI("vol0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first 256 KiB start dirty so that zeroing and discard have
			// something to undo whichever transport runs first.
			r := qemuIO(t, tc.uri, "write -P 0xee 0 256k")
			if got := qemuIOLines(r.stdout); len(got) != 1 || got[0] != "wrote 262144/262144 bytes at offset 0" {
				t.Fatalf("qemu-io prefill: %s", r)
			}
			r = qemuIO(t, tc.uri,
				"write -P 0xab 0 64k",
				"read -P 0xab 0 64k",
				"write -f -P 0xcd 64k 4k", // FUA
				"read -P 0xcd 64k 4k",
				"read -P 0xee 68k 60k", // neighbours untouched
				"write -z 128k 64k",
				"read -P 0 128k 64k",
				"read -P 0xee 192k 64k",
				"discard 0 64k",
				"read -P 0 0 64k", // twinblock: a trimmed range reads as zeroes
				"read -P 0xcd 64k 4k",
				"flush",
				"read 64M 4k",         // past the end: must fail ...
				"read -P 0xcd 64k 4k", // ... and the session carries on
				"write -P 0x11 64M 4k",
				"read -P 0 0 4k",
			)
			want := []string{
				"wrote 65536/65536 bytes at offset 0",
				"read 65536/65536 bytes at offset 0",
				"wrote 4096/4096 bytes at offset 65536",
				"read 4096/4096 bytes at offset 65536",
				"read 61440/61440 bytes at offset 69632",
				"wrote 65536/65536 bytes at offset 131072",
				"read 65536/65536 bytes at offset 131072",
				"read 65536/65536 bytes at offset 196608",
				"discard 65536/65536 bytes at offset 0",
				"read 65536/65536 bytes at offset 0",
				"read 4096/4096 bytes at offset 65536",
				"read failed: ",
				"read 4096/4096 bytes at offset 65536",
				"write failed: ",
				"read 4096/4096 bytes at offset 0",
			}
			got := qemuIOLines(r.stdout + r.stderr)
			if len(got) != len(want) {
				t.Fatalf("qemu-io printed %d result lines, want %d:\n%s", len(got), len(want), r)
			}
			for i := range want {
				if !strings.HasPrefix(got[i], want[i]) {
					t.Errorf("qemu-io command %d: %q, want %q", i, got[i], want[i])
				}
			}
			if t.Failed() {
				t.Logf("qemu-io session:\n%s", r)
			}
		})
	}
	s.Stop()
}

// TestQemuImgConvert copies a 32 MiB image into a 48 MiB export with
// qemu-img convert (several coroutines, out-of-order writes) and back out.
func TestQemuImgConvert(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	data := randomBytes(32*mib, 3)
	writeFile(t, src, data)
	s := memServer(t, "48M", false)
	uri := s.URI("vol0")

	mustRun(t, "qemu-img", "convert", "-n", "-W", "-m", "8", "-f", "raw", "-O", "raw", src, uri)
	// qemu-img compare treats the export's extra 16 MiB as equal only when
	// it reads as zeroes, so this checks both parts.
	if r := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri); r.err != nil {
		t.Errorf("qemu-img compare src export: %s", r)
	}
	out := filepath.Join(dir, "out.raw")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	got := readFile(t, out)
	if len(got) != 48*mib {
		t.Fatalf("converted image is %d bytes, want %d (the export size)", len(got), 48*mib)
	}
	requireEqualData(t, "first 32 MiB of the export", got[:32*mib], data)
	if ok, at := allBytes(got[32*mib:], 0); !ok {
		t.Errorf("the unwritten tail of the export is not zero at offset %d", 32*mib+at)
	}
	s.Stop()
}

// TestDataSurvivesRestart writes with qemu-io to a file-backed volume made
// by `twinblock create`, stops the server with SIGTERM, starts it again
// and reads everything back.
func TestDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-io")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "twinblock.yaml")
	if r := tb(t, dir, "create", "vol0", "--path", filepath.Join(dir, "vol0.img"), "--size", "16M", "--config", cfg); r.err != nil {
		t.Fatalf("twinblock create: %s", r)
	}
	s := startServer(t, serveOptions{args: []string{"--config", cfg}})
	r := qemuIO(t, s.URI("vol0"),
		"write -P 0x5a 0 1M",
		"write -f -P 0xa5 4M 64k",
		"write -P 0x3c 16320k 64k", // the last 64 KiB
		"write -P 0x77 8M 128k",
		"discard 8M 64k",
		"write -z 8256k 32k",
		"flush",
	)
	if n := strings.Count(r.stdout, "wrote "); n != 5 || !strings.Contains(r.stdout, "discard ") || r.err != nil {
		t.Fatalf("qemu-io writes: %s", r)
	}
	s.Stop()

	s = startServer(t, serveOptions{args: []string{"--config", cfg}})
	r = qemuIO(t, s.URI("vol0"),
		"read -P 0x5a 0 1M",
		"read -P 0 1M 3M",
		"read -P 0xa5 4M 64k",
		"read -P 0 8M 96k", // discarded, then zeroed
		"read -P 0x77 8288k 32k",
		"read -P 0x3c 16320k 64k",
	)
	want := []string{
		"read 1048576/1048576 bytes at offset 0",
		"read 3145728/3145728 bytes at offset 1048576",
		"read 65536/65536 bytes at offset 4194304",
		"read 98304/98304 bytes at offset 8388608",
		"read 32768/32768 bytes at offset 8486912",
		"read 65536/65536 bytes at offset 16711680",
	}
	if got := qemuIOLines(r.stdout + r.stderr); !slices.Equal(got, want) || r.err != nil {
		t.Fatalf("reading back after restart: got %q, want %q\n%s", got, want, r)
	}
	s.Stop()

	// The backing file holds the same bytes: the server wrote through to it.
	img := readFile(t, filepath.Join(dir, "vol0.img"))
	wantImg := make([]byte, 16*mib)
	fill := func(off, n int, v byte) { copy(wantImg[off:off+n], bytes.Repeat([]byte{v}, n)) }
	fill(0, mib, 0x5a)
	fill(4*mib, 64*kib, 0xa5)
	fill(8*mib+96*kib, 32*kib, 0x77)
	fill(16*mib-64*kib, 64*kib, 0x3c)
	requireEqualData(t, "vol0.img after restart", img, wantImg)
}
