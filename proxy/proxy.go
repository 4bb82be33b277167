// Package proxy is the XKS edge: a TLS server that authenticates AWS KMS's SigV4 requests,
// validates them, forwards the raw body to the Cosmian KMS backend that the current route names
// (re-signed with the backend's own credential), normalises the reply to the XKS spec, and
// answers GetHealthStatus from a background deep health check. It also serves Prometheus
// metrics and a token-protected admin API on their own listeners.
//
// Decisions where the XKS spec is silent (see also the comments at each site):
//   - A body larger than Limits.MaxBodyBytes is 501 UnsupportedOperationException (the spec's
//     error for "a size above the spec minimums that this proxy does not support"; MaxBodyBytes
//     is always above the size of a spec-minimum request). It is answered before
//     authentication, because the signature cannot be checked without reading the body.
//   - More than Limits.MaxHeaderCount header values is 400 ValidationException, before
//     authentication. A header block larger than MaxHeaderBytes is refused by net/http itself
//     (431, plain text).
//   - A non-POST method on an API path is 405 with Allow: POST and an XKS body naming
//     ValidationException (the spec fixes the status, not the name).
//   - A backend that does not answer within its attempt timeout is 503
//     DependencyTimeoutException; a backend that fails otherwise (connection refused, reset,
//     garbled reply) is 500 InternalException.
//   - Over MaxInFlight concurrent authenticated requests is 429 ThrottlingException, after the
//     body was read and the signature verified (admission.go bounds what comes before).
//   - An Encrypt with a CDIV whose trial decrypt (Appendix C, cdiv.go) fails: 400
//     InvalidKeyUsageException for a key without Decrypt usage, 500 InternalException for output
//     that does not decrypt or a CDIV that does not match, 503 when the budget has no time left.
//   - Metrics: error="none" for a success; backend="proxy" for requests answered by the proxy
//     itself (health, errors before forwarding); prefix="unmatched" for 404 InvalidUriPath.
package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// LegacyHealthTestKeyID is the fixed id earlier releases gave the deep health check's key on
// every backend. A fixed id is one any XKS caller can name: create first (squatting it), or use
// for real data on a backend that lets any signed request use an XKS key. The key is now named
// by HealthKeyID; an object left under this id is a key like any other.
const LegacyHealthTestKeyID = "xksproxy-health-check"

// healthKeyPrefix starts every derived health-check key id.
const healthKeyPrefix = "xksproxy-health-"

// HealthKeyID is the id of the deep health check's key on backend b: the configured TestKeyID,
// or, by default, one derived from the backend's SigV4 secret, which no XKS caller knows (it
// changes with that secret; the previous key is then left unused on the backend). The proxy
// refuses XKS calls for it, and the migration never moves it.
func HealthKeyID(h HealthConfig, b BackendConfig) string {
	if h.TestKeyID != "" {
		return h.TestKeyID
	}
	mac := hmac.New(sha256.New, []byte(b.Credential.Secret))
	mac.Write([]byte("xksproxy health-check key\x00"))
	mac.Write([]byte(b.Name))
	return healthKeyPrefix + hex.EncodeToString(mac.Sum(nil)[:12])
}

// Result describes one finished XKS request.
type Result struct {
	Op           xks.Operation
	Prefix       string
	KeyID        string
	KMSOperation string
	KMSRequestID string
	Backend      string // backend that produced the reply; "" when the proxy answered itself
	FellBackFrom string
	// PrimaryError and PrimaryLatency describe the failed attempt on FellBackFrom, so that a
	// backend's failures stay visible when the fallback answered.
	PrimaryError   xks.ErrorName
	PrimaryLatency time.Duration
	ErrorName      xks.ErrorName // "" on success
	Status         int
	Latency        time.Duration
	// CallerGone: the caller closed the request before it was answered; what failed then is
	// nobody's fault but the caller's (never counted against a backend).
	CallerGone bool
	// BackendLatency is Backend's own attempt, without the proxy's work around it (checks,
	// the CreateKey hook, a failed primary attempt): what a backend is judged on.
	BackendLatency time.Duration
	// InFlight is how many requests the proxy held when this one was admitted (0 when it was
	// answered before admission).
	InFlight int
}

