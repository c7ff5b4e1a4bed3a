package e2e

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLICreateThenServe: `twinblock create` makes sparse files and a
// config that `twinblock serve` accepts as is; data written over NBD lands
// in the file the config names.
func TestCLICreateThenServe(t *testing.T) {
	t.Parallel()
	needTools(t, "nbdinfo", "qemu-io")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "twinblock.yaml")
	r := tb(t, dir, "create", "vol0", "--path", "vol0.img", "--size", "1G", "--config", "twinblock.yaml", "--description", "first volume")
	if r.err != nil {
		t.Fatalf("twinblock create vol0: %s", r)
	}
	if !strings.Contains(r.stdout, "vol0") {
		t.Errorf("create printed nothing about vol0:\n%s", r)
	}
	// A second volume goes into the same config, with an absolute path
	// and a run from another directory.
	r = tb(t, t.TempDir(), "create", "vol1", "--path", filepath.Join(dir, "vol1.img"), "--size", "16M", "--config", cfg)
	if r.err != nil {
		t.Fatalf("twinblock create vol1: %s", r)
	}
	for name, size := range map[string]int64{"vol0.img": 1 << 30, "vol1.img": 16 * mib} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("create did not make %s: %v", name, err)
		}
		if st.Size() != size {
			t.Errorf("%s is %d bytes, want %d", name, st.Size(), size)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "vol0.img")); err == nil {
		if blocks := statBlocks(st); blocks*512 > 16*mib {
			t.Errorf("vol0.img allocates %d bytes; create must make a sparse file", blocks*512)
		}
	}
	cfgText := string(readFile(t, cfg))
	for _, want := range []string{"vol0", "vol1", "first volume"} {
		if !strings.Contains(cfgText, want) {
			t.Errorf("config lacks %q:\n%s", want, cfgText)
		}
	}

	s := startServer(t, serveOptions{args: []string{"--config", cfg}})
	out := nbdinfoJSON(t, "--list", "nbd://"+s.addr+"/")
	got := map[string]int64{}
	for _, e := range out.Exports {
		if e.Size != nil {
			got[e.Name] = *e.Size
		}
		if e.Name == "vol0" && e.Description != "first volume" {
			t.Errorf("vol0 description %q, want %q", e.Description, "first volume")
		}
	}
	if len(got) != 2 || got["vol0"] != 1<<30 || got["vol1"] != 16*mib {
		t.Errorf("exports %v, want vol0=1GiB vol1=16MiB", got)
	}
	r = qemuIO(t, s.URI("vol1"), "write -P 0x42 1M 64k")
	if !strings.Contains(r.stdout, "wrote 65536/65536") {
		t.Fatalf("qemu-io write to vol1: %s", r)
	}
	s.Stop()
	data := readFile(t, filepath.Join(dir, "vol1.img"))
	if ok, at := allBytes(data[mib:mib+64*kib], 0x42); !ok {
		t.Errorf("vol1.img lacks the write at offset %d", mib+at)
	}
}

