package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// ControlHandler serves a tiny HTTP API so that a script or a test in
// another process can drive the proxy:
//
//	POST /cut                  Cut
//	POST /blackhole            Blackhole
//	POST /stall                Stall
//	POST /restore              Restore
//	POST /latency?d=5ms        SetLatency (Go duration syntax)
//	POST /jitter?d=1ms         SetJitter
//	POST /bandwidth?bps=100M   SetBandwidth (ParseBandwidth syntax, 0 = unlimited)
//	GET  /stats                Stats as JSON
//
// Every POST answers 200 with the resulting stats as JSON, or 400 with
// the reason.
func (p *Proxy) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	action := func(f func()) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			f()
			p.writeStats(w)
		}
	}
	mux.HandleFunc("POST /cut", action(p.Cut))
	mux.HandleFunc("POST /blackhole", action(p.Blackhole))
	mux.HandleFunc("POST /stall", action(p.Stall))
	mux.HandleFunc("POST /restore", action(p.Restore))
	duration := func(set func(time.Duration)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			d, err := time.ParseDuration(r.URL.Query().Get("d"))
			if err != nil || d < 0 {
				http.Error(w, fmt.Sprintf("want ?d=<non-negative duration>, e.g. ?d=5ms: %q", r.URL.Query().Get("d")), http.StatusBadRequest)
				return
			}
			set(d)
			p.writeStats(w)
		}
	}
	mux.HandleFunc("POST /latency", duration(p.SetLatency))
	mux.HandleFunc("POST /jitter", duration(p.SetJitter))
	mux.HandleFunc("POST /bandwidth", func(w http.ResponseWriter, r *http.Request) {
		bps, err := ParseBandwidth(r.URL.Query().Get("bps"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.SetBandwidth(bps)
		p.writeStats(w)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { p.writeStats(w) })
	return mux
}

// StatsJSON is the JSON form of Stats served by ControlHandler, with
// durations and rates spelled for people.
type StatsJSON struct {
	Mode          string `json:"mode"`
	Latency       string `json:"latency"`
	Jitter        string `json:"jitter"`
	Bandwidth     string `json:"bandwidth"`
	BytesToTarget int64  `json:"bytes_to_target"`
	BytesToClient int64  `json:"bytes_to_client"`
	BytesDropped  int64  `json:"bytes_dropped"`
	Accepted      int64  `json:"accepted"`
	Refused       int64  `json:"refused"`
	Aborted       int64  `json:"aborted"`
	DialFailures  int64  `json:"dial_failures"`
	Active        int    `json:"active"`
}

// JSON converts s to its JSON form.
func (s Stats) JSON() StatsJSON {
	return StatsJSON{
		Mode:          s.Mode.String(),
		Latency:       s.Latency.String(),
		Jitter:        s.Jitter.String(),
		Bandwidth:     FormatBandwidth(s.Bandwidth),
		BytesToTarget: s.BytesToTarget,
		BytesToClient: s.BytesToClient,
		BytesDropped:  s.BytesDropped,
		Accepted:      s.Accepted,
		Refused:       s.Refused,
		Aborted:       s.Aborted,
		DialFailures:  s.DialFailures,
		Active:        s.Active,
	}
}

func (p *Proxy) writeStats(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(p.Stats().JSON())
}
