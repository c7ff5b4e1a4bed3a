package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// nbdinfoExport is one export in `nbdinfo --json` output. Pointers tell a
// missing key from false/zero.
type nbdinfoExport struct {
	Name         string `json:"export-name"`
	Description  string `json:"description"`
	Size         *int64 `json:"export-size"`
	IsReadOnly   *bool  `json:"is_read_only"`
	CanFlush     *bool  `json:"can_flush"`
	CanFUA       *bool  `json:"can_fua"`
	CanTrim      *bool  `json:"can_trim"`
	CanZero      *bool  `json:"can_zero"`
	CanMultiConn *bool  `json:"can_multi_conn"`
	BlockMin     *int64 `json:"block_size_minimum"`
	BlockPref    *int64 `json:"block_size_preferred"`
	BlockMax     *int64 `json:"block_size_maximum"`
}

type nbdinfoOutput struct {
	Protocol string          `json:"protocol"`
	Exports  []nbdinfoExport `json:"exports"`
}

func nbdinfoJSON(t *testing.T, args ...string) nbdinfoOutput {
	t.Helper()
	r := mustRun(t, "nbdinfo", append([]string{"--json"}, args...)...)
	var out nbdinfoOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("nbdinfo --json output: %v\n%s", err, r.stdout)
	}
	return out
}

func wantFlag(t *testing.T, name string, got *bool, want bool) {
	t.Helper()
	if got == nil {
		t.Errorf("nbdinfo: %s missing", name)
		return
	}
	if *got != want {
		t.Errorf("nbdinfo: %s = %v, want %v", name, *got, want)
	}
}

func wantInt(t *testing.T, name string, got *int64, want int64) {
	t.Helper()
	if got == nil {
		t.Errorf("nbdinfo: %s missing (the server always sends NBD_INFO_BLOCK_SIZE)", name)
		return
	}
	if *got != want {
		t.Errorf("nbdinfo: %s = %d, want %d", name, *got, want)
	}
}

// TestNbdinfoAdvertises checks what a writable export advertises, over TCP
// and over the unix socket: each flag is what makes qemu and the kernel
// send FLUSH, FUA, TRIM, WRITE_ZEROES and use several connections.
func TestNbdinfoAdvertises(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdinfo")
	s := memServer(t, "64M", true)
	for _, uri := range []string{s.URI("vol0"), s.UnixURI("vol0")} {
		out := nbdinfoJSON(t, uri)
		if out.Protocol != "newstyle-fixed" {
			t.Errorf("%s: protocol %q, want newstyle-fixed", uri, out.Protocol)
		}
		if len(out.Exports) != 1 {
			t.Fatalf("%s: %d exports in nbdinfo output, want 1", uri, len(out.Exports))
		}
		e := out.Exports[0]
		if e.Name != "vol0" {
			t.Errorf("%s: export-name %q, want vol0", uri, e.Name)
		}
		wantInt(t, "export-size", e.Size, 64*mib)
		wantFlag(t, "is_read_only", e.IsReadOnly, false)
		wantFlag(t, "can_flush", e.CanFlush, true)
		wantFlag(t, "can_fua", e.CanFUA, true)
		wantFlag(t, "can_trim", e.CanTrim, true)
		wantFlag(t, "can_zero", e.CanZero, true)
		wantFlag(t, "can_multi_conn", e.CanMultiConn, true)
		wantInt(t, "block_size_minimum", e.BlockMin, 1)
		wantInt(t, "block_size_preferred", e.BlockPref, 4096)
		wantInt(t, "block_size_maximum", e.BlockMax, 32*mib)
	}
	// An unknown export is refused with a message, and the server keeps
	// serving.
	r := run(t, "nbdinfo", s.URI("nosuch"))
	if r.err == nil {
		t.Errorf("nbdinfo of an unknown export succeeded:\n%s", r)
	}
	nbdinfoJSON(t, s.URI("vol0"))
	s.Stop()
}

