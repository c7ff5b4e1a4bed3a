package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]Size{
		"0": 0, "4096": 4096, "4k": 4096, "4K": 4096, "4KiB": 4096, "4KB": 4096,
		"512M": 512 << 20, "10G": 10 << 30, "10GiB": 10 << 30, "1.5T": 3 << 39, " 2g ": 2 << 30,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1", "-1G", "10X", "1.3", "0.1K", "99999999P", "1e3"} {
		if _, err := ParseSize(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSize(%q): err = %v, want ErrInvalid", in, err)
		}
	}
	for _, s := range []Size{0, 1, 1024, 10 << 30, 3 << 39, 1536} {
		back, err := ParseSize(s.String())
		if err != nil || back != s {
			t.Errorf("round trip %d -> %q -> %d, %v", s, s.String(), back, err)
		}
	}
}

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(`
listen: 127.0.0.1:10900
socket: /tmp/x.sock
volumes:
  - name: vol0
    backend: {type: file, path: vol0.img}
  - name: scratch
    read_only: true
    backend: {type: mem, size: 1G}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:10900" || c.Socket != "/tmp/x.sock" || len(c.Volumes) != 2 {
		t.Fatalf("got %+v", c)
	}
	if v, ok := c.Volume("scratch"); !ok || v.Backend.Size != 1<<30 || !v.ReadOnly {
		t.Fatalf("scratch = %+v", v)
	}
	// Listen defaults.
	c, err = Parse([]byte("volumes: [{name: a, backend: {type: mem, size: 1M}}]"))
	if err != nil || c.Listen != DefaultListen {
		t.Fatalf("default listen: %v %v", c, err)
	}
}

// Every bad config is refused with an error that names the field.
func TestParseErrorsNameTheField(t *testing.T) {
	cases := map[string]string{
		"":            "empty",
		"volumes: []": "volumes",
		"volumes: [{name: a, backend: {type: flie, path: x}}]":                                            `volumes[0].backend.type: unknown backend "flie"`,
		"volumes: [{name: a, backend: {type: file}}]":                                                     "volumes[0].backend.path",
		"volumes: [{name: a, backend: {type: mem}}]":                                                      "volumes[0].backend.size",
		"volumes: [{name: a, backend: {type: mem, size: 1M, path: p}}]":                                   "volumes[0].backend.path",
		"volumes: [{name: a, backend: {}}]":                                                               "volumes[0].backend.type",
		"volumes: [{name: 'a/b', backend: {type: mem, size: 1M}}]":                                        "volumes[0].name",
		"volumes: [{name: a, backend: {type: mem, size: 1M}}, {name: a, backend: {type: mem, size: 1M}}]": "volumes[1].name",
		"volumes: [{name: a, backend: {type: mem, size: 12Q}}]":                                           "line 1: size: ",
		"volumes: [{name: a, bakend: {type: mem, size: 1M}}]":                                             "bakend",
		"listen: none\nvolumes: [{name: a, backend: {type: mem, size: 1M}}]":                              "listen",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): err = %v, want ErrInvalid", in, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): error %q does not name %q", in, err, want)
		}
	}
}

func TestWriteLoadRoundTripAndResolve(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tb.yaml")
	c := &Config{Listen: DefaultListen, Volumes: []Volume{{Name: "vol0", Backend: Backend{Type: "file", Path: "vol0.img", Size: 10 << 30}}}}
	if err := c.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temp file left behind: %v", err)
	}
	back, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Resolve("vol0.img"); got != filepath.Join(dir, "vol0.img") {
		t.Fatalf("Resolve = %q", got)
	}
	if got := back.Resolve("/abs/x"); got != "/abs/x" {
		t.Fatalf("Resolve abs = %q", got)
	}
	if back.Volumes[0].Backend.Size != 10<<30 {
		t.Fatalf("size = %v", back.Volumes[0].Backend.Size)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}

// FuzzParse: arbitrary bytes never panic, and whatever parses also validates
// and survives a marshal/parse round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte("volumes: [{name: a, backend: {type: mem, size: 1M}}]"))
	f.Add([]byte("listen: 127.0.0.1:1\nsocket: /s\nvolumes:\n  - name: v\n    backend: {type: file, path: p, size: 10G}\n"))
	f.Add([]byte("volumes: [{name: a, backend: {type: flie}}]"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not wrapping ErrInvalid: %v", err)
			}
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("round trip failed: %v\n%s", err, out)
		}
	})
}

// Two nodes' configs in one directory get distinct admin sockets.
func TestAdminSocketPath(t *testing.T) {
	dir := t.TempDir()
	for name, want := range map[string]string{"a.yaml": "a.sock", "twinblock.yaml": "twinblock.sock", "b.conf.yml": "b.conf.sock"} {
		p := filepath.Join(dir, name)
		c := &Config{Volumes: []Volume{{Name: "v", Backend: Backend{Type: "mem", Size: 1 << 20}}}}
		if err := c.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		back, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := back.AdminSocketPath(); got != filepath.Join(dir, want) {
			t.Errorf("%s: admin socket %s, want %s", name, got, want)
		}
	}
}

func TestReplicationFields(t *testing.T) {
	base := "node: a\nreplication: {listen: 127.0.0.1:1, peer: b, peer_address: 127.0.0.1:2, insecure_plaintext: true%s}\nvolumes: [{name: v, backend: {type: file, path: p}%s}]"
	ok := [][2]string{{"", ""}, {", compression: zstd", ", mode: async"}, {", mode: memory, compression: none", ""}}
	for _, c := range ok {
		if _, err := Parse([]byte(fmt.Sprintf(base, c[0], c[1]))); err != nil {
			t.Errorf("%v: %v", c, err)
		}
	}
	bad := map[[2]string]string{
		{", compression: lz4", ""}: "replication.compression",
		{"", ", mode: fast"}:       "volumes[0].mode",
		{", mode: turbo", ""}:      "replication.mode",
		{", async_max_age: 5", ""}: "replication.async_max_age",
	}
	for c, want := range bad {
		_, err := Parse([]byte(fmt.Sprintf(base, c[0], c[1])))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want one naming %s", c, err, want)
		}
	}
	if _, err := Parse([]byte("volumes: [{name: v, mode: sync, backend: {type: file, path: p}}]")); err == nil {
		t.Error("volume mode without replication accepted")
	}
	if _, err := Parse([]byte("replication: {listen: x, peer: b, peer_address: y, insecure_plaintext: true}\nvolumes: [{name: v, backend: {type: mem, size: 1M}}]")); err == nil || !strings.Contains(err.Error(), "node") {
		t.Errorf("replication without node: %v", err)
	}
}