// TestCLICreateRefuses: a duplicate volume name and an existing non-empty
// file are refused, and neither the config nor the file is touched.
func TestCLICreateRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "twinblock.yaml")
	if r := tb(t, dir, "create", "vol0", "--path", "vol0.img", "--size", "8M", "--config", cfg); r.err != nil {
		t.Fatalf("twinblock create: %s", r)
	}
	cfgBefore := readFile(t, cfg)

	t.Run("duplicate name", func(t *testing.T) {
		r := tb(t, dir, "create", "vol0", "--path", "other.img", "--size", "8M", "--config", cfg)
		if r.err == nil || r.code != 1 {
			t.Fatalf("create of a duplicate name: want exit 1, got %s", r)
		}
		if !strings.Contains(r.stderr, `"vol0" already exists`) {
			t.Errorf("stderr does not say the volume exists:\n%s", r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "other.img")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused create left other.img behind (%v)", err)
		}
	})
	t.Run("existing file", func(t *testing.T) {
		existing := filepath.Join(dir, "precious.img")
		data := randomBytes(64*kib, 9)
		writeFile(t, existing, data)
		r := tb(t, dir, "create", "vol1", "--path", existing, "--size", "8M", "--config", cfg)
		if r.err == nil || r.code != 1 {
			t.Fatalf("create over an existing file: want exit 1, got %s", r)
		}
		if !strings.Contains(r.stderr, "precious.img") {
			t.Errorf("stderr does not name the file:\n%s", r.stderr)
		}
		requireEqualData(t, "existing file after refused create", readFile(t, existing), data)
	})
	t.Run("bad name", func(t *testing.T) {
		r := tb(t, dir, "create", "../evil", "--path", "evil.img", "--size", "8M", "--config", cfg)
		if r.err == nil || !strings.Contains(r.stderr, "volume name") {
			t.Fatalf("create with a bad name: %s", r)
		}
	})
	if got := readFile(t, cfg); !bytes.Equal(got, cfgBefore) {
		t.Errorf("refused creates changed the config:\n%s\nwas:\n%s", got, cfgBefore)
	}
}

// TestCLIConfigErrors: a bad config is refused before anything listens,
// with exit code 1 and the offending field named on stderr.
func TestCLIConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown backend", `
volumes:
  - name: vol0
    backend: {type: flie, path: x.img}
`, []string{"volumes[0].backend.type", `unknown backend "flie"`}},
		{"mem without size", `
volumes:
  - name: vol0
    backend: {type: mem}
`, []string{"volumes[0].backend.size"}},
		{"file without path", `
volumes:
  - name: vol0
    backend: {type: mem, size: 1G}
  - name: vol1
    backend: {type: file}
`, []string{"volumes[1].backend.path"}},
		{"duplicate name", `
volumes:
  - name: vol0
    backend: {type: mem, size: 1G}
  - name: vol0
    backend: {type: mem, size: 1G}
`, []string{"volumes[1].name", "vol0"}},
		{"misspelt key", `
volumes:
  - name: vol0
    backend: {type: mem, sise: 1G}
`, []string{"sise"}},
		{"bad size", `
volumes:
  - name: vol0
    backend: {type: mem, size: 10Q}
`, []string{"10Q"}},
		{"no volumes", `
listen: 127.0.0.1:0
`, []string{"volumes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "twinblock.yaml")
			writeFile(t, cfg, []byte(tc.yaml))
			addr := freeAddr(t)
			r := tb(t, dir, "serve", "--config", cfg, "--listen", addr)
			if r.err == nil || r.code != 1 {
				t.Fatalf("serve with a bad config: want exit 1, got %s", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "exporting") {
				t.Errorf("serve started exporting despite the bad config:\n%s", r.stderr)
			}
		})
	}
}

// TestCLIServeMissingBackingFile: a volume whose file does not exist fails
// serve at startup, naming the file, before the port is ever listened on.
func TestCLIServeMissingBackingFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "gone.img")
	cfg := filepath.Join(dir, "twinblock.yaml")
	writeFile(t, cfg, []byte(`volumes:
  - name: vol0
    backend: {type: mem, size: 64M}
  - name: vol1
    backend: {type: file, path: gone.img}
`))
	for _, args := range [][]string{
		{"serve", "--name", "vol0", "--backend", "file", "--path", missing},
		{"serve", "--config", cfg},
	} {
		addr := freeAddr(t)
		start := time.Now()
		r := tb(t, dir, append(args, "--listen", addr)...)
		if r.err == nil || r.code != 1 {
			t.Fatalf("%v with a missing backing file: want exit 1, got %s", args, r)
		}
		if !strings.Contains(r.stderr, missing) || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("%v: stderr does not name the missing file and the reason:\n%s", args, r.stderr)
		}
		if strings.Contains(r.stderr, "exporting") {
			t.Errorf("%v: serve exported before failing:\n%s", args, r.stderr)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%v: something listens on %s after serve failed", args, addr)
		}
		t.Logf("%v failed in %v", args, time.Since(start))
	}
}