// callerGoneLabel is the error label of a backend call the caller's own cancellation ended.
const callerGoneLabel xks.ErrorName = "CallerGone"

// Errors returned by New, SetRoute and SetCredentials.
var (
	ErrConfig        = errors.New("proxy: invalid configuration")
	ErrUnknownRoute  = errors.New("proxy: unknown backend in route")
	ErrStaleEpoch    = errors.New("proxy: route epoch lower than the current one")
	ErrUnknownPrefix = errors.New("proxy: unknown prefix")
)

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Proxy is the XKS server. Create it with New, serve with Run.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	prefixes map[string]*prefixState
	backends map[string]*backend
	order    []*backend // configuration order (ekmFleetDetails order)
	route    atomic.Pointer[routeTable]
	routeMu  sync.Mutex
	inFlight atomic.Int64
	// slowBodies counts requests still reading their body after SlowBodyAfter (admission.go).
	slowBodies atomic.Int64
	// openConns counts the main listener's connections; draining marks the last replies
	// (drain.go).
	openConns  atomic.Int64
	draining   atomic.Bool
	guards     sync.Pool      // *bodyGuard
	handshakes *handshakeGate // the main listener's TLS handshakes (handshake.go)
	m          *metrics
	health     *healthChecker
	keyInfo    *keyInfoCache // nil: no backend has a reader (keyinfo.go)
	// ownIDs are the health-check keys' ids: the proxy's own objects, refused to XKS callers.
	ownIDs  map[string]bool
	bufs    sync.Pool // *[]byte
	handler http.Handler

	adminMux  *http.ServeMux
	peerMux   *http.ServeMux // PeerPrefix: no token; each handler authenticates its caller
	ready     chan struct{}
	addr      atomic.Pointer[net.Addr]
	metAddr   atomic.Pointer[net.Addr]
	adminAddr atomic.Pointer[net.Addr]
}

type prefixState struct {
	path     string
	verifier *sigv4.Verifier
	label    string // metric label
}

type routeTable struct {
	Route
	primary, fallback *backend
}

// New validates cfg, fills defaults and builds backends, verifiers and metrics. Nothing listens
// until Run.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Now,
		prefixes: make(map[string]*prefixState, len(cfg.Prefixes)),
		backends: make(map[string]*backend, len(cfg.Backends)),
		ownIDs:   make(map[string]bool, len(cfg.Backends)),
		ready:    make(chan struct{}),
		adminMux: http.NewServeMux(),
		peerMux:  http.NewServeMux(),
	}
	p.handshakes = newHandshakeGate(cfg.Limits.MaxHandshakes, cfg.Limits.ReadHeaderTimeout)
	p.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	for i, pc := range cfg.Prefixes {
		if err := xks.ValidPrefix(pc.Path); err != nil {
			return nil, configErr("prefix[%d] %q: %v", i, pc.Path, err)
		}
		if _, dup := p.prefixes[pc.Path]; dup {
			return nil, configErr("prefix[%d] %q listed twice", i, pc.Path)
		}
		for j, cr := range pc.Credentials {
			// The XKS spec's secret access key is 43 to 64 characters (AWS refuses others).
			if n := len(cr.Secret); n < 43 || n > 64 {
				return nil, configErr("prefix[%d] %q: credential[%d] %s: secret access key of %d characters; the XKS spec wants 43 to 64", i, pc.Path, j, cr.AccessKeyID, n)
			}
		}
		if len(pc.Credentials) > sigv4.MaxCredentials {
			return nil, configErr("prefix[%d]: at most %d credentials", i, sigv4.MaxCredentials)
		}
		v, err := sigv4.NewVerifier(sigv4.VerifierConfig{Region: pc.Region, Service: pc.Service, Now: cfg.Now, Credentials: pc.Credentials})
		if err != nil {
			return nil, fmt.Errorf("%w: prefix[%d] %q: %w", ErrConfig, i, pc.Path, err)
		}
		label := pc.Path
		if label == "" {
			label = "/"
		}
		p.prefixes[pc.Path] = &prefixState{path: pc.Path, verifier: v, label: label}
	}
	for i, bc := range cfg.Backends {
		if _, dup := p.backends[bc.Name]; dup {
			return nil, configErr("backend[%d]: name %q listed twice", i, bc.Name)
		}
		b, err := newBackend(bc, cfg.Now)
		if err != nil {
			return nil, fmt.Errorf("%w: backend[%d] %q: %w", ErrConfig, i, bc.Name, err)
		}
		b.healthKey = HealthKeyID(cfg.Health, bc)
		p.ownIDs[b.healthKey] = true
		p.backends[bc.Name] = b
		p.order = append(p.order, b)
	}
	for name := range cfg.KeyInfo.Readers {
		if p.backends[name] == nil {
			return nil, configErr("key info: unknown backend %q", name)
		}
	}
	if len(cfg.KeyInfo.Readers) > 0 {
		p.keyInfo = newKeyInfoCache(cfg.KeyInfo, cfg.Now)
	}
	rt, err := p.table(cfg.Route)
	if err != nil {
		return nil, fmt.Errorf("%w: route: %w", ErrConfig, err)
	}
	p.route.Store(rt)
	p.m = newMetrics(cfg.Registry, p)
	p.m.setRoute(cfg.Route)
	p.health = newHealthChecker(p)
	p.handler = http.HandlerFunc(p.serveXKS)
	p.adminMux.HandleFunc("GET /v1/route", p.adminRoute)
	p.adminMux.HandleFunc("GET /v1/health", p.adminHealth)
	if mig := cfg.Migration; mig != nil {
		p.adminMux.Handle(AdminPath, mig.AdminHandler())
		// Calls from the other members of a fleet never carry the operator's token: the peer
		// handler authenticates every one itself (app signs them with the fleet secret).
		if h := mig.PeerHandler(); h != nil {
			p.peerMux.Handle(PeerPath, h)
		}
	}
	return p, nil
}

