package durable

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// testdata/psync-2streams.json is real fio 3.33 output of PsyncArgs with
// two files (fio's "connected"/layout messages would come first; the
// parser skips them).
func TestParsePsyncRealOutput(t *testing.T) {
	data, err := os.ReadFile("testdata/psync-2streams.json")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ParsePsync(append([]byte("fio: some warning before the document\n"), data...))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Name != "stream1" || rs[1].Name != "stream2" {
		t.Fatalf("jobs: %+v", rs)
	}
	for _, r := range rs {
		if r.IOPS <= 0 || r.IOs <= 0 || r.WriteP50 <= 0 || r.SyncP50 <= 0 || r.WriteP99 < r.WriteP50 || r.SyncP99 < r.SyncP50 {
			t.Errorf("%s: implausible %+v", r.Name, r)
		}
		// The latency of a durable write is write + fdatasync: the
		// fdatasync alone (what fio's write clat leaves out) must count.
		if r.P50 != r.WriteP50+r.SyncP50 || r.P99 != r.WriteP99+r.SyncP99 {
			t.Errorf("%s: p50 %s p99 %s, want write+sync", r.Name, r.P50, r.P99)
		}
	}
}

func psyncDoc(job string) string {
	return `{"fio version":"fio-3.33","jobs":[` + job + `]}`
}

const goodJob = `{"jobname":"stream1","error":0,
 "write":{"iops":4000.5,"total_ios":40005,"clat_ns":{"N":40005,"percentile":{"50.000000":6000,"99.000000":60000}}},
 "sync":{"total_ios":0,"lat_ns":{"N":40005,"percentile":{"50.000000":200000,"99.000000":4000000}}}}`

func TestParsePsyncSums(t *testing.T) {
	rs, err := ParsePsync([]byte(psyncDoc(goodJob)))
	if err != nil {
		t.Fatal(err)
	}
	want := PsyncResult{Name: "stream1", IOPS: 4000.5, IOs: 40005,
		WriteP50: 6 * time.Microsecond, WriteP99: 60 * time.Microsecond,
		SyncP50: 200 * time.Microsecond, SyncP99: 4 * time.Millisecond,
		P50: 206 * time.Microsecond, P99: 4060 * time.Microsecond}
	if len(rs) != 1 || rs[0] != want {
		t.Fatalf("got %+v\nwant %+v", rs, want)
	}
}

func TestParsePsyncErrors(t *testing.T) {
	noSync := strings.Replace(goodJob, `"sync":{"total_ios":0,"lat_ns":{"N":40005`, `"sync":{"total_ios":0,"lat_ns":{"N":0`, 1)
	for name, in := range map[string]string{
		"empty":           "",
		"no json":         "fio: file not found",
		"truncated":       psyncDoc(goodJob)[:50],
		"no jobs":         `{"jobs":[]}`,
		"job error":       psyncDoc(strings.Replace(goodJob, `"error":0`, `"error":5`, 1)),
		"no writes":       psyncDoc(strings.Replace(goodJob, `"total_ios":40005`, `"total_ios":0`, 1)),
		"no sync section": psyncDoc(`{"jobname":"x","write":{"iops":1,"total_ios":1,"clat_ns":{"percentile":{"50.000000":1,"99.000000":1}}}}`),
		"fdatasync off":   psyncDoc(noSync),
		"no p99":          psyncDoc(strings.Replace(goodJob, `,"99.000000":4000000`, ``, 1)),
		"negative":        psyncDoc(strings.Replace(goodJob, `"50.000000":200000`, `"50.000000":-1`, 1)),
		"huge":            psyncDoc(strings.Replace(goodJob, `"50.000000":200000`, `"50.000000":1e300`, 1)),
		"negative iops":   psyncDoc(strings.Replace(goodJob, `"iops":4000.5`, `"iops":-3`, 1)),
	} {
		if _, err := ParsePsync([]byte(in)); !errors.Is(err, ErrFioOutput) {
			t.Errorf("%s: err %v, want ErrFioOutput", name, err)
		}
	}
}

