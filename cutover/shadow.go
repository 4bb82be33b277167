package cutover

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
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
}

type shadower struct {
	c     *Controller
	queue chan shadowItem

	match, mismatch, errs, dropped atomic.Uint64

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	active atomic.Bool
}

func newShadower(c *Controller) *shadower {
	return &shadower{c: c, queue: make(chan shadowItem, c.cfg.Shadow.QueueSize)}
}

func (s *shadower) snapshot() ShadowStats {
	return ShadowStats{Match: s.match.Load(), Mismatch: s.mismatch.Load(), Errors: s.errs.Load(), Dropped: s.dropped.Load()}
}

func (s *shadower) count(result string, n *atomic.Uint64) {
	n.Add(1)
	s.c.m.shadow.WithLabelValues(result).Inc()
}

// start launches the workers and opens Mirror.
func (s *shadower) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for range s.c.cfg.Shadow.Workers {
		s.wg.Add(1)
		go s.worker(ctx)
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
			s.count("dropped", &s.dropped)
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
	ctx, cancel := context.WithTimeout(ctx, s.c.cfg.Shadow.Timeout)
	defer cancel()
	status, resp, err := s.c.cfg.Forwarder.Forward(ctx, s.c.sides.tgt.name, xks.OpDecrypt, it.keyID, it.body)
	if err != nil || status != http.StatusOK {
		s.count("error", &s.errs)
		return
	}
	d := sha256.Sum256(resp)
	clear(resp) // the target's plaintext
	if subtle.ConstantTimeCompare(d[:], it.digest[:]) == 1 {
		s.count("match", &s.match)
	} else {
		s.count("mismatch", &s.mismatch)
		s.c.log.Error("cutover: shadow mismatch: the target decrypted a live ciphertext to different plaintext", "key_id", it.keyID, "target", s.c.sides.tgt.name)
	}
}

// Mirror is the proxy's hook after a successful Decrypt on the source. It
// never blocks: when the queue is full the sample is dropped and counted.
// reqBody and respBody are not retained.
func (c *Controller) Mirror(keyID string, reqBody, respBody []byte) {
	s := c.shadow
	if !s.active.Load() || c.cfg.Forwarder == nil {
		return
	}
	if r := *c.cfg.Shadow.SampleRate; r < 1 && rand.Float64() >= r {
		return
	}
	if len(reqBody) > maxMirrorBody || validKeyID(keyID) != nil {
		s.count("error", &s.errs)
		return
	}
	it := shadowItem{keyID: keyID, body: append([]byte(nil), reqBody...), digest: sha256.Sum256(respBody)}
	select {
	case s.queue <- it:
	default:
		clear(it.body)
		s.count("dropped", &s.dropped)
	}
}
