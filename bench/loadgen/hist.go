package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear (HDR-style): values below 2^subBits ns are exact, above
// that each power of two is split into 2^subBits equal buckets, so a bucket's width is at most
// 1/128 of its lower bound and its midpoint is within 0.4% of any value in it. Values are
// nanoseconds; the top bucket saturates at maxValue (~137 s), beyond the 60 s we care about.
const (
	subBits    = 7
	subCount   = 1 << subBits
	maxExp     = 37 - subBits // bits.Len64(maxValue) - 1 - subBits
	numBuckets = (maxExp + 1) * subCount
	maxValue   = 1<<37 - 1
)

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	exp := bits.Len64(u) - 1 - subBits // ≥ 0
	mant := u >> uint(exp)             // in [subCount, 2*subCount)
	return (exp+1)*subCount + int(mant-subCount)
}

// bucketLow returns the smallest value in bucket i; bucketMid its midpoint (the reported value).
func bucketLow(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	exp := i/subCount - 1
	mant := uint64(i%subCount + subCount)
	return int64(mant << uint(exp))
}

func bucketMid(i int) int64 {
	if i < subCount {
		return int64(i)
	}
	exp := i/subCount - 1
	return bucketLow(i) + (int64(1)<<uint(exp))/2
}

// histogram is a fixed-size (32 KB) latency histogram, safe for concurrent Record and Snapshot
// (atomic counters: lock-free, and uncontended at the rates an XKS endpoint sees).
type histogram struct {
	counts [numBuckets]atomic.Uint64
	max    atomic.Int64
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(int64(d))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// histSnap is a plain copy of a histogram for percentile queries.
type histSnap struct {
	counts [numBuckets]uint64
	total  uint64
	max    int64
}

func (h *histogram) snapshot(into *histSnap) {
	for i := range h.counts {
		c := h.counts[i].Load()
		into.counts[i] += c
		into.total += c
	}
	if m := h.max.Load(); m > into.max {
		into.max = m
	}
}

func (s *histSnap) add(bucket int) {
	s.counts[bucket]++
	s.total++
}

// quantile returns the value at quantile q (0..1): the midpoint of the bucket holding the
// ceil(q*total)-th smallest value, clamped to the recorded maximum.
func (s *histSnap) quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.total) + 0.9999999)
	if rank < 1 {
		rank = 1
	}
	if rank > s.total {
		rank = s.total
	}
	var seen uint64
	for i := range s.counts {
		seen += s.counts[i]
		if seen >= rank {
			v := bucketMid(i)
			if s.max > 0 && v > s.max {
				v = s.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(s.max)
}