func TestPsyncArgs(t *testing.T) {
	a := PsyncArgs([]string{"/d/s1", "/d/s2"}, 1<<30, 10*time.Second, 2*time.Second)
	first := slices.IndexFunc(a, func(s string) bool { return strings.HasPrefix(s, "--name=") })
	if first < 0 {
		t.Fatalf("no job: %q", a)
	}
	// fio applies options before the first --name to every job.
	for _, g := range []string{"--ioengine=psync", "--rw=randwrite", "--bs=4k", "--fdatasync=1", "--iodepth=1",
		"--size=1073741824", "--time_based", "--runtime=10000ms", "--ramp_time=2000ms", "--percentile_list=50:99", "--output-format=json"} {
		if i := slices.Index(a, g); i < 0 || i > first {
			t.Errorf("%s missing or not global in %q", g, a)
		}
	}
	if got := a[first:]; !slices.Equal(got, []string{"--name=stream1", "--filename=/d/s1", "--name=stream2", "--filename=/d/s2"}) {
		t.Errorf("jobs %q", got)
	}
	if slices.ContainsFunc(PsyncArgs([]string{"f"}, 1<<20, time.Second, 0), func(s string) bool { return strings.HasPrefix(s, "--ramp_time") }) {
		t.Error("ramp_time without a ramp")
	}
}

func TestStreamsMeasure(t *testing.T) {
	m := streamsMeasure([]PsyncResult{
		{IOPS: 3000, P50: 300 * time.Microsecond, P99: 2 * time.Millisecond},
		{IOPS: 3400, P50: 320 * time.Microsecond, P99: 5 * time.Millisecond},
	})
	want := Measure{Rate: 6400, P50: 310 * time.Microsecond, P99: 5 * time.Millisecond}
	if m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestParseStatus(t *testing.T) {
	for file, want := range map[string]VolumeStatus{
		"testdata/status-pair.json": {Name: "vol0", Role: "primary", Disk: "UpToDate", Mode: "sync", Connection: "Connected", PeerDisk: "UpToDate"},
		"testdata/status-connecting.json": {Name: "vol0", Role: "primary", Disk: "UpToDate", Mode: "sync", Connection: "Connecting", PeerDisk: "DUnknown",
			ConnectionError: "transport: handshake failed: dial 127.0.0.1:17790: dial tcp 127.0.0.1:17790: connect: connection refused"},
	} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		vs, err := ParseStatus(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		v, err := findVolume(vs, "vol0")
		if err != nil || v != want {
			t.Errorf("%s: got %+v (%v), want %+v", file, v, err, want)
		}
		if _, err := findVolume(vs, "vol1"); !errors.Is(err, ErrStatusOutput) {
			t.Errorf("missing volume: %v", err)
		}
	}
}

func TestParseStatusErrors(t *testing.T) {
	many := "[" + strings.Repeat(`{"name":"v"},`, maxStatusVolumes) + `{"name":"v"}]`
	for name, in := range map[string]string{
		"empty":         "",
		"object":        `{"name":"vol0"}`,
		"error text":    "twinblock: no daemon at /x/twinblock.sock",
		"unterminated":  `[{"name":"vol0"}`,
		"trailing data": `[{"name":"vol0"}] [`,
		"no name":       `[{"role":"primary"}]`,
		"wrong type":    `[{"name":"vol0","connection":7}]`,
		"too many":      many,
	} {
		if _, err := ParseStatus([]byte(in)); !errors.Is(err, ErrStatusOutput) {
			t.Errorf("%s: err %v, want ErrStatusOutput", name, err)
		}
	}
	if vs, err := ParseStatus([]byte(" [] \n")); err != nil || len(vs) != 0 {
		t.Errorf("empty array: %v %v", vs, err)
	}
}

func FuzzParsePsync(f *testing.F) {
	if data, err := os.ReadFile("testdata/psync-2streams.json"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(psyncDoc(goodJob)))
	f.Add([]byte(`fio: x` + psyncDoc(goodJob)))
	f.Add([]byte(`{"jobs":[{"jobname":"a","sync":null}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := ParsePsync(data)
		if err != nil {
			if !errors.Is(err, ErrFioOutput) {
				t.Fatalf("error without ErrFioOutput: %v", err)
			}
			return
		}
		if len(rs) == 0 {
			t.Fatal("no results and no error")
		}
		for _, r := range rs {
			if r.IOPS < 0 || r.IOs <= 0 || r.P50 < 0 || r.P99 < 0 || r.P50 != r.WriteP50+r.SyncP50 {
				t.Fatalf("implausible result %+v", r)
			}
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	for _, file := range []string{"testdata/status-pair.json", "testdata/status-connecting.json"} {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"name":"a"},{"name":"b","connection":"Connected"}]`))
	f.Add([]byte(`[{"name":"a"}] x`))
	f.Fuzz(func(t *testing.T, data []byte) {
		vs, err := ParseStatus(data)
		if err != nil {
			if !errors.Is(err, ErrStatusOutput) {
				t.Fatalf("error without ErrStatusOutput: %v", err)
			}
			return
		}
		if len(vs) > maxStatusVolumes {
			t.Fatalf("%d volumes", len(vs))
		}
		for _, v := range vs {
			if v.Name == "" {
				t.Fatal("volume without a name accepted")
			}
		}
	})
}
