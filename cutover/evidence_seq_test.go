package cutover

import (
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// seqProbation is a probation on a switched ledger with a clock the test moves: sequences of
// requests are fed at a given rate and the verdict is read every second, as watchProbation does.
type seqProbation struct {
	p   *probation
	now time.Time
	sw  time.Time
}

func newSeqProbation(t *testing.T) *seqProbation {
	t.Helper()
	s := &seqProbation{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s.sw = s.now
	m, err := newMetrics(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Target: Backend{Name: "B"}, Now: func() time.Time { return s.now },
		Probation: ProbationConfig{Duration: 10 * time.Minute, MaxErrorRate: new(0.01), MaxP99: 100 * time.Millisecond,
			MinRequests: new(100), Window: time.Minute}}
	book := newLedger(slog.New(slog.DiscardHandler), m, cfg.Now, nil, nil, time.Second)
	book.adopt(&journal{Header: Header{Version: journalVersion, State: StateSwitched, Source: "A", Target: "B", SwitchedAt: s.sw},
		Keys: map[string]*KeyProgress{}, CreatedOnTarget: []string{"created-on-b"}, CreatedDuring: []string{"created-on-a"}})
	s.p = newProbation(cfg, book, newControl(), m)
	return s
}

// req is one request to the target as the proxy reports it.
type req struct {
	err      xks.ErrorName
	lat      time.Duration
	keyID    string
	fellBack xks.ErrorName // set: the target failed and the source then answered with this ("-" for success)
}

// run feeds rate requests a second for d, request i being gen(i), and reads the verdict at
// every second. It returns the first rollback (with the requests seen then), or the last verdict.
func (s *seqProbation) run(rate int, d time.Duration, gen func(i int) req) (v verdict, at int) {
	step := time.Second / time.Duration(rate)
	next := s.now.Add(time.Second)
	for i := 0; s.now.Before(s.sw.Add(d)); i++ {
		r := gen(i)
		switch r.fellBack {
		case "":
			s.p.observe("B", r.err, r.lat, false)
		case "-":
			s.p.observeFellBack("B", r.keyID, r.err, r.lat, "")
		default:
			s.p.observeFellBack("B", r.keyID, r.err, r.lat, r.fellBack)
		}
		s.now = s.now.Add(step)
		if !s.now.Before(next) {
			next = next.Add(time.Second)
			if v = s.p.verdict(s.now); v.category != "" {
				return v, i + 1
			}
		}
	}
	return s.p.verdict(s.now), 0
}

// every returns true for about share of the requests, evenly spread.
func every(i int, share float64) bool {
	return math.Floor(float64(i+1)*share) > math.Floor(float64(i)*share)
}

// Probation decides on evidence: deterministic sequences of what the target answers, each with
// the verdict it must reach.
func TestProbationDecidesOnEvidence(t *testing.T) {
	ok := req{lat: 3 * time.Millisecond}
	tests := []struct {
		name     string
		rate     int
		d        time.Duration
		gen      func(i int) req
		rollback string // "": none, and probation may pass at the end
		watching bool   // at the end: above a threshold without the evidence
	}{
		{name: "a burst of timeouts right after the switch", rate: 100, d: 90 * time.Second, gen: func(i int) req {
			if i < 60 { // the first 0.6 s: the pool to the target is cold, everything times out
				return req{err: xks.DependencyTimeoutException, lat: 125 * time.Millisecond, fellBack: "-"}
			}
			return ok
		}},
		{name: "the same burst at 1800 requests a second", rate: 1800, d: 20 * time.Second, gen: func(i int) req {
			if i < 225 {
				return req{err: xks.DependencyTimeoutException, lat: 125 * time.Millisecond, fellBack: "-"}
			}
			return ok
		}},
		{name: "a steady 2 % of definite errors", rate: 100, d: 5 * time.Minute, rollback: "error_rate", gen: func(i int) req {
			if every(i, 0.02) {
				return req{err: xks.InternalException, lat: 3 * time.Millisecond}
			}
			return ok
		}},
		{name: "a steady 2 % of timeouts", rate: 100, d: 5 * time.Minute, rollback: "error_rate", gen: func(i int) req {
			if every(i, 0.02) {
				return req{err: xks.DependencyTimeoutException, lat: 125 * time.Millisecond, fellBack: "-"}
			}
			return ok
		}},
		{name: "a steady 0.5 % of definite errors", rate: 100, d: 5 * time.Minute, gen: func(i int) req {
			if every(i, 0.005) {
				return req{err: xks.InternalException, lat: 3 * time.Millisecond}
			}
			return ok
		}},
		{name: "1.2 %: above the threshold, never significant in the window", rate: 60, d: 3 * time.Minute, watching: true, gen: func(i int) req {
			if every(i, 0.012) {
				return req{err: xks.InternalException, lat: 3 * time.Millisecond}
			}
			return ok
		}},
		{name: "a caller sending unknown ids", rate: 100, d: 2 * time.Minute, gen: func(i int) req {
			if every(i, 0.1) { // the target lacks it, falls back, the source lacks it too
				return req{err: xks.KeyNotFoundException, lat: 2 * time.Millisecond, keyID: fmt.Sprintf("nobody-%d", i), fellBack: xks.KeyNotFoundException}
			}
			return ok
		}},
		{name: "new keys not yet copied to the target", rate: 100, d: 2 * time.Minute, gen: func(i int) req {
			if every(i, 0.05) { // created on the source during the migration; the source serves it
				return req{err: xks.KeyNotFoundException, lat: 2 * time.Millisecond, keyID: "created-on-a", fellBack: "-"}
			}
			return ok
		}},
		{name: "a key the target lost and the source still serves", rate: 100, d: 2 * time.Minute, rollback: "error_rate", gen: func(i int) req {
			if every(i, 0.05) {
				return req{err: xks.KeyNotFoundException, lat: 2 * time.Millisecond, keyID: "migrated-key", fellBack: "-"}
			}
			return ok
		}},
		{name: "CreateKeys at 2 % of the mix, judged on the target's own time", rate: 100, d: 2 * time.Minute, gen: func(i int) req {
			if every(i, 0.02) {
				return req{lat: 4 * time.Millisecond} // the mint; the proxy's checks and copy are not the target's
			}
			return ok
		}},
		{name: "CreateKeys at 2 % of the mix, had they been judged on the request's time", rate: 100, d: 2 * time.Minute, rollback: "p99", gen: func(i int) req {
			if every(i, 0.02) {
				return req{lat: 240 * time.Millisecond}
			}
			return ok
		}},
		{name: "a target that fails everything", rate: 100, d: time.Minute, rollback: "hard_ceiling", gen: func(i int) req {
			return req{err: xks.DependencyTimeoutException, lat: 125 * time.Millisecond, fellBack: "-"}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSeqProbation(t)
			v, at := s.run(tc.rate, tc.d, tc.gen)
			if v.category != tc.rollback {
				t.Fatalf("verdict %+v after %d requests, want rollback %q", v, at, tc.rollback)
			}
			if tc.rollback != "" && tc.rollback != "hard_ceiling" && at < 100 {
				t.Errorf("rolled back after %d requests, fewer than the minimum to judge", at)
			}
			if (v.watching != "") != tc.watching {
				t.Errorf("watching %q at the end, want %v", v.watching, tc.watching)
			}
		})
	}
}

func TestWilsonLower(t *testing.T) {
	for _, tc := range []struct {
		x, n     int
		min, max float64
	}{
		{0, 100, 0, 0}, {1, 1, 0.2, 0.21}, {2, 109, 0.005, 0.0066}, {20, 1000, 0.0129, 0.0131}, {500, 1000, 0.469, 0.47},
	} {
		if got := wilsonLower(tc.x, tc.n); got < tc.min || got > tc.max {
			t.Errorf("wilsonLower(%d, %d) = %.5f, want in [%.4f, %.4f]", tc.x, tc.n, got, tc.min, tc.max)
		}
	}
}
