package cutover

import (
	"testing"
	"time"
)

func fill(w *window, now time.Time, n int, lat time.Duration, failed bool) {
	o := outcomeOK
	if failed {
		o = outcomeError
	}
	for range n {
		w.record(now, lat, o)
	}
}

// The fleet's p99 is computed over every member's requests. One member with 1.5 % slow
// requests has a p99 of 300 ms on its own, but over the fleet (0.75 % slow) the p99 is fast:
// the worst member's p99 would have rolled back a switch that meets the bar.
func TestMergeProbation(t *testing.T) {
	now := time.Now()
	fast, slow := 2*time.Millisecond, 300*time.Millisecond
	a, b := newWindow(4096), newWindow(4096)
	fill(a, now, 1000, fast, false)
	fill(b, now, 985, fast, false)
	fill(b, now, 15, slow, true)
	sa, sb := a.stats(now, now.Add(-time.Minute), time.Second), b.stats(now, now.Add(-time.Minute), time.Second)
	if sb.P99 != slow {
		t.Fatalf("member b alone: p99 %v, want %v", sb.P99, slow)
	}
	tests := []struct {
		name           string
		local          ProbationStats
		peers          []ProbationStats
		requests       int
		errors         int
		p99min, p99max time.Duration
	}{
		{"fleet", sa, []ProbationStats{sb}, 2000, 15, fast, fast * 110 / 100},
		{"other way round", sb, []ProbationStats{sa}, 2000, 15, fast, fast * 110 / 100},
		{"alone", sb, nil, 1000, 15, slow, slow},
		{"peer without buckets counts with its own p99", sa, []ProbationStats{{Requests: 1000, Errors: 15, P99: slow}}, 2000, 15, slow, slow},
		{"idle peer", sb, []ProbationStats{{}}, 1000, 15, slow, slow},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := mergeProbation(tc.local, tc.peers)
			if st.Requests != tc.requests || st.Errors != tc.errors {
				t.Errorf("requests %d errors %d, want %d and %d", st.Requests, st.Errors, tc.requests, tc.errors)
			}
			if st.P99 < tc.p99min || st.P99 > tc.p99max {
				t.Errorf("p99 %v, want within [%v, %v]", st.P99, tc.p99min, tc.p99max)
			}
			if st.Buckets != nil {
				t.Error("merged stats keep buckets (they would reach the status output)")
			}
		})
	}
}

// A bucket's bound is at most 9 % above any latency it holds.
func TestLatencyBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 100 * time.Microsecond, 101 * time.Microsecond,
		time.Millisecond, 7 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 3 * time.Second} {
		b := latBound(latBucket(d))
		if b < d || (d > latBase && float64(b) > 1.091*float64(d)) {
			t.Errorf("%v: bucket %d bound %v", d, latBucket(d), b)
		}
	}
	if i := latBucket(time.Hour); i != latBuckets-1 {
		t.Errorf("an hour: bucket %d, want the last", i)
	}
}
