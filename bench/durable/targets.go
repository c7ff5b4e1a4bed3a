package durable

import (
	"fmt"
	"time"

	"github.com/twinblock/twinblock/bench"
)

// ratio builds a target whose value is num/den; invalid when either is
// missing or den is zero.
func ratio(name string, cmp Cmp, goal float64, num, den float64, ok bool, inputs string) Target {
	t := Target{Name: name, Cmp: cmp, Goal: goal, Unit: "×", Inputs: inputs}
	if ok && den > 0 {
		t.Value, t.Valid = num/den, true
	}
	return t
}

func rate(m *Measure) float64 {
	if m == nil {
		return 0
	}
	return m.Rate
}

func p50(m *Measure) time.Duration {
	if m == nil {
		return 0
	}
	return m.P50
}

// rateRatio is num's rate over den's rate in one round.
func rateRatio(num, den string) func(map[string]Measure) (float64, bool) {
	return func(m map[string]Measure) (float64, bool) {
		if m[den].Rate <= 0 {
			return 0, false
		}
		return m[num].Rate / m[den].Rate, true
	}
}

// journalTargets are issue 3's goals, computed from the medians.
func journalTargets(r *Report) []Target {
	ts := journalTargetsFromMedians(r)
	ts[0].PerRound = r.perRound([]string{RowNBDQD32, RowNBDQD1}, rateRatio(RowNBDQD32, RowNBDQD1))
	ts[1].PerRound = r.perRound([]string{RowNBDQD1, RowBaseline}, func(m map[string]Measure) (float64, bool) {
		if m[RowBaseline].P50 <= 0 {
			return 0, false
		}
		return float64(m[RowNBDQD1].P50) / float64(m[RowBaseline].P50), true
	})
	ts[2].PerRound = r.perRound([]string{RowJournal32, RowJournal1}, rateRatio(RowJournal32, RowJournal1))
	return ts
}

func journalTargetsFromMedians(r *Report) []Target {
	qd1, qd32, base := r.median(RowNBDQD1), r.median(RowNBDQD32), r.median(RowBaseline)
	j1, j32 := r.median(RowJournal1), r.median(RowJournal32)
	return []Target{
		ratio("NBD QD32 IOPS / QD1 IOPS (group commit)", AtLeast, GroupCommitGoal,
			rate(qd32), rate(qd1), qd1 != nil && qd32 != nil,
			fmt.Sprintf("%s / %s IOPS", bench.FormatCount(rate(qd32)), bench.FormatCount(rate(qd1)))),
		ratio("NBD QD1 p50 / plain write+fdatasync p50", AtMost, LatencyGoal,
			float64(p50(qd1)), float64(p50(base)), qd1 != nil && base != nil,
			fmt.Sprintf("%s / %s", bench.FormatLatency(p50(qd1)), bench.FormatLatency(p50(base)))),
		ratio("journal appends/s: 32 appenders / 1 appender", AtLeast, GroupCommitGoal,
			rate(j32), rate(j1), j1 != nil && j32 != nil,
			fmt.Sprintf("%s / %s appends/s", bench.FormatCount(rate(j32)), bench.FormatCount(rate(j1)))),
	}
}

// Floor is the least latency a replicated 4 KiB write can have on this
// machine: a write + fdatasync while the peer's journal syncs on the same
// disk (two streams at once), plus the loopback round trip.
func Floor(streams2, rtt *Measure) time.Duration {
	return p50(streams2) + p50(rtt)
}

// WANGoal is the IOPS a QD32 sync pair should reach across a link with
// this one-way latency: WANEfficiencyGoal × 32 requests per round trip.
func WANGoal(oneWay time.Duration) float64 {
	if oneWay <= 0 {
		return 0
	}
	return WANEfficiencyGoal * 32 / (2 * oneWay).Seconds()
}

// pairTargets are issue 4's goals, computed from the medians.
func pairTargets(r *Report, wanLatency time.Duration) []Target {
	sa32, p32, p1 := r.median(RowStandaloneQD32), r.median(RowPairQD32), r.median(RowPairQD1)
	s2, rtt := r.median(RowStreams2), r.median(RowRTT)
	wan := r.median("wan-sync-qd32")
	floor := Floor(s2, rtt)
	ts := []Target{
		ratio("sync pair QD32 IOPS / standalone QD32 IOPS", AtLeast, PairIOPSGoal,
			rate(p32), rate(sa32), p32 != nil && sa32 != nil,
			fmt.Sprintf("%s / %s IOPS", bench.FormatCount(rate(p32)), bench.FormatCount(rate(sa32)))),
		ratio("sync pair QD1 p50 / floor", AtMost, LatencyGoal,
			float64(p50(p1)), float64(floor), p1 != nil && s2 != nil && rtt != nil,
			fmt.Sprintf("%s / (%s write+fdatasync with a 2nd stream + %s loopback RTT = %s)",
				bench.FormatLatency(p50(p1)), bench.FormatLatency(p50(s2)), bench.FormatLatency(p50(rtt)), bench.FormatLatency(floor))),
	}
	w := Target{
		Name: fmt.Sprintf("sync pair across %s RTT, QD32 IOPS", 2*wanLatency), Cmp: AtLeast,
		Goal: WANGoal(wanLatency), Unit: "IOPS",
		Inputs: fmt.Sprintf("goal %.1f × 32 / %s", WANEfficiencyGoal, 2*wanLatency),
	}
	if wan != nil && wanLatency > 0 {
		w.Value, w.Valid = wan.Rate, true
	}
	ts = append(ts, w)
	ts[0].PerRound = r.perRound([]string{RowPairQD32, RowStandaloneQD32}, rateRatio(RowPairQD32, RowStandaloneQD32))
	ts[1].PerRound = r.perRound([]string{RowPairQD1, RowStreams2, RowRTT}, func(m map[string]Measure) (float64, bool) {
		f := m[RowStreams2].P50 + m[RowRTT].P50
		if f <= 0 {
			return 0, false
		}
		return float64(m[RowPairQD1].P50) / float64(f), true
	})
	ts[2].PerRound = r.perRound([]string{"wan-sync-qd32"}, func(m map[string]Measure) (float64, bool) {
		return m["wan-sync-qd32"].Rate, true
	})
	return ts
}