// TestNbdinfoReadOnly checks a --read-only export: advertised read-only,
// and writes refused by the server itself (libnbd's client-side checks are
// switched off, so the requests do reach it), the data left intact.
func TestNbdinfoReadOnly(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdinfo", "nbdsh", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "ro.img")
	data := randomBytes(4*mib, 7)
	writeFile(t, img, data)
	s := startServer(t, serveOptions{args: []string{"--name", "ro", "--backend", "file", "--path", img, "--read-only"}})

	out := nbdinfoJSON(t, s.URI("ro"))
	if len(out.Exports) != 1 {
		t.Fatalf("%d exports, want 1", len(out.Exports))
	}
	e := out.Exports[0]
	wantFlag(t, "is_read_only", e.IsReadOnly, true)
	wantInt(t, "export-size", e.Size, 4*mib)
	wantFlag(t, "can_flush", e.CanFlush, true)

	r := nbdsh(t, s.URI("ro"), `
h.set_strict_mode(0)
for name, op in [
        ("pwrite", lambda: h.pwrite(b"\xff" * 4096, 0)),
        ("pwrite fua", lambda: h.pwrite(b"\xff" * 4096, 8192, nbd.CMD_FLAG_FUA)),
        ("trim", lambda: h.trim(65536, 0)),
        ("zero", lambda: h.zero(65536, 131072)),
]:
    try:
        op()
    except nbd.Error as e:
        assert e.errno == "EPERM", "%s: errno %s, want EPERM (%s)" % (name, e.errno, e.string)
    else:
        raise AssertionError("%s on a read-only export succeeded" % name)
h.flush()
print("sha", __import__("hashlib").sha256(h.pread(4 << 20, 0)).hexdigest())
`)
	if r.err != nil {
		t.Fatalf("nbdsh: %s", r)
	}
	if want := "sha " + sha(data); !strings.Contains(r.stdout, want) {
		t.Errorf("read-only export read back wrong data: got %q, want %q", strings.TrimSpace(r.stdout), want)
	}

	// qemu-io must not manage a write either (it may refuse to open
	// read-write, or open read-only and fail the write).
	r = run(t, "qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k", s.URI("ro"))
	if strings.Contains(r.stdout, "wrote ") {
		t.Errorf("qemu-io wrote to a read-only export:\n%s", r)
	}
	s.Stop()
	requireEqualData(t, "backing file of the read-only export", readFile(t, img), data)
}

// TestNbdinfoListExports checks that NBD_OPT_LIST shows every volume of a
// config file, with its description, and that each one can be opened.
func TestNbdinfoListExports(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdinfo")
	dir := t.TempDir()
	sparseFile(t, filepath.Join(dir, "vol1.img"), 8*mib)
	cfg := filepath.Join(dir, "twinblock.yaml")
	writeFile(t, cfg, []byte(`volumes:
  - name: vol0
    description: scratch in memory
    backend:
      type: mem
      size: 64M
  - name: vol1
    description: file volume
    backend:
      type: file
      path: vol1.img
`))
	s := startServer(t, serveOptions{args: []string{"--config", cfg}})

	out := nbdinfoJSON(t, "--list", "nbd://"+s.addr+"/")
	var names []string
	for _, e := range out.Exports {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"vol0", "vol1"}) {
		t.Fatalf("nbdinfo --list exports %q, want [vol0 vol1]", names)
	}
	sizes := map[string]int64{"vol0": 64 * mib, "vol1": 8 * mib}
	descs := map[string]string{"vol0": "scratch in memory", "vol1": "file volume"}
	for _, e := range out.Exports {
		wantInt(t, e.Name+" export-size", e.Size, sizes[e.Name])
		if e.Description != descs[e.Name] {
			t.Errorf("%s: description %q, want %q", e.Name, e.Description, descs[e.Name])
		}
	}
	// The plain-text listing names both too (what an admin reads).
	r := mustRun(t, "nbdinfo", "--list", "nbd://"+s.addr+"/")
	for _, n := range []string{"export=\"vol0\"", "export=\"vol1\""} {
		if !strings.Contains(r.stdout, n) {
			t.Errorf("nbdinfo --list output lacks %s:\n%s", n, r.stdout)
		}
	}
	// With two exports the empty (default) name is ambiguous and refused.
	if r := run(t, "nbdinfo", "nbd://"+s.addr+"/"); r.err == nil {
		t.Errorf("nbdinfo with the default export name succeeded with two exports:\n%s", r)
	}
	s.Stop()
	if st, err := os.Stat(filepath.Join(dir, "vol1.img")); err != nil || st.Size() != 8*mib {
		t.Errorf("vol1.img after serve: %v, %v", st, err)
	}
}
