package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// The deep health check, per backend and concurrently: make sure the dedicated test key exists
// (GetKeyMetadata with kmsOperation "CreateKey": Cosmian creates it idempotently and grants the
// calling principal), then Encrypt a random 32-byte plaintext and Decrypt it back.
//
// Status of a backend after a check:
//   - ACTIVE: the round trip worked in less than DegradedLatency and the previous check worked.
//   - DEGRADED: the round trip worked but slowly, or worked after a failed check (recovering), or
//     failed once after a success (a blip: the backend probably still serves).
//   - UNAVAILABLE: two checks in a row failed (or the very first one did).
//
// The result is cached; GetHealthStatus serves the cache and, if it is older than one minute
// (checker stalled), runs a check inline bounded by the request budget.

type healthChecker struct {
	p    *Proxy
	sem  chan struct{} // one check at a time
	snap atomic.Pointer[healthSnap]
	// per backend, guarded by sem
	lastOK   map[string]bool
	checked  map[string]bool
	keyReady map[string]bool
}

type healthSnap struct {
	at       time.Time // injected clock; zero = never checked
	statuses []string  // per p.order
}

func newHealthChecker(p *Proxy) *healthChecker {
	h := &healthChecker{
		p:        p,
		sem:      make(chan struct{}, 1),
		lastOK:   map[string]bool{},
		checked:  map[string]bool{},
		keyReady: map[string]bool{},
	}
	st := make([]string, len(p.order))
	for i := range st {
		if p.cfg.Health.Disabled {
			st[i] = xks.HealthActive
		} else {
			st[i] = xks.HealthUnavailable
		}
	}
	h.snap.Store(&healthSnap{statuses: st})
	return h
}

func (h *healthChecker) loop(ctx context.Context) {
	if h.p.cfg.Health.Disabled {
		return
	}
	_ = h.check(ctx) // also warms each backend's connection pool
	t := time.NewTicker(h.p.cfg.Health.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = h.check(ctx)
		}
	}
}

// check probes every backend once and stores the new snapshot. It waits for a check already
// running, bounded by ctx.
func (h *healthChecker) check(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.sem }()
	p := h.p
	type result struct {
		ok      bool
		latency time.Duration
	}
	results := make([]result, len(p.order))
	var wg sync.WaitGroup
	for i, b := range p.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, p.cfg.Health.ProbeTimeout)
			defer cancel()
			t0 := time.Now()
			err := h.probe(pctx, b, h.keyReady[b.name])
			d := time.Since(t0)
			if err == nil {
				// keyReady is only read/written under sem, from this goroutine for b.
				results[i] = result{ok: true, latency: d}
			} else {
				p.log.Warn("health check failed", "backend", b.name, "error", err.Error(), "duration_ms", d.Milliseconds())
			}
			p.m.healthDur.WithLabelValues(b.name).Observe(d.Seconds())
		}()
	}
	wg.Wait()
	st := make([]string, len(p.order))
	for i, b := range p.order {
		r := results[i]
		prevOK, seen := h.lastOK[b.name], h.checked[b.name]
		switch {
		case r.ok && r.latency < p.cfg.Health.DegradedLatency && (prevOK || !seen):
			st[i] = xks.HealthActive
		case r.ok:
			st[i] = xks.HealthDegraded
		case prevOK && seen:
			st[i] = xks.HealthDegraded
		default:
			st[i] = xks.HealthUnavailable
		}
		if r.ok {
			h.keyReady[b.name] = true
			p.m.backendUp.WithLabelValues(b.name).Set(1)
		} else {
			h.keyReady[b.name] = false // re-create the test key next time (the backend may be new)
			p.m.backendUp.WithLabelValues(b.name).Set(0)
		}
		if old := h.snap.Load().statuses[i]; old != st[i] {
			p.log.Info("backend health changed", "backend", b.name, "from", old, "to", st[i])
		}
		h.lastOK[b.name], h.checked[b.name] = r.ok, true
	}
	h.snap.Store(&healthSnap{at: p.now(), statuses: st})
	return nil
}

var errRoundTrip = errors.New("health round trip returned a different plaintext")

