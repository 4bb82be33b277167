package loadgen

import (
	"bytes"
	"context"
	"crypto/hmac"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// Sealed is one successful Encrypt: everything KMS would keep in its ciphertext blob, plus the
// plaintext (kept in memory only, for checking decrypts).
type Sealed struct {
	KeyID                                                   string
	Ciphertext, IV, Tag, AAD, CiphertextMetadata, Plaintext []byte
	At                                                      time.Time
}

// OpStats summarises one operation.
type OpStats struct {
	Count  int64         `json:"count"`
	Failed int64         `json:"failed"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
}

// Report summarises a run. Latencies cover every request that got a reply or timed out
// (successes and failures), measured from the intended send time in open loop.
type Report struct {
	Total       int64              `json:"total"` // including dropped_client_overload
	Succeeded   int64              `json:"succeeded"`
	Failed      int64              `json:"failed"`
	ByOperation map[string]OpStats `json:"by_operation"`
	ByError     map[string]int64   `json:"by_error"`
	Protocols   map[string]int64   `json:"protocols,omitempty"` // replies by protocol: "HTTP/1.1", "HTTP/2"
	// ByEndpoint: per endpoint with Config.Endpoints (several replicas), else nil.
	ByEndpoint map[string]EndpointStats `json:"by_endpoint,omitempty"`
	Over250ms  int64                    `json:"over_250ms"`
	P50        time.Duration            `json:"p50_ns"`
	P90        time.Duration            `json:"p90_ns"`
	P99        time.Duration            `json:"p99_ns"`
	P999       time.Duration            `json:"p999_ns"`
	Max        time.Duration            `json:"max_ns"`
	Throughput float64                  `json:"throughput"` // completed (not dropped) requests per second
	Started    time.Time                `json:"started"`
	Ended      time.Time                `json:"ended"`
}

// WindowStats summarises the requests started in a time window. When the sample log has
// overflowed MaxSamples, Sampled is true and Count/Failed are scaled estimates.
type WindowStats struct {
	Count   int64         `json:"count"`
	Failed  int64         `json:"failed"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
	Sampled bool          `json:"sampled,omitempty"`
}

type keyState struct {
	id, arn string
	mu      sync.Mutex
	ring    []*Sealed
	next    int
}

// Runner generates XKS traffic like AWS KMS. Create with New; Run once.
type Runner struct {
	cfg     Config
	ep      *endpoint
	opCum   [numOps]float64
	sizeCum []float64

	keys     atomic.Pointer[[]*keyState]
	keysMu   sync.Mutex // serialises appends to keys
	createN  atomic.Int64
	started  atomic.Pointer[time.Time]
	ended    atomic.Pointer[time.Time]
	ran      atomic.Bool
	inFlight atomic.Int64

	total, succeeded, failed, over250 atomic.Int64
	opCount, opFailed                 [numOps]atomic.Int64
	errCount                          []atomic.Int64
	hist                              [numOps]histogram
	samples                           *sampleLog

	recMu    sync.Mutex
	recorded []Sealed
	recSeen  int // successful Encrypts seen while recording (RecordEvery)

	// stop ends scheduling like Duration does: requests in flight finish and are counted.
	stop     chan struct{}
	stopOnce sync.Once
}

// Stop ends the run as if Duration had passed: no new request is sent, those in flight finish
// and are counted, then Run returns. Unlike cancelling Run's context, nothing is cut off.
func (r *Runner) Stop() { r.stopOnce.Do(func() { close(r.stop) }) }

// New validates cfg, fills its defaults and prepares the HTTP client.
func New(cfg Config) (*Runner, error) {
	if err := cfg.checkAndSetDefaults(true); err != nil {
		return nil, err
	}
	ep, err := newEndpoint(&cfg)
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, ep: ep, errCount: make([]atomic.Int64, len(errNames)), samples: newSampleLog(cfg.MaxSamples), stop: make(chan struct{})}
	m := cfg.Mix
	w := [numOps]float64{m.Encrypt, m.Decrypt, m.Metadata, m.CreateKey}
	var sum float64
	for i, x := range w {
		sum += x
		r.opCum[i] = sum
	}
	for i := range r.opCum {
		r.opCum[i] /= sum
	}
	sum = 0
	for _, s := range cfg.Sizes {
		sum += s.Weight
		r.sizeCum = append(r.sizeCum, sum)
	}
	for i := range r.sizeCum {
		r.sizeCum[i] /= sum
	}
	keys := make([]*keyState, 0, len(cfg.Keys))
	seen := map[string]bool{}
	for _, id := range cfg.Keys {
		if !seen[id] {
			seen[id] = true
			keys = append(keys, r.newKey(id))
		}
	}
	r.keys.Store(&keys)
	return r, nil
}

