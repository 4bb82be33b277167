package cutover

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/xksproxy/xksproxy/xks"
)

// maxMirrorBody bounds what Mirror copies (an XKS Decrypt body is ≤ ~8.5 KB).
const maxMirrorBody = 64 << 10

// shadowItem is one mirrored Decrypt: the request body (ciphertext, no
// plaintext) and the SHA-256 of the source's normalised reply. The source's
// plaintext itself is never kept.
type shadowItem struct {
	keyID  string
	body   []byte
	digest [sha256.Size]byte
}

// ShadowStats counts mirrored Decrypts.
type ShadowStats struct {
	Match    uint64 `json:"match"`
	Mismatch uint64 `json:"mismatch"`
	Errors   uint64 `json:"errors"`
	Dropped  uint64 `json:"dropped"`
	// CrossOK and CrossFailed count Encrypts whose CDIV trial decrypt ran on the other backend
	// (the live-traffic proof that each side decrypts what the other encrypts) and passed or
	// failed there.
	CrossOK     uint64 `json:"cross_ok,omitempty"`
	CrossFailed uint64 `json:"cross_failed,omitempty"`
}

// shadower mirrors live Decrypts the source answered to the target and compares the plaintexts
// (by digest) while the state is shadowing: workers start and stop with it, and what does not
// fit the queue is dropped and counted, never waited for.
type shadower struct {
	cfg    ShadowConfig
	target string
	ctl    *control // the workers are Run's; they forward through its proxy
	m      *metrics
	log    *slog.Logger
	queue  chan shadowItem

	n shadowCounts

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	active atomic.Bool
	// peers are the other members' counters (fleet mode; nil: one process).
	peers func() []ShadowStats
}

func newShadower(cfg Config, ctl *control, m *metrics, log *slog.Logger) *shadower {
	return &shadower{cfg: cfg.Shadow, target: cfg.Target.Name, ctl: ctl, m: m, log: log,
		queue: make(chan shadowItem, cfg.Shadow.QueueSize)}
}

// stats sums the shadow counters over the fleet.
func (s *shadower) stats() ShadowStats {
	st := s.snapshot()
	if s.peers != nil {
		for _, p := range s.peers() {
			st = st.add(p)
		}
	}
	return st
}

func (s *shadower) snapshot() ShadowStats {
	return ShadowStats{Match: s.n.match.Load(), Mismatch: s.n.mismatch.Load(), Errors: s.n.errs.Load(), Dropped: s.n.dropped.Load(),
		CrossOK: s.n.crossOK.Load(), CrossFailed: s.n.crossFailed.Load()}
}

// shadowCounts are the shadower's counters.
type shadowCounts struct {
	match, mismatch, errs, dropped, crossOK, crossFailed atomic.Uint64
}

// reset zeroes the counters: a new migration reports its own figures (a member's published
// counters follow at its next heartbeat).
func (s *shadower) reset() {
	for _, n := range []*atomic.Uint64{&s.n.match, &s.n.mismatch, &s.n.errs, &s.n.dropped, &s.n.crossOK, &s.n.crossFailed} {
		n.Store(0)
	}
}

// crossChecked counts a CDIV trial decrypt run on the other backend.
func (s *shadower) crossChecked(backend string, ok bool) {
	if ok {
		s.count("cross_ok", &s.n.crossOK)
		return
	}
	s.count("cross_failed", &s.n.crossFailed)
	s.log.Error("cutover: a live Encrypt's trial decrypt failed on the other backend (the serving one's decided)", "backend", backend)
}

func (s *shadower) count(result string, n *atomic.Uint64) {
	n.Add(1)
	s.m.shadow.WithLabelValues(result).Inc()
}

// start launches the workers and opens the mirror; before Run started (or once it is ending)
// there is no worker, and nothing is mirrored.
func (s *shadower) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	run := s.ctl.runContext()
	if run == nil {
		return
	}
	ctx, cancel := context.WithCancel(run)
	s.cancel = cancel
	for range s.cfg.Workers {
		s.wg.Add(1)
		if !s.ctl.spawn(func(context.Context) { s.worker(ctx) }) {
			s.wg.Done()
		}
	}
	s.active.Store(true)
}

// stop closes Mirror, stops the workers and drops what is still queued.
func (s *shadower) stop() {
	s.active.Store(false)
	s.mu.Lock()
	cancel := s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	s.wg.Wait()
	for {
		select {
		case it := <-s.queue:
			clear(it.body)
			s.count("dropped", &s.n.dropped)
		default:
			return
		}
	}
}

func (s *shadower) worker(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-s.queue:
			s.compare(ctx, it)
		}
	}
}

func (s *shadower) compare(ctx context.Context, it shadowItem) {
	defer clear(it.body)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	status, resp, err := s.ctl.link.forward(ctx, s.target, xks.OpDecrypt, it.keyID, it.body)
	if err != nil || status != http.StatusOK {
		s.count("error", &s.n.errs)
		return
	}
	d := sha256.Sum256(resp)
	clear(resp) // the target's plaintext
	if subtle.ConstantTimeCompare(d[:], it.digest[:]) == 1 {
		s.count("match", &s.n.match)
	} else {
		s.count("mismatch", &s.n.mismatch)
		s.log.Error("cutover: shadow mismatch: the target decrypted a live ciphertext to different plaintext", "key_id", it.keyID, "target", s.target)
	}
}

// mirror is the proxy's hook after a successful Decrypt on the source. It never blocks: when the
// queue is full the sample is dropped and counted. reqBody and respBody are not retained.
func (s *shadower) mirror(keyID string, reqBody, respBody []byte) {
	if !s.active.Load() {
		return
	}
	if r := *s.cfg.SampleRate; r < 1 && rand.Float64() >= r {
		return
	}
	if len(reqBody) > maxMirrorBody || validKeyID(keyID) != nil {
		s.count("error", &s.n.errs)
		return
	}
	it := shadowItem{keyID: keyID, body: append([]byte(nil), reqBody...), digest: sha256.Sum256(respBody)}
	select {
	case s.queue <- it:
	default:
		clear(it.body)
		s.count("dropped", &s.n.dropped)
	}
}
