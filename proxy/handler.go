package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// minAttempt is the least time worth giving a fallback attempt.
const minAttempt = 5 * time.Millisecond

var (
	errUnknownPath = xks.Errorf(xks.InvalidUriPathException, "unknown path or prefix")
	errThrottled   = xks.Errorf(xks.ThrottlingException, "too many requests in flight")
	errTooLarge501 = xks.Errorf(xks.UnsupportedOperationException, "request body too large")
	errHeaders     = xks.Errorf(xks.ValidationException, "too many header fields")
	errBodyRead    = xks.Errorf(xks.ValidationException, "request body could not be read in time")
	errSlowBody    = xks.Errorf(xks.ThrottlingException, "too many slow request bodies")
	errChunked     = xks.Errorf(xks.ValidationException, "Transfer-Encoding is not accepted; send Content-Length")
	connClose      = []string{"close"}
	errAuth        = xks.Errorf(xks.AuthenticationFailedException, "request signature could not be verified")
	errContentType = xks.Errorf(xks.ValidationException, "Content-Type must be application/json")
	allowPOST      = []string{http.MethodPost}
	textPlain      = []string{"text/plain; charset=utf-8"}
	appJSON        = []string{"application/json"}
	noStore        = []string{"no-store"}
)

// serveXKS is the hot path: route, bound, authenticate, validate, forward, normalise, write.
func (p *Proxy) serveXKS(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/ping" {
		p.servePing(w, r)
		return
	}
	if path == "/ready" {
		p.serveReady(w, r)
		return
	}
	start := time.Now()
	// ex lives on this stack frame; forward and attempt take its address.
	ex := exchange{start: start}
	res := &ex.res
	prefix, op, keyID, ok, perr := xks.ParsePath(path)
	var ps *prefixState
	if ok {
		ps = p.prefixes[prefix]
	}
	if ps == nil {
		// Before authentication: an unknown path or prefix never reaches the verifier.
		p.reply(w, r, nil, res, start, errUnknownPath)
		return
	}
	res.Op, res.Prefix, res.KeyID = op, prefix, keyID
	if r.Method != http.MethodPost {
		p.methodNotAllowed(w, r, ps, res, start)
		return
	}
	nh := 0
	for _, vs := range r.Header {
		nh += len(vs)
	}
	if nh > p.cfg.Limits.MaxHeaderCount {
		p.reply(w, r, ps, res, start, errHeaders)
		return
	}

	if len(r.TransferEncoding) > 0 {
		// AWS sends Content-Length. A chunked body (net/http has already dropped a
		// Content-Length sent with it: RFC 9112 §6.1 says treat that as an error) is refused
		// and the connection closed, so that no smuggled request follows on it.
		w.Header()["Connection"] = connClose
		p.reply(w, r, ps, res, start, errChunked)
		return
	}

	reqBuf := p.getBuf()
	defer p.putBuf(reqBuf, true)
	g := p.guardBody(r.Context(), w, start)
	body, err := readBounded((*reqBuf)[:0], r.Body, r.ContentLength, p.cfg.Limits.MaxBodyBytes)
	cut := g.finish()
	*reqBuf = body
	if err != nil {
		switch {
		case errors.Is(err, errTooLarge):
			p.reply(w, r, ps, res, start, errTooLarge501)
		case cut:
			p.reply(w, r, ps, res, start, errSlowBody)
		default:
			p.reply(w, r, ps, res, start, errBodyRead)
		}
		return
	}

	if _, err := ps.verifier.VerifyPayload(r, body, &ex.bodySum); err != nil {
		reason := "other"
		var ae *sigv4.AuthError
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		p.m.sigv4Failure(ps.label, reason)
		// One message for every failed check: which one failed (an unknown access key id, the
		// configured region) is for the operator — the log line and the metric's reason label —
		// never for an unauthenticated caller.
		detail := err.Error()
		if ae != nil {
			detail = ae.Message
		}
		p.log.Info("sigv4 verification failed", "prefix", ps.label, "reason", reason, "detail", xks.Sanitize(detail))
		p.reply(w, r, ps, res, start, errAuth)
		return
	}
	if !jsonContentType(r.Header["Content-Type"]) {
		p.reply(w, r, ps, res, start, errContentType)
		return
	}
	// Authenticated: only now does the request hold an in-flight slot.
	n := p.inFlight.Add(1)
	if n > int64(p.cfg.Limits.MaxInFlight) {
		p.inFlight.Add(-1)
		p.reply(w, r, ps, res, start, errThrottled)
		return
	}
	res.InFlight = int(n)
	defer p.inFlight.Add(-1)
	if perr != nil {
		p.reply(w, r, ps, res, start, perr)
		return
	}
	v, err := xks.Validate(op, body, p.cfg.Limits.XKS)
	if err != nil {
		p.reply(w, r, ps, res, start, err)
		return
	}
	res.KMSOperation, res.KMSRequestID = v.Metadata.KMSOperation, v.Metadata.KMSRequestID
	if op == xks.OpHealth {
		p.serveHealth(w, r, ps, res, start)
		return
	}
	if p.ownObject(keyID) {
		p.reply(w, r, ps, res, start, errOwnObject)
		return
	}

	rt := p.route.Load()
	kept := false
	if mig := p.cfg.Migration; mig != nil {
		if on := mig.KeptOn(keyID); on != "" {
			rt, kept = p.keptRoute(rt, on), true
		}
	}
	ex.ctx, ex.op, ex.keyID, ex.body, ex.v = r.Context(), op, keyID, body, v
	ex.rawBuf, ex.outBuf = p.getBuf(), p.getBuf()
	defer p.putBuf(ex.rawBuf, true)
	defer p.putBuf(ex.outBuf, true)
	status, out, berr := p.forward(&ex, rt)
	if berr != nil || op == xks.OpMetadata {
		status, out, berr = p.keyTruth(&ex, status, out, berr) // off the hot path (keyinfo.go)
	}
	if berr == nil && v.WantCDIV {
		status, out, berr = p.verifyEncrypt(&ex, status, out) // spec Appendix C (cdiv.go)
	}
	res.Status = status
	res.ErrorName = xks.NameOf(berr)
	res.CallerGone = berr != nil && r.Context().Err() != nil
	if berr == nil && op == xks.OpMetadata && res.KMSOperation == "CreateKey" && p.cfg.Migration != nil {
		// Before the reply: during a migration the hook copies the new key to the other side,
		// so that AWS's first Encrypt with it can already fall back. It gets what is left of the
		// budget (minus a margin for writing the reply); CreateKey is rare.
		hctx, cancel := context.WithDeadline(r.Context(), start.Add(p.cfg.Limits.Budget-10*time.Millisecond))
		p.cfg.Migration.CreateKey(hctx, CreateKeyEvent{KeyID: keyID, Backend: res.Backend})
		cancel()
	}
	writeJSON(w, status, out)
	p.done(r.Context(), ps, res, start, berr)
	if berr == nil && p.cfg.Migration != nil && !kept && op == xks.OpDecrypt && res.FellBackFrom == "" && res.Backend == rt.primary.name {
		p.cfg.Migration.Mirror(*res, body, out)
	}
	if berr != nil && p.cfg.Migration != nil && res.FellBackFrom == "" && res.Backend != "" && definiteRefusal(res.ErrorName) {
		p.cfg.Migration.Recheck(*res, body)
	}
}