// newKey derives a stable, KMS-shaped kmsKeyArn for an external key id.
func (r *Runner) newKey(id string) *keyState {
	h := fnv.New128a()
	h.Write([]byte(id))
	sum := h.Sum(nil)
	var u [36]byte
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(sum[i])
		lo = lo<<8 | uint64(sum[8+i])
	}
	formatUUID(&u, hi, lo)
	return &keyState{id: id, arn: "arn:aws:kms:" + r.cfg.Region + ":111122223333:key/" + string(u[:]), ring: nil}
}

func (r *Runner) addKey(id string) {
	r.keysMu.Lock()
	defer r.keysMu.Unlock()
	old := *r.keys.Load()
	for _, k := range old {
		if k.id == id {
			return
		}
	}
	keys := append(old[:len(old):len(old)], r.newKey(id))
	r.keys.Store(&keys)
}

// Keys returns the key ids in use (the configured ones plus those created by the CreateKey share).
func (r *Runner) Keys() []string {
	keys := *r.keys.Load()
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.id
	}
	return out
}

// worker holds one goroutine's reusable buffers and random source.
type worker struct {
	rng   *rand.Rand
	body  []byte
	reply []byte
	pt    []byte
	aad   []byte
	dec   []byte
	url   []byte
	seq   int
}

func (r *Runner) newWorker(seed uint64) *worker {
	return &worker{
		rng:   rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano()))),
		body:  make([]byte, 0, 1024),
		reply: make([]byte, 0, 1024),
		url:   make([]byte, 0, 128),
	}
}

// Run sends traffic until Duration has passed or ctx is done, waits for the requests in
// flight, and returns the final report. A Runner runs once.
func (r *Runner) Run(ctx context.Context) (*Report, error) {
	if !r.ran.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("loadgen: Run called twice")
	}
	defer r.ep.close()
	start := r.cfg.Now()
	r.started.Store(&start)
	var end time.Time
	if r.cfg.Duration > 0 {
		end = start.Add(r.cfg.Duration)
	}
	r.cfg.Logger.Info("load generator starting", "endpoint", r.cfg.Endpoint, "prefix", r.cfg.Prefix,
		"rate", r.cfg.Rate, "workers", r.cfg.Workers, "conns", r.cfg.Conns, "duration", r.cfg.Duration, "keys", len(r.cfg.Keys))
	var wg sync.WaitGroup
	if r.cfg.Rate > 0 {
		r.openLoop(ctx, start, end, &wg)
	} else {
		for i := 0; i < r.cfg.Workers; i++ {
			w := r.newWorker(uint64(i))
			wg.Go(func() {
				for ctx.Err() == nil {
					select {
					case <-r.stop:
						return
					default:
					}
					t := r.cfg.Now()
					if !end.IsZero() && !t.Before(end) {
						return
					}
					r.one(ctx, w, t)
				}
			})
		}
	}
	wg.Wait()
	e := r.cfg.Now()
	r.ended.Store(&e)
	rep := r.Snapshot()
	r.cfg.Logger.Info("load generator done", "total", rep.Total, "failed", rep.Failed, "p99", rep.P99, "throughput", rep.Throughput)
	return rep, nil
}

