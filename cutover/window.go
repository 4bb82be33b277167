package cutover

import (
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