// definiteRefusal: the error names a backend answers a wrong caller with (and a right caller
// too when the backend is wrong), as opposed to transport failures and malformed requests.
func definiteRefusal(n xks.ErrorName) bool {
	switch n {
	case xks.KeyNotFoundException, xks.InvalidCiphertextException, xks.InvalidKeyUsageException,
		xks.InvalidStateException, xks.AccessDeniedException:
		return true
	}
	return false
}

// exchange is one XKS request on its way to the backends: what forward and attempt need, in
// one value on the handler's stack rather than a dozen parameters.
type exchange struct {
	ctx            context.Context
	op             xks.Operation
	keyID          string
	body           []byte
	bodySum        [32]byte // SHA-256 of body: the verifier computes it, re-signing reuses it
	v              xks.Validated
	start          time.Time
	rawBuf, outBuf *[]byte // the backend's raw reply, the normalised reply
	// res by value, like bodySum: pointers to the handler's locals stored here would make them
	// escape to the heap (escape analysis does not tell one field of *ex from another).
	res Result
}

// forward sends the request to the route's primary and, when that fails in a way another
// backend could fix and time remains in the budget, once to the fallback.
func (p *Proxy) forward(ex *exchange, rt *routeTable) (int, []byte, error) {
	res, v := &ex.res, &ex.v
	// The primary's timeout does not shrink with the time already spent: that is the proxy's own
	// CPU time (microseconds) unless the host is overloaded, and then a short timeout would only
	// add failures. The fallback gets what is left of the budget.
	deadline := ex.start.Add(p.cfg.Limits.Budget)
	createKey := ex.op == xks.OpMetadata && v.Metadata.KMSOperation == "CreateKey"
	if createKey {
		b, xe := p.createKeyTarget(ex, rt)
		if xe != nil {
			return xe.Status(), xks.AppendErrorBody((*ex.outBuf)[:0], xe.Name, xe.Message), xe
		}
		if b != rt.primary {
			// Only the fallback holds the id: it answers (no new key, no new right), and the
			// cutover copies the key over.
			status, out, err := p.attempt(ex, b, min(b.cfg.Timeout, time.Until(deadline)))
			res.Backend = b.name
			return status, out, err
		}
	}
	t := rt.primary.cfg.Timeout
	if rt.fallback != nil {
		// Leave the fallback half the budget.
		t = min(t, p.cfg.Limits.Budget/2)
	}
	t0 := time.Now()
	status, out, err := p.attempt(ex, rt.primary, t)
	res.Backend = rt.primary.name
	// A CreateKey goes to the one backend createKeyTarget chose, never on to the fallback. The
	// fallback was not seen to hold the id (else it would have been chosen), so it would mint a
	// second, different key under it: whether the primary was to mint the key, holds it alone,
	// or the migration ended while this route still named a fallback. The primary's error goes
	// back; AWS retries.
	if err == nil || createKey || rt.fallback == nil || !p.fallbackWorthy(err, ex.keyID, rt.primary.name) {
		return status, out, err
	}
	remaining := time.Until(deadline)
	if remaining < minAttempt {
		return status, out, err
	}
	p.m.fallback(rt.primary.name, rt.fallback.name)
	res.FellBackFrom, res.Backend = rt.primary.name, rt.fallback.name
	res.PrimaryError, res.PrimaryLatency = xks.NameOf(err), time.Since(t0)
	fs, fout, ferr := p.attempt(ex, rt.fallback, min(rt.fallback.cfg.Timeout, remaining))
	if xks.NameOf(ferr) == xks.KeyNotFoundException && res.PrimaryError.Retryable() {
		// The key exists only on the primary, which failed transiently: its retryable error is
		// the truth (AWS retries it); the fallback's KeyNotFound would tell AWS the key is gone.
		res.Backend, res.BackendLatency = rt.primary.name, res.PrimaryLatency
		var xe *xks.Error
		if !errors.As(err, &xe) {
			xe = &xks.Error{Name: res.PrimaryError, Err: err}
		}
		return xe.Status(), xks.AppendErrorBody((*ex.outBuf)[:0], xe.Name, xe.Message), xe
	}
	return fs, fout, ferr
}

