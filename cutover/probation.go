package cutover

import (
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// probation watches the target while it serves after a switch: the outcome and latency of each
// of its requests in a sliding window (merged over the fleet), how many it served since the
// switch, and second opinions on its definite refusals (judge.go). The runner reads the verdict
// (Controller.watchProbation) and rolls back or finalizes.
type probation struct {
	cfg    ProbationConfig
	target string
	book   *ledger
	m      *metrics
	now    func() time.Time
	win    *window
	// seen counts the target's requests since the switch: probation does not pass before it
	// reaches MinRequests, however long it lasts.
	seen      atomic.Int64
	fallbacks atomic.Uint64 // calls retried on the fallback
	// Second opinions (judge.go): forwarded to the source through Run's proxy, in goroutines Run
	// owns, at most maxRechecks at once, each within timeout.
	ctl     *control
	timeout time.Duration
	sem     chan struct{}
	// peers are the other members' windows (fleet mode; nil: one process).
	peers func() []ProbationStats
}

func newProbation(cfg Config, book *ledger, ctl *control, m *metrics) *probation {
	return &probation{cfg: cfg.Probation, target: cfg.Target.Name, book: book, m: m, now: cfg.Now, win: newWindow(4096),
		ctl: ctl, timeout: cfg.Shadow.Timeout, sem: make(chan struct{}, maxRechecks)}
}

// reset starts a switch's probation: an empty window, no request seen.
func (c *probation) reset() {
	c.win.reset()
	c.seen.Store(0)
}

func (c *probation) record(at time.Time, latency time.Duration, o outcome) {
	c.seen.Add(1)
	c.win.record(at, latency, o)
}

// local is this process's own window (what a member publishes): since the switch, over at most
// the configured window.
func (c *probation) local(now time.Time) ProbationStats {
	from := now.Add(-c.cfg.Window)
	if sw := c.book.header().SwitchedAt; sw.After(from) {
		from = sw
	}
	return c.win.stats(now, from, c.cfg.MaxP99)
}

// stats aggregates the probation window over the fleet: requests and errors add up, and the p99
// is that of every request the fleet sent to the target (mergeProbation).
func (c *probation) stats(now time.Time) ProbationStats {
	st := c.local(now)
	if c.peers == nil {
		st.Buckets = nil
		return st
	}
	peers := c.peers()
	qs := make([]ProbationStats, 0, len(peers))
	qs = append(qs, peers...)
	return mergeProbation(st, qs)
}

// verdict reads the fleet's window at now (evidence.go).
func (c *probation) verdict(now time.Time) verdict {
	return judgeEvidence(c.stats(now), c.cfg, c.target, now.Sub(c.book.header().SwitchedAt))
}

// evidence is how many requests reached the target since the switch: this process's count or,
// in fleet mode, the fleet's over the probation window when that is larger.
func (c *probation) evidence(now time.Time) int64 {
	n := c.seen.Load()
	if c.peers != nil {
		n = max(n, int64(c.stats(now).Requests))
	}
	return n
}

// observe is the proxy's hook, called once per backend attempt: errName is
// that attempt's XKS error ("" on success) and fellBack is true for the
// retry sent to the fallback backend.
func (c *probation) observe(backend string, errName xks.ErrorName, latency time.Duration, fellBack bool) {
	if fellBack {
		c.fallbacks.Add(1)
		c.m.fallbacks.Inc()
	}
	if backend != c.target || c.book.state() != StateSwitched || c.judged(backend, errName, fellBack) {
		return // not the target on probation, or recheck records it once the source answered
	}
	c.record(c.now(), latency, classify(errName))
}

// observeFellBack is the proxy's hook for a request the primary failed and the fallback then
// answered (with fallbackErr, "" on success): the primary's attempt is recorded like observe's,
// except when it is not the primary's doing: a definite refusal the fallback answered the same
// way is the caller's (an id neither side holds), and a KeyNotFound for a key created during the
// migration that the fallback served is the migration's (its copy to the primary is under way).
// The fallback's own attempt goes to observe.
func (c *probation) observeFellBack(primary, keyID string, primaryErr xks.ErrorName, latency time.Duration, fallbackErr xks.ErrorName) {
	if primary != c.target || c.book.state() != StateSwitched {
		return
	}
	o := classify(primaryErr)
	switch {
	case Refusal(primaryErr) && fallbackErr == primaryErr:
		o = outcomeOK
		c.m.rechecks.WithLabelValues("caller").Inc()
	case primaryErr == xks.KeyNotFoundException && fallbackErr == "" && c.book.isCreated(keyID):
		o = outcomeOK
	}
	c.record(c.now(), latency, o)
}

// classify says how a target's answer counts: errors the source would return too (a malformed
// request, a bad signature) do not; no answer in time is a timeout; any other error is definite.
func classify(n xks.ErrorName) outcome {
	switch {
	case !countsAsFailure(n):
		return outcomeOK
	case n == xks.DependencyTimeoutException || n == xks.ThrottlingException:
		return outcomeTimeout
	}
	return outcomeError
}

// countsAsFailure says which target errors speak against the target. Errors
// the source would return too (a malformed request, a bad signature) do not.
// InvalidCiphertextException does: after a switch it is what a key split
// between the sides (the same id, different material) looks like.
func countsAsFailure(n xks.ErrorName) bool {
	switch n {
	case "", xks.ValidationException, xks.AuthenticationFailedException,
		xks.InvalidUriPathException, xks.UnsupportedOperationException:
		return false
	}
	return true
}
