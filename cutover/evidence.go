package cutover

import (
	"fmt"
	"math"
	"time"
)

// Probation decides on evidence. What counts against the target is only its own doing (judge.go,
// probation.go): a refusal the source gives too is the caller's, a KeyNotFound for a key the
// migration is still placing is the migration's, and latency is the target's own attempt time.
// Failures are timeouts (no answer in time) or definite errors. Over the window (since the
// switch, at most the configured window), every tick:
//
//   - hard ceiling: once the switch is hardSpan old, a target failing more than hardErrorRate of
//     at least hardMinRequests requests in the last hardSpan is rolled back at once;
//   - with fewer than MinRequests requests nothing else is decided (too thin);
//   - definite errors: rolled back when the lower bound of their rate (Wilson score, 95 %)
//     exceeds MaxErrorRate;
//   - failures with timeouts, once the switch is hardSpan old: rolled back when that bound
//     exceeds MaxErrorRate over the window and in each half of it (its older and newer
//     requests), so that a burst (a cold pool right after the switch) is not a verdict but a
//     failure rate that persists is;
//   - latency, once the switch is hardSpan old: rolled back when the share of answers slower
//     than MaxP99 has a lower bound above 1 % over the window and in each half (the p99 is
//     above MaxP99, and stays there);
//   - otherwise, when a rate is above its threshold without the evidence to say so, probation
//     keeps watching: it neither rolls back nor passes.

const (
	evidenceZ       = 1.96 // 95 % (two-sided) Wilson score bounds
	hardSpan        = 5 * time.Second
	hardMinRequests = 20
	hardErrorRate   = 0.5
	slowShare       = 0.01 // a p99 above MaxP99 is more than 1 % of answers slower than it
)

// wilsonLower is the lower bound of the Wilson score interval of x successes in n trials.
func wilsonLower(x, n int) float64 {
	if n <= 0 || x <= 0 {
		return 0
	}
	fn, p, z2 := float64(n), float64(x)/float64(n), evidenceZ*evidenceZ
	centre := p + z2/(2*fn)
	margin := evidenceZ * math.Sqrt(p*(1-p)/fn+z2/(4*fn*fn))
	return max(0, (centre-margin)/(1+z2/fn))
}

// verdict is probation's reading of the evidence: a rollback (category set, with its reason), or
// watching (set when a rate is above its threshold but the evidence does not say so yet).
type verdict struct {
	category, reason string
	watching         string
}

// judgeEvidence reads st (the window over the fleet) against p; since is the time since the
// switch.
func judgeEvidence(st ProbationStats, p ProbationConfig, target string, since time.Duration) verdict {
	maxRate := *p.MaxErrorRate
	if r := st.Recent; since >= hardSpan && r.Requests >= hardMinRequests &&
		float64(r.Errors) > max(hardErrorRate, maxRate)*float64(r.Requests) {
		return verdict{category: "hard_ceiling", reason: fmt.Sprintf(
			"probation: %s failed %d of its last %d requests (%d timeouts) within %s: past the hard ceiling of %.0f%%",
			target, r.Errors, r.Requests, r.Timeouts, hardSpan, 100*max(hardErrorRate, maxRate))}
	}
	answered := st.Requests - st.Timeouts
	slowRate := 0.0
	if answered > 0 {
		slowRate = float64(st.Slow) / float64(answered)
	}
	if st.Requests < *p.MinRequests {
		if st.ErrorRate > maxRate || slowRate > slowShare {
			return verdict{watching: fmt.Sprintf("%d of the %d requests needed to judge %s (error rate %.2f%%, p99 %s so far)",
				st.Requests, *p.MinRequests, target, 100*st.ErrorRate, st.P99.Round(time.Microsecond))}
		}
		return verdict{}
	}
	definite := st.Errors - st.Timeouts
	switch {
	case maxRate == 0 && st.Errors > 0:
		return verdict{category: "error_rate", reason: fmt.Sprintf(
			"probation: %d of %d requests on %s failed (%d timeouts); the maximum error rate is 0",
			st.Errors, st.Requests, target, st.Timeouts)}
	case wilsonLower(definite, st.Requests) > maxRate:
		return verdict{category: "error_rate", reason: fmt.Sprintf(
			"probation: %d definite errors in %d requests on %s: error rate %.2f%%, at least %.2f%% at 95%% confidence, exceeds %.2f%%",
			definite, st.Requests, target, 100*float64(definite)/float64(st.Requests), 100*wilsonLower(definite, st.Requests), 100*maxRate)}
	case since >= hardSpan && persists(st, func(t Tally) (int, int) { return t.Errors, t.Requests }, maxRate):
		return verdict{category: "error_rate", reason: fmt.Sprintf(
			"probation: error rate %.2f%% (%d of %d requests, %d timeouts) on %s exceeds %.2f%% at 95%% confidence, in both halves of the window",
			100*st.ErrorRate, st.Errors, st.Requests, st.Timeouts, target, 100*maxRate)}
	case since >= hardSpan && persists(st, func(t Tally) (int, int) { return t.Slow, t.Requests - t.Timeouts }, slowShare):
		return verdict{category: "p99", reason: fmt.Sprintf(
			"probation: p99 latency %s on %s exceeds %s: %d of %d answers slower, more than 1%% at 95%% confidence in both halves of the window",
			st.P99.Round(time.Microsecond), target, p.MaxP99, st.Slow, answered)}
	case st.ErrorRate > maxRate:
		return verdict{watching: fmt.Sprintf("error rate %.2f%% on %s (%d of %d requests, %d timeouts) is above %.2f%% without the evidence to roll back (too few requests, or a burst); watching",
			100*st.ErrorRate, target, st.Errors, st.Requests, st.Timeouts, 100*maxRate)}
	case slowRate > slowShare:
		return verdict{watching: fmt.Sprintf("p99 %s on %s is above %s without the evidence to roll back (too few requests, or a burst); watching",
			st.P99.Round(time.Microsecond), target, p.MaxP99)}
	}
	return verdict{}
}

// persists reports whether the rate part gives (x of n) has a lower bound above limit over the
// window and in each of its halves.
func persists(st ProbationStats, part func(Tally) (x, n int), limit float64) bool {
	all := Tally{Requests: st.Requests, Errors: st.Errors, Timeouts: st.Timeouts, Slow: st.Slow}
	for _, t := range []Tally{all, st.Halves[0], st.Halves[1]} {
		if x, n := part(t); wilsonLower(x, n) <= limit {
			return false
		}
	}
	return true
}