// attempt makes one backend call and normalises its reply into ex.outBuf.
func (p *Proxy) attempt(ex *exchange, b *backend, timeout time.Duration) (int, []byte, error) {
	op, rawBuf, outBuf := ex.op, ex.rawBuf, ex.outBuf
	t0 := time.Now()
	actx, cancel := context.WithTimeout(ex.ctx, timeout)
	status, raw, err := b.call(actx, op, ex.keyID, ex.body, &ex.bodySum, (*rawBuf)[:0])
	cancel()
	*rawBuf = raw
	var e *xks.Error
	if err != nil {
		label := xks.ErrorName("")
		switch {
		case ex.ctx.Err() != nil && !errors.Is(ex.ctx.Err(), context.DeadlineExceeded):
			// The caller went away: the backend did nothing wrong.
			e = &xks.Error{Name: xks.InternalException, Message: "the caller closed the request before key manager " + b.name + " answered", Err: err}
			label = callerGoneLabel
		case errors.Is(err, context.DeadlineExceeded):
			e = &xks.Error{Name: xks.DependencyTimeoutException, Message: "key manager " + b.name + " did not answer within " + timeout.String(), Err: err}
		default:
			e = &xks.Error{Name: xks.InternalException, Message: "key manager " + b.name + " is unreachable", Err: err}
		}
		if label == "" {
			label = e.Name
		}
		ex.res.BackendLatency = time.Since(t0)
		p.m.backendObserve(b.name, op, ex.res.BackendLatency, label)
		out := xks.AppendErrorBody((*outBuf)[:0], e.Name, e.Message)
		*outBuf = out
		return e.Name.Status(), out, e
	}
	outStatus, out, nerr := xks.NormalizeResponse((*outBuf)[:0], op, status, raw, ex.v)
	*outBuf = out
	ex.res.BackendLatency = time.Since(t0)
	p.m.backendObserve(b.name, op, ex.res.BackendLatency, xks.NameOf(nerr))
	return outStatus, out, nerr
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = appJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// reply writes a locally produced XKS error and records the request.
func (p *Proxy) reply(w http.ResponseWriter, r *http.Request, ps *prefixState, res *Result, start time.Time, err error) {
	name := xks.NameOf(err)
	res.Status, res.ErrorName = name.Status(), name
	xks.WriteError(w, err)
	p.done(r.Context(), ps, res, start, err)
}

var errMethod = xks.Errorf(xks.ValidationException, "method not allowed; XKS API calls use POST")

func (p *Proxy) methodNotAllowed(w http.ResponseWriter, r *http.Request, ps *prefixState, res *Result, start time.Time) {
	w.Header()["Allow"] = allowPOST
	res.Status, res.ErrorName = http.StatusMethodNotAllowed, xks.ValidationException
	xks.WriteErrorStatus(w, http.StatusMethodNotAllowed, errMethod)
	p.done(r.Context(), ps, res, start, nil)
}

func (p *Proxy) servePing(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = []string{"GET, HEAD"}
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Content-Length"] = []string{"5"}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte("pong\n"))
	}
}