func (p *Proxy) table(r Route) (*routeTable, error) {
	t := &routeTable{Route: r, primary: p.backends[r.Primary]}
	if t.primary == nil {
		return nil, fmt.Errorf("%w: primary %q", ErrUnknownRoute, r.Primary)
	}
	if r.Fallback != "" {
		if t.fallback = p.backends[r.Fallback]; t.fallback == nil {
			return nil, fmt.Errorf("%w: fallback %q", ErrUnknownRoute, r.Fallback)
		}
		if t.fallback == t.primary {
			return nil, fmt.Errorf("%w: fallback equals primary %q", ErrUnknownRoute, r.Primary)
		}
	}
	return t, nil
}

// SetRoute atomically swaps the route table. It rejects unknown backends and an epoch lower
// than the current one (an equal epoch is accepted, so re-applying the same state is harmless).
// Requests in flight finish on the table they started with.
func (p *Proxy) SetRoute(r Route) error {
	t, err := p.table(r)
	if err != nil {
		return err
	}
	if cur := p.route.Load(); t.primary != cur.primary && r.Epoch >= cur.Epoch {
		p.prewarm(t.primary, cur.primary)
	}
	p.routeMu.Lock()
	defer p.routeMu.Unlock()
	if cur := p.route.Load(); r.Epoch < cur.Epoch {
		return fmt.Errorf("%w: %d < %d", ErrStaleEpoch, r.Epoch, cur.Epoch)
	}
	p.route.Store(t)
	p.m.setRoute(r)
	p.log.Info("route changed", "epoch", r.Epoch, "primary", r.Primary, "fallback", r.Fallback)
	return nil
}

// Route returns the current route.
func (p *Proxy) Route() Route { return p.route.Load().Route }

// SetCredentials replaces the SigV4 credential sets of a prefix (SIGHUP rotation). Open
// connections stay up; the next request is verified against the new sets.
func (p *Proxy) SetCredentials(prefix string, creds []sigv4.Credential) error {
	ps := p.prefixes[prefix]
	if ps == nil {
		return fmt.Errorf("%w %q", ErrUnknownPrefix, prefix)
	}
	if err := ps.verifier.SetCredentials(creds); err != nil {
		return err
	}
	ids := ps.verifier.AccessKeyIDs()
	p.log.Info("credentials replaced", "prefix", ps.label, "access_key_ids", strings.Join(ids, ","))
	return nil
}

// Registry returns the Prometheus registry the proxy's metrics live in.
func (p *Proxy) Registry() *prometheus.Registry { return p.cfg.Registry }