func (h *healthChecker) probe(ctx context.Context, b *backend, keyReady bool) error {
	cfg := &h.p.cfg.Health
	var rid [8]byte
	_, _ = rand.Read(rid[:])
	md := xks.RequestMetadata{
		AWSPrincipalArn: cfg.PrincipalARN,
		KMSKeyArn:       "arn:aws:kms:xksproxy:health:key/" + b.healthKey,
		KMSOperation:    "CreateKey",
		KMSRequestID:    "xksproxy-health-" + hex.EncodeToString(rid[:]),
	}
	if !keyReady {
		m, err := b.xks.Metadata(ctx, b.healthKey, md)
		if err != nil {
			return err
		}
		if m.KeySpec != "AES_256" {
			return errors.New("health test key is not AES_256")
		}
	}
	var pt [32]byte
	_, _ = rand.Read(pt[:])
	md.KMSOperation = "Encrypt"
	enc, err := b.xks.Encrypt(ctx, b.healthKey, &xks.EncryptRequest{RequestMetadata: md, Plaintext: pt[:]})
	if err != nil {
		return err
	}
	md.KMSOperation = "Decrypt"
	dec, err := b.xks.Decrypt(ctx, b.healthKey, &xks.DecryptRequest{
		RequestMetadata:      md,
		Ciphertext:           enc.Ciphertext,
		InitializationVector: enc.InitializationVector,
		AuthenticationTag:    enc.AuthenticationTag,
		CiphertextMetadata:   enc.CiphertextMetadata,
	})
	if err != nil {
		return err
	}
	defer clear(dec.Plaintext)
	if subtle.ConstantTimeCompare(dec.Plaintext, pt[:]) != 1 {
		return errRoundTrip
	}
	return nil
}

// fresh returns the snapshot, running an inline check bounded by ctx when the cached one is
// older than a minute.
func (h *healthChecker) fresh(ctx context.Context) *healthSnap {
	s := h.snap.Load()
	if h.p.cfg.Health.Disabled || h.p.now().Sub(s.at) <= maxHealthAge {
		return s
	}
	_ = h.check(ctx)
	s = h.snap.Load()
	if h.p.now().Sub(s.at) > maxHealthAge {
		// No check could finish: say so rather than serve an old ACTIVE.
		st := make([]string, len(s.statuses))
		for i := range st {
			st[i] = xks.HealthUnavailable
		}
		return &healthSnap{at: s.at, statuses: st}
	}
	return s
}

func (p *Proxy) healthResponse(s *healthSnap) xks.HealthResponse {
	n := 1
	if mig := p.cfg.Migration; mig != nil {
		n = max(mig.FleetSize(), 1)
	}
	r := xks.HealthResponse{
		XksProxyFleetSize: n,
		XksProxyVendor:    "xksproxy",
		XksProxyModel:     p.cfg.Version,
		EkmVendor:         "Cosmian",
		EkmFleetDetails:   make([]xks.EKMDetail, len(p.order)),
	}
	for i, b := range p.order {
		r.EkmFleetDetails[i] = xks.EKMDetail{ID: b.name, Model: b.cfg.Model, HealthStatus: s.statuses[i]}
	}
	return r
}

// Health returns the cached health view (never runs a check).
func (p *Proxy) Health() xks.HealthResponse { return p.healthResponse(p.health.snap.Load()) }

// HealthCheckedAt is when the cached health view was computed (injected clock; zero if never).
func (p *Proxy) HealthCheckedAt() time.Time { return p.health.snap.Load().at }

func (p *Proxy) serveHealth(w http.ResponseWriter, r *http.Request, ps *prefixState, res *Result, start time.Time) {
	ctx, cancel := context.WithDeadline(r.Context(), start.Add(p.cfg.Limits.Budget))
	s := p.health.fresh(ctx)
	cancel()
	body, err := json.Marshal(p.healthResponse(s))
	if err != nil {
		p.reply(w, r, ps, res, start, xks.Errorf(xks.InternalException, "encoding health reply"))
		return
	}
	res.Status = http.StatusOK
	writeJSON(w, http.StatusOK, body)
	p.done(r.Context(), ps, res, start, nil)
}
