package cutover

import (
	"math"
	"slices"
	"sync"
	"time"
)

// window keeps the last n target observations (bounded memory) for the
// probation error rate and p99 over a sliding time window.
type window struct {
	mu      sync.Mutex
	at      []time.Time
	lat     []time.Duration
	err     []bool
	next, n int
	scratch []time.Duration
}

func newWindow(size int) *window {
	return &window{at: make([]time.Time, size), lat: make([]time.Duration, size), err: make([]bool, size)}
}

func (w *window) record(at time.Time, lat time.Duration, failed bool) {
	w.mu.Lock()
	w.at[w.next], w.lat[w.next], w.err[w.next] = at, lat, failed
	w.next = (w.next + 1) % len(w.at)
	w.n = min(w.n+1, len(w.at))
	w.mu.Unlock()
}

func (w *window) reset() {
	w.mu.Lock()
	w.next, w.n = 0, 0
	w.mu.Unlock()
}

// ProbationStats are the target's figures over the probation window.
type ProbationStats struct {
	Requests  int           `json:"requests"`
	Errors    int           `json:"errors"`
	ErrorRate float64       `json:"error_rate"`
	P99       time.Duration `json:"p99_ns"`
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

func (w *window) stats(now time.Time, span time.Duration) ProbationStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	from := now.Add(-span)
	w.scratch = w.scratch[:0]
	var st ProbationStats
	for i := range w.n {
		if w.at[i].Before(from) {
			continue
		}
		st.Requests++
		if w.err[i] {
			st.Errors++
		}
		w.scratch = append(w.scratch, w.lat[i])
		if st.Buckets == nil {
			st.Buckets = map[int]int{}
		}
		st.Buckets[latBucket(w.lat[i])]++
	}
	if st.Requests == 0 {
		return st
	}
	st.ErrorRate = float64(st.Errors) / float64(st.Requests)
	slices.Sort(w.scratch)
	idx := (99*len(w.scratch)+99)/100 - 1
	st.P99 = w.scratch[idx]
	return st
}
