package cutover

import (
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// signals are what the pace reads of live traffic and of its own work, gathered without a lock or
// an allocation: every finished XKS request's latency and the proxy's in-flight count when it was
// admitted (Traffic.ObserveRequest), each live backend attempt's own time and whether it failed
// for want of an answer (Traffic.Observe), and each background call's time and transient
// failure (retry). The pace's loop takes them every tick.
type signals struct {
	req      [latBuckets]atomic.Uint32
	reqN     atomic.Uint64
	inflight atomic.Uint64  // sum of the requests' in-flight counts
	live, bg [2]sideSignals // by side: 0 source, 1 target
}

type sideSignals struct{ n, micros, fails atomic.Uint64 }

func (s *sideSignals) add(d time.Duration, failed bool) {
	s.n.Add(1)
	s.micros.Add(uint64(max(d, 0) / time.Microsecond))
	if failed {
		s.fails.Add(1)
	}
}

func (s *sideSignals) take() sideSample {
	n, us, f := s.n.Swap(0), s.micros.Swap(0), s.fails.Swap(0)
	return sideSample{n: n, micros: us, fails: f}
}

func (s *signals) request(d time.Duration, inFlight int) {
	s.req[latBucket(d)].Add(1)
	s.reqN.Add(1)
	s.inflight.Add(uint64(max(inFlight, 0)))
}

// overload reports whether a backend's answer says it is overloaded or out of reach (not a
// refusal, which says nothing of load).
func overload(n xks.ErrorName) bool {
	return n == xks.DependencyTimeoutException || n == xks.ThrottlingException || n == xks.InternalException
}

// tick is one tick's worth of signals.
type tick struct {
	req      [latBuckets]uint32
	reqN     uint64
	inflight uint64
	live, bg [2]sideSample
}

type sideSample struct{ n, micros, fails uint64 }

func (a sideSample) plus(b sideSample) sideSample {
	return sideSample{n: a.n + b.n, micros: a.micros + b.micros, fails: a.fails + b.fails}
}

// mean is the mean latency (0 without a sample).
func (a sideSample) mean() time.Duration {
	if a.n == 0 {
		return 0
	}
	return time.Duration(a.micros/a.n) * time.Microsecond
}

func (s *signals) take() tick {
	var t tick
	for i := range s.req {
		t.req[i] = s.req[i].Swap(0)
	}
	t.reqN, t.inflight = s.reqN.Swap(0), s.inflight.Swap(0)
	for i := range 2 {
		t.live[i], t.bg[i] = s.live[i].take(), s.bg[i].take()
	}
	return t
}

// figures are the signals over the last few ticks, as the pace judges them.
type figures struct {
	requests     uint64
	p99          time.Duration // requests' p99 (0 with too few requests)
	inflight     float64       // mean in-flight count at admission
	live, bg     [2]sideSample
	liveN, bgN   [2]uint64
	enough, busy bool // enough requests for a p99; some background calls were made
}

// Least samples for a figure to mean something. A p99 of fewer than 100 requests is their
// slowest one or two: at 30 requests a second a replica would cut the pace for one slow request
// (its backends' latency still counts from minAttempts).
const (
	minRequests = 100
	minAttempts = 10
	minCalls    = 5
)

// sum adds up ticks into figures.
func sum(ts []tick) figures {
	var f figures
	var hist [latBuckets]uint64
	var inflight uint64
	for i := range ts {
		t := &ts[i]
		for b, n := range t.req {
			hist[b] += uint64(n)
		}
		f.requests += t.reqN
		inflight += t.inflight
		for s := range 2 {
			f.live[s], f.bg[s] = f.live[s].plus(t.live[s]), f.bg[s].plus(t.bg[s])
		}
	}
	if f.requests > 0 {
		f.inflight = float64(inflight) / float64(f.requests)
	}
	if f.enough = f.requests >= minRequests; f.enough {
		rank, seen := (99*f.requests+99)/100, uint64(0)
		for b, n := range hist {
			if seen += n; seen >= rank {
				f.p99 = latBound(b)
				break
			}
		}
	}
	for s := range 2 {
		f.liveN[s], f.bgN[s] = f.live[s].n, f.bg[s].n
		f.busy = f.busy || f.bg[s].n >= minCalls
	}
	return f
}

// baseline is what the signals were before the migration loaded the backends: the median of the
// figures seen while no migration ran (the last baseWindow of them), frozen while one runs.
type baseline struct {
	p99, inflight []float64
	live          [2][]float64
	bgMin         [2]time.Duration // the lowest background latency seen in this migration
}

const baseWindow = 120 // figures (a minute at one a tick)

func keep(v []float64, x float64) []float64 {
	if len(v) == baseWindow {
		v = append(v[:0], v[1:]...)
	}
	return append(v, x)
}

// note records f as what no migration looks like.
func (b *baseline) note(f figures) {
	if f.enough {
		b.p99 = keep(b.p99, float64(f.p99))
		b.inflight = keep(b.inflight, f.inflight)
	}
	for s := range 2 {
		if f.liveN[s] >= minAttempts {
			b.live[s] = keep(b.live[s], float64(f.live[s].mean()))
		}
	}
}

// noteBackground keeps the lowest background latency of each side (the uncongested one).
func (b *baseline) noteBackground(f figures) {
	for s := range 2 {
		if f.bgN[s] >= minCalls {
			if m := f.bg[s].mean(); b.bgMin[s] == 0 || m < b.bgMin[s] {
				b.bgMin[s] = max(m, time.Microsecond)
			}
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}
