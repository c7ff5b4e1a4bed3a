package engine

import "testing"

func TestDecideSync(t *testing.T) {
	hist := []GenEntry{{Gen: 7, EndSeq: 100}, {Gen: 0, EndSeq: 0}}
	p := lineage{Gen: 9, History: hist, FirstSeq: 50, LastSeq: 200}
	cases := []struct {
		name string
		s    lineage
		want syncAction
		from uint64
	}{
		{"same gen, equal", lineage{Gen: 9, LastSeq: 200}, syncInSync, 201},
		{"same gen, behind", lineage{Gen: 9, LastSeq: 120}, syncCatchUp, 121},
		{"same gen, behind past journal", lineage{Gen: 9, LastSeq: 10}, syncNeedsResync, 0},
		{"same gen, ahead", lineage{Gen: 9, LastSeq: 201}, syncNeedsResync, 0},
		{"old gen, clean handover", lineage{Gen: 7, LastSeq: 100}, syncCatchUp, 101},
		{"old gen, behind", lineage{Gen: 7, LastSeq: 60}, syncCatchUp, 61},
		{"old gen, wrote on", lineage{Gen: 7, LastSeq: 101}, syncSplitBrain, 0},
		{"fresh secondary of fresh pair", lineage{Gen: 0, LastSeq: 0}, syncNeedsResync, 0},
		{"secondary newer", lineage{Gen: 11, History: []GenEntry{{Gen: 9, EndSeq: 200}}, LastSeq: 250}, syncPeerNewer, 0},
		{"unrelated", lineage{Gen: 12, LastSeq: 5}, syncSplitBrain, 0},
	}
	for _, c := range cases {
		got, from, why := decideSync(p, c.s)
		if got != c.want || (c.from != 0 && from != c.from) {
			t.Errorf("%s: got %v from %d (%s), want %v from %d", c.name, got, from, why, c.want, c.from)
		}
		if got >= syncNeedsResync && why == "" {
			t.Errorf("%s: refusal without a reason", c.name)
		}
	}
	// A fresh pair: the primary made generation 5 out of 0 at seq 0 and
	// its journal starts at 1.
	fresh := lineage{Gen: 5, History: []GenEntry{{Gen: 0, EndSeq: 0}}, FirstSeq: 1, LastSeq: 40}
	if got, from, _ := decideSync(fresh, lineage{Gen: 0, FirstSeq: 1}); got != syncCatchUp || from != 1 {
		t.Errorf("fresh pair: %v from %d", got, from)
	}
}