// openLoop schedules requests at fixed intervals from start; each carries its intended send
// time, so a slow endpoint shows up as latency rather than as fewer requests.
func (r *Runner) openLoop(ctx context.Context, start, end time.Time, wg *sync.WaitGroup) {
	ch := make(chan time.Time, r.cfg.Workers)
	for i := 0; i < r.cfg.Workers; i++ {
		w := r.newWorker(uint64(i))
		wg.Go(func() {
			for t := range ch {
				r.one(ctx, w, t)
				r.inFlight.Add(-1)
			}
		})
	}
	defer close(ch)
	interval := float64(time.Second) / r.cfg.Rate
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := int64(0); ; i++ {
		t := start.Add(time.Duration(float64(i) * interval))
		if !end.IsZero() && !t.Before(end) {
			return
		}
		if d := t.Sub(r.cfg.Now()); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-r.stop:
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		select {
		case <-r.stop:
			return
		default:
		}
		if r.inFlight.Load() >= int64(r.cfg.Workers) {
			r.finish(numOps, t, 0, errIndex[ErrDropped])
			continue
		}
		r.inFlight.Add(1)
		ch <- t
	}
}

// pickOp draws an operation from the mix.
func (r *Runner) pickOp(w *worker) opKind {
	x := w.rng.Float64()
	for i, c := range r.opCum {
		if x < c {
			return opKind(i)
		}
	}
	return opEncrypt
}

func (r *Runner) pickSize(w *worker) int {
	x := w.rng.Float64()
	for i, c := range r.sizeCum {
		if x < c {
			return r.cfg.Sizes[i].Size
		}
	}
	return r.cfg.Sizes[len(r.cfg.Sizes)-1].Size
}

func (r *Runner) metadata(w *worker, k *keyState, operation string) md {
	m := md{principal: r.cfg.Principals[w.seq%len(r.cfg.Principals)], keyArn: k.arn, operation: operation}
	w.seq++
	formatUUID(&m.requestID, w.rng.Uint64(), w.rng.Uint64())
	return m
}

func (r *Runner) url(w *worker, keyID, op string) string {
	w.url = append(append(append(append(w.url[:0], r.ep.base...), "/keys/"...), keyID...), op...)
	return string(w.url)
}

// one sends one request intended to start at t and records its outcome.
func (r *Runner) one(ctx context.Context, w *worker, t time.Time) {
	keys := *r.keys.Load()
	k := keys[w.rng.IntN(len(keys))]
	op := r.pickOp(w)
	var class string
	var err error
	switch op {
	case opDecrypt:
		k.mu.Lock()
		var s *Sealed
		if n := len(k.ring); n > 0 {
			s = k.ring[w.rng.IntN(n)]
		}
		k.mu.Unlock()
		if s == nil {
			op = opEncrypt // nothing to decrypt yet for this key: KMS would have encrypted first
			class, err = r.encrypt(ctx, w, k)
		} else {
			class, err = r.decrypt(ctx, w, k, s)
		}
	case opEncrypt:
		class, err = r.encrypt(ctx, w, k)
	case opMetadata:
		class, err = r.getMetadata(ctx, w, k)
	case opCreateKey:
		id := fmt.Sprintf(r.cfg.CreateKeyPrefix, r.createN.Add(1))
		nk := r.newKey(id)
		if r.cfg.CreateKeyHook != nil {
			if herr := r.cfg.CreateKeyHook(ctx, id); herr != nil {
				if ctx.Err() != nil {
					return
				}
				r.cfg.Logger.Warn("create key hook failed", "key_id", id, "error", herr)
				class = ErrCreateKeyHook
				break
			}
		}
		class, err = r.getMetadata(ctx, w, nk)
		if class == "" && err == nil {
			r.addKey(id)
		}
	}
	if class == "" && err != nil {
		return // aborted: the caller's context ended
	}
	r.finish(op, t, r.cfg.Now().Sub(t), errIdxOf(class))
}

func errIdxOf(class string) int {
	if class == "" {
		return 0
	}
	return errIdx(class)
}

