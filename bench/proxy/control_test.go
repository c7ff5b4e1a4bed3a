package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestControlHandler(t *testing.T) {
	p := startProxy(t, Options{Target: "127.0.0.1:1"})
	h := p.ControlHandler()
	do := func(method, target string, wantCode int) StatsJSON {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		if rec.Code != wantCode {
			t.Fatalf("%s %s: %d %s, want %d", method, target, rec.Code, rec.Body, wantCode)
		}
		var st StatsJSON
		if wantCode == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
				t.Fatalf("%s %s: %v in %s", method, target, err, rec.Body)
			}
		}
		return st
	}
	for _, c := range []struct {
		path string
		mode Mode
	}{{"/cut", ModeCut}, {"/blackhole", ModeBlackhole}, {"/stall", ModeStall}, {"/restore", ModeUp}} {
		if st := do("POST", c.path, 200); st.Mode != c.mode.String() || p.Mode() != c.mode {
			t.Errorf("POST %s: mode %q / %v, want %v", c.path, st.Mode, p.Mode(), c.mode)
		}
	}
	if st := do("POST", "/latency?d=5ms", 200); st.Latency != "5ms" || p.Stats().Latency != 5*time.Millisecond {
		t.Errorf("latency: %+v", st)
	}
	if st := do("POST", "/jitter?d=1ms", 200); st.Jitter != "1ms" || p.Stats().Jitter != time.Millisecond {
		t.Errorf("jitter: %+v", st)
	}
	if st := do("POST", "/bandwidth?bps=100M", 200); st.Bandwidth != "100MB/s" || p.Stats().Bandwidth != 100e6 {
		t.Errorf("bandwidth: %+v", st)
	}
	if st := do("GET", "/stats", 200); st.Mode != "up" || st.Latency != "5ms" {
		t.Errorf("stats: %+v", st)
	}
	do("POST", "/latency?d=-1ms", 400)
	do("POST", "/latency", 400)
	do("POST", "/bandwidth?bps=100Mb", 400)
	do("GET", "/cut", 405)
	do("POST", "/nope", 404)
	if p.Stats().Latency != 5*time.Millisecond || p.Mode() != ModeUp {
		t.Error("a rejected request changed the proxy")
	}
}

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "unlimited": 0, "1500000": 1500000, "100M": 100e6, "100MB/s": 100e6, " 100 MB ": 100e6,
		"64KiB": 64 << 10, "64k": 64e3, "1.5G": 1.5e9, "2GiB/s": 2 << 30, "100Mbit": 12.5e6,
		"1Gbit/s": 125e6, "8bit": 1, "10B": 10,
	} {
		got, err := ParseBandwidth(in)
		if err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "fast", "100Mb", "10kb", "1.2.3M", "100X", "-5M", "1bit", "1e30G", "0.5"} {
		if got, err := ParseBandwidth(in); !errors.Is(err, ErrBandwidth) {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want ErrBandwidth", in, got, err)
		}
	}
	for bps, want := range map[int64]string{0: "unlimited", 100e6: "100MB/s", 1e9: "1GB/s", 64e3: "64KB/s", 65536: "65536B/s"} {
		if got := FormatBandwidth(bps); got != want {
			t.Errorf("FormatBandwidth(%d) = %q, want %q", bps, got, want)
		}
	}
}

// ParseBandwidth reads operator and script input: it must never panic,
// never yield a negative rate, and FormatBandwidth must round-trip.
func FuzzParseBandwidth(f *testing.F) {
	for _, s := range []string{"0", "100M", "100MB/s", "64KiB", "1.5G", "100Mbit", "1Gbit/s", "", "100Mb", "1e30G", "..M", "9223372036854775807", "unlimited"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseBandwidth(s)
		if err != nil {
			if !errors.Is(err, ErrBandwidth) {
				t.Fatalf("%q: error %v does not wrap ErrBandwidth", s, err)
			}
			return
		}
		if v < 0 {
			t.Fatalf("%q: negative rate %d", s, v)
		}
		if v == 0 {
			return
		}
		back, err := ParseBandwidth(FormatBandwidth(v))
		if err != nil || back != v {
			t.Fatalf("%q = %d; FormatBandwidth %q parses as %d, %v", s, v, FormatBandwidth(v), back, err)
		}
	})
}