// Handler returns the XKS handler (for in-process tests and benchmarks).
func (p *Proxy) Handler() http.Handler { return p.handler }

// Ready is closed once Run has bound every listener.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Addr is the main listener's address (nil before Ready).
func (p *Proxy) Addr() net.Addr { return loadAddr(&p.addr) }

// MetricsAddr is the metrics listener's address (nil before Ready or when disabled).
func (p *Proxy) MetricsAddr() net.Addr { return loadAddr(&p.metAddr) }

// AdminAddr is the admin listener's address (nil before Ready or when disabled).
func (p *Proxy) AdminAddr() net.Addr { return loadAddr(&p.adminAddr) }

func loadAddr(a *atomic.Pointer[net.Addr]) net.Addr {
	if v := a.Load(); v != nil {
		return *v
	}
	return nil
}

// preferHTTP1 returns protos with "http/1.1" moved to the front: crypto/tls picks the first
// of the server's protocols that the client offers.
func preferHTTP1(protos []string) []string {
	if !slices.Contains(protos, "http/1.1") {
		return protos
	}
	out := make([]string, 0, len(protos))
	out = append(out, "http/1.1")
	for _, p := range protos {
		if p != "http/1.1" {
			out = append(out, p)
		}
	}
	return out
}

// Run serves the main, metrics and admin listeners and runs the health loop until ctx is done,
// then shuts down gracefully, letting in-flight requests finish (up to WriteTimeout).
func (p *Proxy) Run(ctx context.Context) error {
	listen := p.cfg.ListenFunc
	if listen == nil {
		var lc net.ListenConfig
		listen = func(ctx context.Context, addr string) (net.Listener, error) { return lc.Listen(ctx, "tcp", addr) }
	}
	ln, err := listen(ctx, p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", p.cfg.Listen, err)
	}
	l := &p.cfg.Limits
	tlsCfg := p.cfg.TLS.Clone()
	applyTLSPolicy(tlsCfg)
	if p.cfg.PreferHTTP1 {
		tlsCfg.NextProtos = preferHTTP1(tlsCfg.NextProtos)
	}
	main := &http.Server{
		Handler:           p.drainable(p.handler),
		TLSConfig:         p.handshakes.config(tlsCfg),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		// net/http reads up to MaxHeaderBytes + 4096 bytes of slack: take it off, so that the
		// limit is the documented one (it cannot go below the 4096-byte slack itself).
		MaxHeaderBytes: max(l.MaxHeaderBytes-4096, 1),
		ConnContext:    connContext,
		ConnState:      p.countConn,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	servers := []*http.Server{main}
	type served struct {
		srv *http.Server
		ln  net.Listener
		tls bool
	}
	list := []served{{main, gateListener{ln, p.handshakes}, true}}
	closeAll := func() {
		for _, s := range list {
			s.ln.Close()
		}
	}
	a := ln.Addr()
	p.addr.Store(&a)
	if p.cfg.MetricsListen != "" {
		mln, err := listen(ctx, p.cfg.MetricsListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("proxy: listen metrics %s: %w", p.cfg.MetricsListen, err)
		}
		ms := &http.Server{Handler: p.metricsHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		servers = append(servers, ms)
		list = append(list, served{ms, mln, false})
		ma := mln.Addr()
		p.metAddr.Store(&ma)
	}
	if p.cfg.Admin.Listen != "" {
		aln, err := listen(ctx, p.cfg.Admin.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("proxy: listen admin %s: %w", p.cfg.Admin.Listen, err)
		}
		as := &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
		if t := p.cfg.Admin.TLS; t != nil {
			as.TLSConfig = t.Clone()
			applyTLSPolicy(as.TLSConfig)
		}
		servers = append(servers, as)
		list = append(list, served{as, aln, p.cfg.Admin.TLS != nil})
		aa := aln.Addr()
		p.adminAddr.Store(&aa)
	}

	hctx, hcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.health.loop(hctx) }()

	errc := make(chan error, len(list))
	for _, s := range list {
		go func() {
			var err error
			if s.tls {
				err = s.srv.ServeTLS(s.ln, "", "")
			} else {
				err = s.srv.Serve(s.ln)
			}
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			errc <- err
		}()
	}
	p.warm(ctx)
	// The bound addresses, not the configured ones: ":0" becomes the port the OS chose.
	bound := func(ap *atomic.Pointer[net.Addr]) string {
		if v := ap.Load(); v != nil {
			return (*v).String()
		}
		return "off"
	}
	p.log.Info("xksproxy serving", "listen", a.String(), "metrics", bound(&p.metAddr), "admin", bound(&p.adminAddr))
	close(p.ready)

	var runErr error
	select {
	case <-ctx.Done():
		p.log.Info("xksproxy shutting down", "reason", context.Cause(ctx), "drain", l.WriteTimeout)
	case runErr = <-errc:
		p.log.Error("xksproxy shutting down: a listener failed", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), l.WriteTimeout)
	defer cancel()
	// Stop accepting first (the sockets may live on in another proxy or process), then let each
	// open connection end after its next reply before Shutdown closes what is left.
	closeAll()
	p.drain(sctx, l.WriteTimeout/2)
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	hcancel()
	wg.Wait()
	for _, b := range p.order {
		b.transport.CloseIdleConnections()
	}
	p.log.Info("xksproxy stopped")
	return runErr
}

// CheckXKSURL checks a backend's XKSURL (the base before /kms/xks/v1).
func CheckXKSURL(raw string) error {
	_, err := backendBase(raw)
	return err
}

// backendBase builds the XKS base URL of a backend.
func backendBase(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" && u.Scheme != "http" {
		return nil, errors.New("must be https:// or http://")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("must be scheme://host[:port][/prefix] without user, query or fragment")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	if strings.HasSuffix(u.Path, xks.APIPathSuffix) {
		return nil, errors.New("give the base before /kms/xks/v1 (e.g. https://kms-a:9998/aws)")
	}
	if err := xks.ValidPrefix(u.Path); err != nil {
		var xe *xks.Error
		if errors.As(err, &xe) {
			err = errors.New(xe.Message)
		}
		return nil, fmt.Errorf("path: %w", err)
	}
	return u, nil
}

// prewarmHold bounds how long a route change waits for the new primary's connections; the
// swap happens then, whatever they became (the calls get as long again to finish).
const prewarmHold = 100 * time.Millisecond

// prewarm opens connections to next, the backend about to become primary, until it has as many
// as prev (the primary until now) has open, at most MaxIdleConns. Over HTTP/1.1 each request in
// flight holds its own connection, so a switch to a primary with a cold pool made every
// concurrent request dial and handshake at once, the handshakes slowed everything on the host,
// and slower requests needed more connections: measured at 300 req/s over three replicas on two
// cores, ~140 dials in half a second after the switch and requests past their 250 ms budget.
// Each warm-up call holds the connection it got until all have one, so they are distinct ones;
// over HTTP/2 they share one and this costs a round trip.
func (p *Proxy) prewarm(next, prev *backend) {
	target := min(prev.conns.Load(), int64(next.cfg.MaxIdleConns))
	if next.conns.Load() >= target {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*prewarmHold)
	defer cancel()
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	timer := time.AfterFunc(prewarmHold, open)
	defer timer.Stop()
	var got atomic.Int64
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if got.Add(1) >= target {
			open()
		}
		<-release
	}})
	var wg sync.WaitGroup
	for range target {
		wg.Go(func() {
			md := xks.RequestMetadata{KMSOperation: "KmsHealthCheck", KMSRequestID: "xksproxy-prewarm"}
			_, _ = next.xks.Health(tctx, md) // a failure only means a colder pool
		})
	}
	wg.Wait()
	p.log.Info("pre-warmed the new primary's connections", "backend", next.name, "target", target, "open", next.conns.Load())
}

// warm opens a connection to every backend (a shallow XKS health call) before traffic arrives,
// so that the first requests after start or after a route swap do not pay a TLS handshake.
func (p *Proxy) warm(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, b := range p.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			md := xks.RequestMetadata{KMSOperation: "KmsHealthCheck", KMSRequestID: "xksproxy-warmup"}
			if _, err := b.xks.Health(ctx, md); err != nil {
				p.log.Warn("backend warm-up failed", "backend", b.name, "error", err.Error())
			}
		}()
	}
	wg.Wait()
}
