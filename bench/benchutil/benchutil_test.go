package benchutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var errTest = errors.New("benchutil test: bad output")

type item struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

func checkItem(v *item) error {
	if v.Name == "" {
		return errors.New("volume without a name")
	}
	return nil
}

func TestDecodeArray(t *testing.T) {
	vs, err := DecodeArray(ws(` [{"name":"a","n":1,"extra":true},{"name":"b"}] `), 4, errTest, checkItem)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0] != (item{"a", 1}) || vs[1] != (item{"b", 0}) {
		t.Fatalf("got %+v", vs)
	}
	for in, want := range map[string]string{
		``:                       "not a JSON array",
		`{}`:                     "not a JSON array",
		`[{"name":"a"}`:          "EOF",
		`[{"name":""}]`:          "volume without a name",
		`[{"name":"a","n":"x"}]`: "cannot unmarshal",
		`[{"name":"a"}] x`:       "data after the array",
		`[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"},{"name":"e"}]`: "more than 4 volumes",
	} {
		_, err := DecodeArray(ws(in), 4, errTest, checkItem)
		if !errors.Is(err, errTest) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want errTest with %q", in, err, want)
		}
	}
}

func ws(s string) []byte { return []byte(s) }

func FuzzDecodeArray(f *testing.F) {
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"name":"a","n":3},{"name":"b"}]`))
	f.Add([]byte(`[{"name":"a"}] x`))
	f.Fuzz(func(t *testing.T, data []byte) {
		vs, err := DecodeArray(data, 8, errTest, checkItem)
		if err != nil {
			if !errors.Is(err, errTest) {
				t.Fatalf("error without errTest: %v", err)
			}
			return
		}
		if len(vs) > 8 {
			t.Fatalf("%d elements", len(vs))
		}
		for _, v := range vs {
			if v.Name == "" {
				t.Fatal("element failing check accepted")
			}
		}
	})
}

func TestQuoteArgs(t *testing.T) {
	got := QuoteArgs([]string{"fio", "", "a b", "it's", "x&y", "plain"}, " '&")
	want := `fio '' 'a b' 'it'\''s' 'x&y' plain`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestCommandOutput(t *testing.T) {
	ctx := context.Background()
	out, err := Command{Argv: []string{"/bin/sh", "-c", "echo hello"}, Timeout: 10 * time.Second, Err: errTest,
		Quote: func(a []string) string { return QuoteArgs(a, " ") }}.Output(ctx)
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("out %q err %v", out, err)
	}
	_, err = Command{Argv: []string{"/bin/sh", "-c", "echo oops >&2; exit 3"}, Timeout: 10 * time.Second, Err: errTest,
		Quote: func(a []string) string { return QuoteArgs(a, " ") }}.Output(ctx)
	if !errors.Is(err, errTest) || !strings.Contains(err.Error(), "'echo oops >&2; exit 3'") || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("err %v", err)
	}
	_, err = Command{Argv: []string{"/bin/sleep", "10"}, Timeout: 100 * time.Millisecond, Err: errTest,
		Quote: func(a []string) string { return QuoteArgs(a, " ") }}.Output(ctx)
	if !errors.Is(err, errTest) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a timeout", err)
	}
}

func TestHead(t *testing.T) {
	var b strings.Builder
	Head{Title: "T", Date: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Command: "twinblock bench x",
		NProc: 2, CPU: "cpu", Rest: ", kernel k, go1", LoadStart: "0.1", LoadEnd: "0.2"}.Write(&b)
	want := "# T\n\n- Date: 2026-01-02T03:04:05Z\n- Command: `twinblock bench x`\n- Machine: 2 CPUs (cpu), kernel k, go1; load average 0.1 at start, 0.2 at end\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	Head{Title: "T", NProc: 1, Rest: ", kernel k"}.Write(&b)
	if want := "# T\n\n- Date: 0001-01-01T00:00:00Z\n- Machine: 1 CPUs, kernel k\n"; b.String() != want {
		t.Fatalf("got %q", b.String())
	}
	b.Reset()
	WriteResults(&b, 1, 2, "targets\n", "medians\n", []string{"n1"})
	if want := "## Targets: 1 of 2 met\n\ntargets\n\n## Medians\n\nmedians\n\n## Notes\n\n- n1\n"; b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}

type named string

func (n named) VolumeName() string { return string(n) }

type pass bool

func (p pass) Pass() bool { return bool(p) }

func TestFindVolumeAndMet(t *testing.T) {
	vs := []named{"a", "b"}
	if v, err := FindVolume(vs, "b", errTest); err != nil || v != "b" {
		t.Fatalf("%q %v", v, err)
	}
	if _, err := FindVolume(vs, "c", errTest); !errors.Is(err, errTest) || !strings.Contains(err.Error(), `no volume "c"`) {
		t.Fatal(err)
	}
	if met, total := Met([]pass{true, false, true}); met != 2 || total != 3 {
		t.Fatalf("%d of %d", met, total)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := WriteFiles(dir, "x", map[string]int{"a": 1}, "# x\n"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "x.md"))
	if err != nil || string(md) != "# x\n" {
		t.Fatalf("md %q %v", md, err)
	}
	js, err := os.ReadFile(filepath.Join(dir, "x.json"))
	if err != nil || !strings.Contains(string(js), `"a": 1`) {
		t.Fatalf("json %q %v", js, err)
	}
}