// finish records one outcome. op numOps means a dropped request (no latency).
func (r *Runner) finish(op opKind, t time.Time, lat time.Duration, ei int) {
	r.total.Add(1)
	if ei == 0 {
		r.succeeded.Add(1)
	} else {
		r.failed.Add(1)
		r.errCount[ei].Add(1)
		if r.cfg.OnFailure != nil {
			r.cfg.OnFailure(t, op.String(), errNames[ei])
		}
	}
	bucket := 0
	if op < numOps {
		r.opCount[op].Add(1)
		if ei != 0 {
			r.opFailed[op].Add(1)
		}
		r.hist[op].record(lat)
		bucket = bucketOf(int64(lat))
		if lat > 250*time.Millisecond {
			r.over250.Add(1)
		}
	}
	if st := r.started.Load(); st != nil {
		r.samples.add(packSample(t.Sub(*st).Microseconds(), bucket, op, ei))
	}
}

// encrypt sends one Encrypt and keeps the result for later Decrypts.
func (r *Runner) encrypt(ctx context.Context, w *worker, k *keyState) (string, error) {
	n := r.pickSize(w)
	w.pt = fillRandom(w.rng, w.pt[:0], n)
	w.aad = w.aad[:0]
	if !r.cfg.NoAAD {
		w.aad = fillRandom(w.rng, w.aad, w.rng.IntN(65))
	}
	operation := "Encrypt"
	if n <= 64 {
		operation = "GenerateDataKey" // the common caller of a 32-byte Encrypt
	}
	m := r.metadata(w, k, operation)
	w.body = appendEncryptBody(w.body[:0], &m, w.pt, w.aad, r.cfg.CDIV)
	status, reply, class, err := r.ep.roundTrip(ctx, r.url(w, k.id, "/encrypt"), w.body, w.reply)
	w.reply = reply
	if err != nil {
		return class, err
	}
	if status != 200 {
		return errorClass(reply), nil
	}
	s, ok := r.parseEncrypt(w, k.id, reply)
	if !ok {
		return ErrBadResponse, nil
	}
	s.At = r.cfg.Now()
	size := ringSizeFor(len(*r.keys.Load()))
	k.mu.Lock()
	if len(k.ring) > size {
		// More keys since this ring filled: give back its share (the results are garbage now).
		clear(k.ring[size:])
		k.ring = k.ring[:size]
		k.next %= size
	}
	if len(k.ring) < size {
		k.ring = append(k.ring, s)
	} else {
		k.ring[k.next%len(k.ring)] = s
		k.next = (k.next + 1) % len(k.ring)
	}
	k.mu.Unlock()
	if r.cfg.Record {
		r.recMu.Lock()
		if r.recSeen%r.cfg.RecordEvery == 0 {
			r.recorded = append(r.recorded, *s)
		}
		r.recSeen++
		r.recMu.Unlock()
	}
	return "", nil
}

// parseEncrypt checks an Encrypt reply and returns a Sealed holding copies (one allocation).
func (r *Runner) parseEncrypt(w *worker, keyID string, reply []byte) (*Sealed, bool) {
	var ct, iv, tag, cm, cdiv []byte
	ok := true
	dec := w.dec[:0]
	err := scanObject(reply, func(key, val []byte, isString bool) {
		var dst *[]byte
		switch string(key) {
		case "ciphertext":
			dst = &ct
		case "initializationVector":
			dst = &iv
		case "authenticationTag":
			dst = &tag
		case "ciphertextMetadata":
			dst = &cm
		case "ciphertextDataIntegrityValue":
			dst = &cdiv
		default:
			return
		}
		if !isString {
			if string(val) != "null" {
				ok = false
			}
			return
		}
		start := len(dec)
		var good bool
		dec, good = decodeB64(dec, val)
		ok = ok && good
		*dst = dec[start:len(dec):len(dec)]
	})
	w.dec = dec
	if err != nil || !ok || len(ct) != len(w.pt) || (len(iv) != 12 && len(iv) != 16) || len(tag) != 16 || len(cm) > 20 {
		return nil, false
	}
	if r.cfg.CDIV && !hmac.Equal(cdiv, xks.CDIV(w.aad, cm, iv, ct, tag)) {
		return nil, false
	}
	buf := make([]byte, 0, len(ct)+len(iv)+len(tag)+len(cm)+len(w.aad)+len(w.pt))
	cut := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		s := len(buf)
		buf = append(buf, b...)
		return buf[s:len(buf):len(buf)]
	}
	return &Sealed{KeyID: keyID, Ciphertext: cut(ct), IV: cut(iv), Tag: cut(tag), CiphertextMetadata: cut(cm), AAD: cut(w.aad), Plaintext: cut(w.pt)}, true
}

