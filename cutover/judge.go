package cutover

import (
	"context"
	"net/http"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// Probation judges the target on what is its own doing. A definite refusal from the target —
// KeyNotFound, InvalidCiphertext, InvalidKeyUsage, InvalidState, AccessDenied — is what the
// source answers too when the caller is wrong (an id nobody holds, a forged ciphertext, a
// principal without a grant): before it counts against the target, the same request is sent to
// the source off the request path (a second opinion), and it counts only if the source answers
// otherwise. A CreateKey is never sent again (it would mint a key). With no second opinion to be
// had (too many at once, before Run gave the proxy or once it is ending) the refusal counts.

// maxRechecks bounds the second opinions in flight; beyond it a refusal counts unjudged.
const maxRechecks = 4

// Refusal reports whether n is a definite refusal a wrong caller gets from any backend.
func Refusal(n xks.ErrorName) bool {
	switch n {
	case xks.KeyNotFoundException, xks.InvalidCiphertextException, xks.InvalidKeyUsageException,
		xks.InvalidStateException, xks.AccessDeniedException:
		return true
	}
	return false
}

// judged reports whether recheck, not observe, records this attempt.
func (c *probation) judged(backend string, errName xks.ErrorName, fellBack bool) bool {
	return !fellBack && Refusal(errName) && backend == c.target && c.ctl.link.attached() && c.book.state() == StateSwitched
}

// recheck is the proxy's hook for a request the backend that served it refused definitely (no
// fallback tried): body is the request, not retained after the call returns. While switched, a
// refusal from the target is recorded in the probation window once the source has given its
// answer to the same request.
func (c *probation) recheck(source string, backend string, op xks.Operation, createKey bool, keyID string, errName xks.ErrorName, latency time.Duration, body []byte) {
	if !c.judged(backend, errName, false) {
		return
	}
	at := c.now()
	count := func(failed bool) {
		o := outcomeOK
		if failed {
			o = classify(errName)
		}
		c.record(at, latency, o)
	}
	if createKey || op == xks.OpHealth || len(body) > maxMirrorBody || validKeyID(keyID) != nil {
		count(true)
		return
	}
	select {
	case c.sem <- struct{}{}:
	default:
		count(true)
		c.m.rechecks.WithLabelValues("unjudged").Inc()
		return
	}
	req := append([]byte(nil), body...)
	ok := c.ctl.spawn(func(run context.Context) {
		defer func() { <-c.sem }()
		defer clear(req)
		ctx, cancel := context.WithTimeout(run, c.timeout)
		status, resp, err := c.ctl.link.forward(ctx, source, op, keyID, req)
		cancel()
		clear(resp) // a Decrypt's plaintext
		same := err != nil && status != http.StatusOK && xks.NameOf(err) == errName
		if same {
			c.m.rechecks.WithLabelValues("caller").Inc()
		} else {
			c.m.rechecks.WithLabelValues("target").Inc()
		}
		count(!same)
	})
	if !ok { // Run is ending: no second opinion to be had
		<-c.sem
		clear(req)
		count(true)
		c.m.rechecks.WithLabelValues("unjudged").Inc()
	}
}
