package engine

import "fmt"

// lineage is what a node says about its data in the handshake.
type lineage struct {
	Gen      uint64
	History  []GenEntry
	FirstSeq uint64 // oldest record its journal still holds
	LastSeq  uint64 // newest durable record
}

// syncAction is what a primary must do for a secondary.
type syncAction int

const (
	syncInSync      syncAction = iota // same data: stream new writes
	syncCatchUp                       // secondary is behind: replay the journal from `from`
	syncNeedsResync                   // the journal cannot bring it up: block resync needed
	syncSplitBrain                    // both wrote on their own: refuse, report
	syncPeerNewer                     // the "secondary" holds newer data than the primary: refuse
)

func (a syncAction) String() string {
	return [...]string{"in-sync", "catch-up", "needs-resync", "split-brain", "peer-newer"}[a]
}

// decideSync is the reconnect decision table. p is the primary, s the
// secondary; both sides compute it from the two Hellos and get the same
// answer.
//
//	secondary's generation            secondary's last seq   decision
//	same as primary's                 <= primary's last      catch up from s.last+1 (in sync if equal)
//	same as primary's                 >  primary's last      needs resync: s holds records p lost
//	in primary's history (ended at E) <= E                   catch up from s.last+1
//	in primary's history (ended at E) >  E                   split brain: s went on under the old
//	                                                         generation after p took over
//	primary's gen in s's history      any                    peer newer: the wrong node is primary
//	unrelated                         any                    split brain
//
// A catch-up also needs the primary's journal to hold s.last+1; otherwise
// the answer is needs-resync.
func decideSync(p, s lineage) (syncAction, uint64, string) {
	catchUp := func() (syncAction, uint64, string) {
		if s.LastSeq == p.LastSeq {
			return syncInSync, s.LastSeq + 1, ""
		}
		from := s.LastSeq + 1
		if from < p.FirstSeq {
			return syncNeedsResync, 0, fmt.Sprintf("the primary's journal starts at seq %d; the secondary needs seq %d onwards", p.FirstSeq, from)
		}
		return syncCatchUp, from, ""
	}
	if s.Gen == p.Gen {
		if s.LastSeq > p.LastSeq {
			return syncNeedsResync, 0, fmt.Sprintf("the secondary holds seqs %d..%d that the primary does not (lost with the primary's unsynced journal tail)", p.LastSeq+1, s.LastSeq)
		}
		return catchUp()
	}
	for _, h := range p.History {
		if h.Gen == s.Gen {
			if s.LastSeq > h.EndSeq {
				return syncSplitBrain, 0, fmt.Sprintf("the secondary wrote seqs %d..%d under generation %016x after the primary took over at seq %d", h.EndSeq+1, s.LastSeq, s.Gen, h.EndSeq)
			}
			return catchUp()
		}
	}
	for _, h := range s.History {
		if h.Gen == p.Gen {
			return syncPeerNewer, 0, fmt.Sprintf("the secondary holds newer data (generation %016x, which followed the primary's %016x): make it primary instead", s.Gen, p.Gen)
		}
	}
	return syncSplitBrain, 0, fmt.Sprintf("generations %016x (primary) and %016x (secondary) share no history: both sides wrote on their own", p.Gen, s.Gen)
}