// decrypt sends one Decrypt of s and checks the plaintext.
func (r *Runner) decrypt(ctx context.Context, w *worker, k *keyState, s *Sealed) (string, error) {
	m := r.metadata(w, k, "Decrypt")
	w.body = appendDecryptBody(w.body[:0], &m, s)
	status, reply, class, err := r.ep.roundTrip(ctx, r.url(w, k.id, "/decrypt"), w.body, w.reply)
	w.reply = reply
	if err != nil {
		return class, err
	}
	if status != 200 {
		return errorClass(reply), nil
	}
	var pt []byte
	found, ok := false, true
	dec := w.dec[:0]
	perr := scanObject(reply, func(key, val []byte, isString bool) {
		if string(key) == "plaintext" && isString {
			found = true
			dec, ok = decodeB64(dec, val)
			pt = dec
		}
	})
	w.dec = dec
	if perr != nil || !found || !ok {
		return ErrBadResponse, nil
	}
	same := bytes.Equal(pt, s.Plaintext)
	clear(pt)
	if !same {
		return ErrPlaintext, nil
	}
	return "", nil
}

// getMetadata sends GetKeyMetadata with kmsOperation CreateKey (KMS calls this API only from
// CreateKey) and checks that KMS would accept the key.
func (r *Runner) getMetadata(ctx context.Context, w *worker, k *keyState) (string, error) {
	m := r.metadata(w, k, "CreateKey")
	w.body = appendShortBody(w.body[:0], &m)
	status, reply, class, err := r.ep.roundTrip(ctx, r.url(w, k.id, "/metadata"), w.body, w.reply)
	w.reply = reply
	if err != nil {
		return class, err
	}
	if status != 200 {
		return errorClass(reply), nil
	}
	var spec, st string
	var enc, dec bool
	if scanObject(reply, func(key, val []byte, isString bool) {
		switch string(key) {
		case "keySpec":
			spec = string(val)
		case "keyStatus":
			st = string(val)
		case "keyUsage":
			enc = bytes.Contains(val, []byte(`"ENCRYPT"`))
			dec = bytes.Contains(val, []byte(`"DECRYPT"`))
		}
	}) != nil {
		return ErrBadResponse, nil
	}
	if spec != "AES_256" || st != "ENABLED" || !enc || !dec {
		return ErrBadKeyMetadata, nil
	}
	return "", nil
}

