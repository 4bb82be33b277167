package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		v := int64(math.Exp(rng.Float64() * math.Log(float64(maxValue))))
		b := bucketOf(v)
		if b < 0 || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, b)
		}
		lo := bucketLow(b)
		hi := bucketLow(b + 1)
		if b+1 == numBuckets {
			hi = maxValue + 1
		}
		if v < lo || v >= hi {
			t.Fatalf("value %d not in bucket %d [%d,%d)", v, b, lo, hi)
		}
		if mid := bucketMid(b); v > 0 && math.Abs(float64(mid-v))/float64(v) > 0.01 {
			t.Fatalf("midpoint %d of bucket %d is more than 1%% from %d", mid, b, v)
		}
	}
	if bucketOf(-5) != 0 || bucketOf(math.MaxInt64) != numBuckets-1 {
		t.Fatal("out-of-range values are not clamped")
	}
}

func TestHistogramPercentiles(t *testing.T) {
	tests := []struct {
		name string
		gen  func(r *rand.Rand) time.Duration
	}{
		{"lognormal around 2ms", func(r *rand.Rand) time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*0.8) * 2e6)
		}},
		{"uniform 1us..250ms", func(r *rand.Rand) time.Duration {
			return time.Microsecond + time.Duration(r.Int64N(int64(250*time.Millisecond)))
		}},
		{"bimodal with 60s tail", func(r *rand.Rand) time.Duration {
			if r.IntN(100) == 0 {
				return time.Duration(1e9 + r.Int64N(59e9))
			}
			return time.Duration(300e3 + r.Int64N(200e3))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			var h histogram
			vals := make([]time.Duration, 100000)
			for i := range vals {
				vals[i] = tc.gen(rng)
				h.record(vals[i])
			}
			slices.Sort(vals)
			var s histSnap
			h.snapshot(&s)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
				got := s.quantile(q)
				if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.01 {
					t.Errorf("q%.3f: got %v, exact %v (%.2f%% off)", q, got, exact, rel*100)
				}
			}
			if time.Duration(s.max) != vals[len(vals)-1] {
				t.Errorf("max %v, want %v", time.Duration(s.max), vals[len(vals)-1])
			}
		})
	}
}

func TestSampleLogDecimates(t *testing.T) {
	l := newSampleLog(2 * chunkSize)
	const n = 5 * chunkSize
	for i := 0; i < n; i++ {
		l.add(packSample(int64(i), 3, opDecrypt, i%2))
	}
	var kept int
	var prev int64 = -1
	stride := l.each(func(s uint64) {
		us, b, op, _ := unpackSample(s)
		if us <= prev || b != 3 || op != opDecrypt {
			t.Fatalf("bad sample us=%d prev=%d bucket=%d op=%v", us, prev, b, op)
		}
		prev = us
		kept++
	})
	if stride < 2 || kept > 2*chunkSize {
		t.Fatalf("stride %d kept %d: log did not stay bounded", stride, kept)
	}
	if est := kept * stride; est < n*9/10 || est > n*11/10 {
		t.Fatalf("estimated count %d, want about %d", est, n)
	}
}

func TestPackSampleRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		us     int64
		bucket int
		op     opKind
		ei     int
	}{{0, 0, opEncrypt, 0}, {1<<40 - 1, numBuckets - 1, numOps, len(errNames) - 1}, {123456789, 1000, opCreateKey, 5}} {
		us, b, op, ei := unpackSample(packSample(tc.us, tc.bucket, tc.op, tc.ei))
		if us != tc.us || b != tc.bucket || op != tc.op || ei != tc.ei {
			t.Errorf("round trip of %+v gave %d %d %v %d", tc, us, b, op, ei)
		}
	}
}
