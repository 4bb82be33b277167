package cutover

import (
	"math"
	"slices"
	"sync"
	"time"
)

// outcome is how one request to the target counts in the probation window.
type outcome uint8

const (
	outcomeOK      outcome = iota // answered, or refused the way the source refuses it too
	outcomeError                  // a definite error the source would not have given
	outcomeTimeout                // no answer in time: DependencyTimeout, Throttling
)

// window keeps the last n target observations (bounded memory) for the probation's evidence
// over a sliding time window.
type window struct {
	mu      sync.Mutex
	at      []time.Time
	lat     []time.Duration
	out     []outcome
	next, n int
	scratch []time.Duration
}

func newWindow(size int) *window {
	return &window{at: make([]time.Time, size), lat: make([]time.Duration, size), out: make([]outcome, size)}
}

func (w *window) record(at time.Time, lat time.Duration, o outcome) {
	w.mu.Lock()
	w.at[w.next], w.lat[w.next], w.out[w.next] = at, lat, o
	w.next = (w.next + 1) % len(w.at)
	w.n = min(w.n+1, len(w.at))
	w.mu.Unlock()
}

func (w *window) reset() {
	w.mu.Lock()
	w.next, w.n = 0, 0
	w.mu.Unlock()
}

// Tally counts a part of the window: requests, every failure counted against the target
// (timeouts included), the timeouts among them, and the answers slower than the probation's
// maximum p99.
type Tally struct {
	Requests int `json:"requests"`
	Errors   int `json:"errors"`
	Timeouts int `json:"timeouts,omitempty"`
	Slow     int `json:"slow,omitempty"`
}

func (t *Tally) add(o outcome, slow bool) {
	t.Requests++
	switch o {
	case outcomeError:
		t.Errors++
	case outcomeTimeout:
		t.Errors++
		t.Timeouts++
	}
	if slow && o != outcomeTimeout {
		t.Slow++
	}
}

func (t Tally) plus(o Tally) Tally {
	return Tally{Requests: t.Requests + o.Requests, Errors: t.Errors + o.Errors, Timeouts: t.Timeouts + o.Timeouts, Slow: t.Slow + o.Slow}
}

// ProbationStats are the target's figures over the probation window: since the switch, over at
// most the configured window (and what the bounded window holds).
type ProbationStats struct {
	Requests int `json:"requests"`
	// Errors counts every failure against the target, Timeouts those among them that were no
	// answer in time; the others are definite errors.
	Errors    int           `json:"errors"`
	Timeouts  int           `json:"timeouts"`
	ErrorRate float64       `json:"error_rate"`
	P99       time.Duration `json:"p99_ns"`
	// Slow counts the answers (timeouts aside) slower than the maximum p99.
	Slow int `json:"slow"`
	// Halves are the window's older and newer halves (its requests in the order they came): a
	// failure rate or a latency that persists shows in both, a burst in one.
	Halves [2]Tally `json:"halves"`
	// Recent is the last hardSpan (the hard ceiling's).
	Recent Tally `json:"recent"`
	// Buckets counts the window's latencies by latBucket (only the non-empty ones): what a
	// member publishes so that the driver computes the fleet's p99 from every request, not
	// from the members' own p99s.
	Buckets map[int]int `json:"buckets,omitempty"`
}

// Latency buckets for merging p99s: bucket i holds latencies up to 100 µs × 2^(i/8) (9 % wide),
// the last one everything longer (about 12 s).
const (
	latBase    = 100 * time.Microsecond
	latBuckets = 136
)

func latBound(i int) time.Duration { return time.Duration(float64(latBase) * math.Exp2(float64(i)/8)) }

func latBucket(d time.Duration) int {
	if d <= latBase {
		return 0
	}
	return min(int(math.Ceil(8*math.Log2(float64(d)/float64(latBase)))), latBuckets-1)
}

// bucketP99 is the upper bound of the bucket holding the 99th percentile of n latencies (at
// most 9 % above the exact figure).
func bucketP99(b map[int]int, n int) time.Duration {
	if n == 0 {
		return 0
	}
	rank := (99*n + 99) / 100
	idx := make([]int, 0, len(b))
	for i := range b {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	seen := 0
	for _, i := range idx {
		if seen += b[i]; seen >= rank {
			return latBound(i)
		}
	}
	return latBound(latBuckets - 1)
}

// mergeProbation adds the peers' windows to local's: requests and errors summed, the p99 that
// of every request of the fleet (from the buckets; a peer that publishes none counts with its
// own p99, a conservative bound). The result has no buckets.
func mergeProbation(local ProbationStats, peers []ProbationStats) ProbationStats {
	st := local
	st.Buckets = nil
	merged := make(map[int]int, len(local.Buckets))
	for i, c := range local.Buckets {
		merged[i] += c
	}
	n, others := local.Requests, false
	var floor time.Duration
	for _, q := range peers {
		if q.Requests == 0 {
			continue
		}
		others = true
		st.Requests += q.Requests
		st.Errors += q.Errors
		st.Timeouts += q.Timeouts
		st.Slow += q.Slow
		st.Halves[0], st.Halves[1] = st.Halves[0].plus(q.Halves[0]), st.Halves[1].plus(q.Halves[1])
		st.Recent = st.Recent.plus(q.Recent)
		if q.Buckets == nil {
			floor = max(floor, q.P99)
			continue
		}
		for i, c := range q.Buckets {
			merged[i] += c
		}
		n += q.Requests
	}
	if others {
		st.P99 = max(bucketP99(merged, n), floor)
	}
	if st.Requests > 0 {
		st.ErrorRate = float64(st.Errors) / float64(st.Requests)
	}
	return st
}

// stats are the window's figures for the requests recorded since from (an answer slower than
// slow is Slow); the halves split those requests in the order they came.
func (w *window) stats(now, from time.Time, slow time.Duration) ProbationStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scratch = w.scratch[:0]
	var st ProbationStats
	size, oldest := len(w.at), (w.next-w.n+len(w.at))%len(w.at)
	for k := range w.n {
		i := (oldest + k) % size
		if w.at[i].Before(from) {
			continue
		}
		st.Requests++
		w.scratch = append(w.scratch, w.lat[i])
		if st.Buckets == nil {
			st.Buckets = map[int]int{}
		}
		st.Buckets[latBucket(w.lat[i])]++
	}
	if st.Requests == 0 {
		return st
	}
	recent, seen := now.Add(-hardSpan), 0
	var all Tally
	for k := range w.n {
		i := (oldest + k) % size
		at := w.at[i]
		if at.Before(from) {
			continue
		}
		s := w.lat[i] > slow
		all.add(w.out[i], s)
		h := 0
		if seen >= st.Requests/2 {
			h = 1
		}
		seen++
		st.Halves[h].add(w.out[i], s)
		if !at.Before(recent) {
			st.Recent.add(w.out[i], s)
		}
	}
	st.Errors, st.Timeouts, st.Slow = all.Errors, all.Timeouts, all.Slow
	st.ErrorRate = float64(st.Errors) / float64(st.Requests)
	slices.Sort(w.scratch)
	idx := (99*len(w.scratch)+99)/100 - 1
	st.P99 = w.scratch[idx]
	return st
}