// done records metrics, the log line and the migration's observation of one request.
func (p *Proxy) done(ctx context.Context, ps *prefixState, res *Result, start time.Time, err error) {
	res.Latency = time.Since(start)
	label := "unmatched"
	if ps != nil {
		label = ps.label
	}
	p.m.observe(label, res)
	if p.log.Enabled(ctx, slog.LevelInfo) {
		lvl := slog.LevelInfo
		attrs := [...]slog.Attr{
			slog.String("kmsRequestId", res.KMSRequestID),
			slog.String("prefix", label),
			slog.String("keyId", res.KeyID),
			slog.String("operation", opName(res.Op)),
			slog.String("kmsOperation", res.KMSOperation),
			slog.String("backend", res.Backend),
			slog.Int("status", res.Status),
			slog.String("errorName", string(res.ErrorName)),
			slog.Float64("latency_ms", float64(res.Latency.Microseconds())/1000),
			slog.String("fellBackFrom", res.FellBackFrom),
		}
		if err != nil && res.Status >= 500 {
			// The cause (e.g. "connection refused") helps operators; it never holds payloads.
			p.log.LogAttrs(ctx, lvl, "xks request", append(attrs[:], slog.String("cause", err.Error()))...)
		} else {
			p.log.LogAttrs(ctx, lvl, "xks request", attrs[:]...)
		}
	}
	if p.cfg.Migration != nil && res.Op != 0 {
		p.cfg.Migration.Observe(*res)
	}
}

func opName(op xks.Operation) string {
	if op == 0 {
		return "unknown"
	}
	return op.String()
}

func (p *Proxy) getBuf() *[]byte { return p.bufs.Get().(*[]byte) }

// putBuf zeroes (payloads may be plaintext) and returns a buffer; outsized ones are dropped.
func (p *Proxy) putBuf(b *[]byte, zero bool) {
	if zero {
		clear((*b)[:cap(*b)])
	}
	if cap(*b) > 128<<10 {
		return
	}
	*b = (*b)[:0]
	p.bufs.Put(b)
}

// Forward sends body to one named backend exactly as live traffic would (validation,
// re-signing, timeout, normalisation, the trial decrypt of an Encrypt that asks for a CDIV),
// without fallback or hooks. resp is a fresh copy owned by
// the caller (clear it after use: it may hold plaintext). err is the *xks.Error of an error reply.
func (p *Proxy) Forward(ctx context.Context, backendName string, op xks.Operation, keyID string, body []byte) (status int, resp []byte, err error) {
	b := p.backends[backendName]
	if b == nil {
		return 0, nil, ErrUnknownRoute
	}
	if op != xks.OpHealth {
		if err := xks.ValidKeyID(keyID); err != nil {
			return xks.NameOf(err).Status(), nil, err
		}
	}
	v, verr := xks.Validate(op, body, p.cfg.Limits.XKS)
	if verr != nil {
		name := xks.NameOf(verr)
		return name.Status(), xks.AppendErrorBody(nil, name, ""), verr
	}
	rawBuf, outBuf := p.getBuf(), p.getBuf()
	defer p.putBuf(rawBuf, true)
	defer p.putBuf(outBuf, true)
	ex := exchange{ctx: ctx, op: op, keyID: keyID, body: body, bodySum: sha256.Sum256(body), v: v, start: time.Now(), rawBuf: rawBuf, outBuf: outBuf}
	status, out, err := p.attempt(&ex, b, min(b.cfg.Timeout, p.cfg.Limits.Budget))
	if err == nil && v.WantCDIV {
		ex.res.Backend = b.name
		status, out, err = p.verifyEncrypt(&ex, status, out)
	}
	return status, append([]byte(nil), out...), err
}

// jsonContentType accepts exactly one Content-Type whose media type is application/json
// (parameters such as charset allowed), case-insensitively, as AWS KMS sends it.
func jsonContentType(vs []string) bool {
	if len(vs) != 1 {
		return false
	}
	mt, _, _ := strings.Cut(vs[0], ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}