func fillRandom(rng *rand.Rand, dst []byte, n int) []byte {
	for n >= 8 {
		v := rng.Uint64()
		dst = append(dst, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
		n -= 8
	}
	if n > 0 {
		v := rng.Uint64()
		for ; n > 0; n-- {
			dst = append(dst, byte(v))
			v >>= 8
		}
	}
	return dst
}

// Snapshot returns the counters so far (while running: a live view).
func (r *Runner) Snapshot() *Report {
	rep := &Report{
		Total: r.total.Load(), Succeeded: r.succeeded.Load(), Failed: r.failed.Load(), Over250ms: r.over250.Load(),
		ByOperation: make(map[string]OpStats, numOps), ByError: map[string]int64{},
	}
	for proto, n := range map[string]int64{"HTTP/1.1": r.ep.replies1.Load(), "HTTP/2": r.ep.replies2.Load()} {
		if n > 0 {
			if rep.Protocols == nil {
				rep.Protocols = map[string]int64{}
			}
			rep.Protocols[proto] = n
		}
	}
	if len(r.cfg.Endpoints) > 0 {
		rep.ByEndpoint = r.ep.bal.byEndpoint()
	}
	var all histSnap
	var one histSnap
	for op := opKind(0); op < numOps; op++ {
		c := r.opCount[op].Load()
		if c == 0 {
			continue
		}
		one = histSnap{}
		r.hist[op].snapshot(&one)
		r.hist[op].snapshot(&all)
		rep.ByOperation[op.String()] = OpStats{Count: c, Failed: r.opFailed[op].Load(), P50: one.quantile(0.5), P99: one.quantile(0.99)}
	}
	for i := 1; i < len(errNames); i++ {
		if c := r.errCount[i].Load(); c > 0 {
			rep.ByError[errNames[i]] = c
		}
	}
	rep.P50, rep.P90, rep.P99, rep.P999 = all.quantile(0.5), all.quantile(0.9), all.quantile(0.99), all.quantile(0.999)
	rep.Max = time.Duration(all.max)
	if st := r.started.Load(); st != nil {
		rep.Started = *st
		if e := r.ended.Load(); e != nil {
			rep.Ended = *e
		} else {
			rep.Ended = r.cfg.Now()
		}
		if d := rep.Ended.Sub(rep.Started).Seconds(); d > 0 {
			rep.Throughput = float64(rep.Total-r.errCount[errIndex[ErrDropped]].Load()) / d
		}
	}
	return rep
}

// Window returns statistics of the requests whose (intended) start lies in [from, to).
func (r *Runner) Window(from, to time.Time) WindowStats {
	st := r.started.Load()
	if st == nil {
		return WindowStats{}
	}
	lo, hi := from.Sub(*st).Microseconds(), to.Sub(*st).Microseconds()
	var h histSnap
	var count, failed int64
	stride := r.samples.each(func(s uint64) {
		us, bucket, op, ei := unpackSample(s)
		if us < lo || us >= hi {
			return
		}
		count++
		if ei != 0 {
			failed++
		}
		if op < numOps {
			h.add(bucket)
			if v := bucketMid(bucket); v > h.max {
				h.max = v
			}
		}
	})
	return WindowStats{
		Count: count * int64(stride), Failed: failed * int64(stride),
		P50: h.quantile(0.5), P99: h.quantile(0.99), Max: time.Duration(h.max), Sampled: stride > 1,
	}
}

// Recorded returns the Encrypt results kept with Config.Record (shared, read-only slices).
func (r *Runner) Recorded() []Sealed {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	return append([]Sealed(nil), r.recorded...)
}

// maxFailures bounds the failure descriptions Redecrypt returns.
const maxFailures = 10

// Redecrypt decrypts every item through the endpoint (Workers at a time), checks the
// plaintext, and returns the counts and the first few failures as "keyID: errorClass"
// (never plaintext). A timeout or network failure is retried once, as KMS does. err is set
// only when ctx ended before every item was tried.
func (r *Runner) Redecrypt(ctx context.Context, items []Sealed) (ok, failed int, failures []string, err error) {
	var next atomic.Int64
	var nok, nfail atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := min(r.cfg.Workers, max(len(items), 1))
	for i := 0; i < workers; i++ {
		w := r.newWorker(uint64(1000 + i))
		wg.Go(func() {
			for ctx.Err() == nil {
				j := next.Add(1) - 1
				if j >= int64(len(items)) {
					return
				}
				s := &items[j]
				k := r.newKey(s.KeyID)
				class, derr := r.decrypt(ctx, w, k, s)
				if class == ErrClientTimeout || class == ErrNetwork {
					class, derr = r.decrypt(ctx, w, k, s)
				}
				if class == "" && derr != nil {
					return // ctx ended
				}
				if class == "" {
					nok.Add(1)
					continue
				}
				nfail.Add(1)
				mu.Lock()
				if len(failures) < maxFailures {
					failures = append(failures, s.KeyID+": "+class)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if e := ctx.Err(); e != nil && int(nok.Load()+nfail.Load()) < len(items) {
		err = fmt.Errorf("loadgen: redecrypt interrupted: %w", e)
	}
	return int(nok.Load()), int(nfail.Load()), failures, err
}
