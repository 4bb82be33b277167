package loadgen

import "sync"

// sampleLog keeps one 8-byte entry per request for Window queries: start offset in µs (40
// bits, ~12 days), latency bucket (12 bits, the histogram's), operation (4 bits) and error
// index (8 bits). It grows in 64 Ki chunks up to maxSamples; when full it drops every other
// entry and from then on keeps one request in 2 (then 4, ...), so windows stay evenly covered
// and counts are scaled back by the stride.
type sampleLog struct {
	mu      sync.Mutex
	chunks  [][]uint64
	n       int // entries kept
	max     int
	stride  int // keep one request in stride
	skipped int // requests seen since the last kept one
}

const chunkSize = 1 << 16

func newSampleLog(max int) *sampleLog {
	if max < 2*chunkSize {
		max = 2 * chunkSize
	}
	return &sampleLog{max: max, stride: 1}
}

func packSample(startUs int64, bucket int, op opKind, errIdx int) uint64 {
	if startUs < 0 {
		startUs = 0
	}
	return uint64(startUs)&(1<<40-1)<<24 | uint64(bucket&0xfff)<<12 | uint64(op&0xf)<<8 | uint64(errIdx&0xff)
}

func unpackSample(s uint64) (startUs int64, bucket int, op opKind, errIdx int) {
	return int64(s >> 24), int(s >> 12 & 0xfff), opKind(s >> 8 & 0xf), int(s & 0xff)
}

func (l *sampleLog) add(s uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.skipped++; l.skipped < l.stride {
		return
	}
	l.skipped = 0
	if l.n == l.max {
		l.decimate()
	}
	c := l.n / chunkSize
	if c == len(l.chunks) {
		l.chunks = append(l.chunks, make([]uint64, chunkSize))
	}
	l.chunks[c][l.n%chunkSize] = s
	l.n++
}

// decimate keeps every other entry and doubles the stride. Called with mu held.
func (l *sampleLog) decimate() {
	j := 0
	for i := 0; i < l.n; i += 2 {
		l.chunks[j/chunkSize][j%chunkSize] = l.chunks[i/chunkSize][i%chunkSize]
		j++
	}
	l.n = j
	l.stride *= 2
	keep := (l.n + chunkSize - 1) / chunkSize
	for i := keep; i < len(l.chunks); i++ {
		l.chunks[i] = nil
	}
	l.chunks = l.chunks[:keep]
}

// each calls fn for every kept entry with mu held, and returns the stride.
func (l *sampleLog) each(fn func(uint64)) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; i < l.n; i++ {
		fn(l.chunks[i/chunkSize][i%chunkSize])
	}
	return l.stride
}
