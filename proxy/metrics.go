package proxy

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xksproxy/xksproxy/xks"
)

// Label values used where a request has no backend or no error.
const (
	labelNone  = "none"  // error label of a success
	labelProxy = "proxy" // backend label of a reply the proxy produced itself
)

// latencyBuckets cover 0.5 ms .. 250 ms (AWS's budget) and a little beyond.
var latencyBuckets = []float64{.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .15, .2, .25, .5, 1}

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	backendDur  *prometheus.HistogramVec
	backendReqs *prometheus.CounterVec
	sigv4       *prometheus.CounterVec
	fallbacks   *prometheus.CounterVec
	backendUp   *prometheus.GaugeVec
	healthDur   *prometheus.HistogramVec
	routeEpoch  prometheus.Gauge
	routeInfo   *prometheus.GaugeVec

	slowBodyRejected prometheus.Counter

	// Children are cached: WithLabelValues hashes and locks on every call.
	mu       sync.RWMutex
	reqCache map[reqKey]prometheus.Counter
	durCache map[durKey]prometheus.Observer
	bdCache  map[durKey]prometheus.Observer
	brCache  map[reqKey]prometheus.Counter
}

type reqKey struct{ prefix, op, backend, err string }
type durKey struct{ op, backend string }

func newMetrics(reg *prometheus.Registry, p *Proxy) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xks_requests_total",
			Help: "XKS API requests by prefix, operation, backend that answered (\"proxy\" if none) and errorName (\"none\" on success).",
		}, []string{"prefix", "operation", "backend", "error"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xks_request_duration_seconds",
			Help:    "Time from request routing to reply, by operation and backend.",
			Buckets: latencyBuckets,
		}, []string{"operation", "backend"}),
		backendDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xks_backend_request_duration_seconds",
			Help:    "Duration of each backend attempt (signing, round trip, reading the reply).",
			Buckets: latencyBuckets,
		}, []string{"backend", "operation"}),
		backendReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xks_backend_requests_total",
			Help: "Backend attempts by backend, operation and resulting errorName (\"none\" on success).",
		}, []string{"backend", "operation", "error"}),
		sigv4: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xks_sigv4_failures_total",
			Help: "Requests refused with AuthenticationFailedException, by prefix and reason.",
		}, []string{"prefix", "reason"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xks_fallback_total",
			Help: "Requests retried on the fallback backend after the primary failed.",
		}, []string{"from", "to"}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xks_backend_up",
			Help: "1 if the last deep health check of the backend succeeded (ACTIVE or DEGRADED), else 0.",
		}, []string{"backend"}),
		healthDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xks_backend_health_check_duration_seconds",
			Help:    "Duration of the deep health check (metadata + encrypt + decrypt) per backend.",
			Buckets: latencyBuckets,
		}, []string{"backend"}),
		routeEpoch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_route_epoch", Help: "Epoch of the route table in use."}),
		routeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xks_route_info",
			Help: "1 for the route in use.",
		}, []string{"primary", "fallback"}),
		slowBodyRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "xks_slow_body_rejected_total",
			Help: "Unauthenticated requests cut because their body was still arriving after slow_body_after and no slow-body slot (total or per connection) was free.",
		}),
		reqCache: map[reqKey]prometheus.Counter{},
		durCache: map[durKey]prometheus.Observer{},
		bdCache:  map[durKey]prometheus.Observer{},
		brCache:  map[reqKey]prometheus.Counter{},
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "xks_in_flight_requests",
		Help: "Authenticated XKS API requests being served (the MaxInFlight slots).",
	}, func() float64 { return float64(p.inFlight.Load()) })
	slow := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "xks_slow_bodies",
		Help: "Requests still waiting for their body after slow_body_after (before authentication).",
	}, func() float64 { return float64(p.slowBodies.Load()) })
	hsWaiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "xks_tls_handshakes_waiting",
		Help: "ClientHellos waiting for one of the max_handshakes slots of the main listener.",
	}, func() float64 { return float64(p.handshakes.waiting.Load()) })
	hsRefused := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "xks_tls_handshakes_refused_total",
		Help: "TLS handshakes refused after waiting read_header_timeout for a max_handshakes slot.",
	}, func() float64 { return float64(p.handshakes.refused.Load()) })
	conns := make([]prometheus.Collector, 0, len(p.order))
	for _, b := range p.order {
		conns = append(conns, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "xks_backend_connections",
			Help:        "Connections open from this replica to the backend (HTTP/1.1: one per request in flight).",
			ConstLabels: prometheus.Labels{"backend": b.name},
		}, func() float64 { return float64(b.conns.Load()) }))
	}
	reg.MustRegister(conns...)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_build_info", Help: "Always 1; the version label names the build."}, []string{"version"})
	build.WithLabelValues(p.cfg.Version).Set(1)
	reg.MustRegister(m.requests, m.duration, m.backendDur, m.backendReqs, m.sigv4, m.fallbacks, m.backendUp,
		m.healthDur, m.routeEpoch, m.routeInfo, inFlight, build, slow, m.slowBodyRejected, hsWaiting, hsRefused)
	// The standard runtime and process families (go_goroutines, go_gc_duration_seconds,
	// process_resident_memory_bytes, process_open_fds, ...) on the same registry and listener:
	// the first panel an operator opens, and where a leak shows.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, b := range p.cfg.Backends {
		m.backendUp.WithLabelValues(b.Name).Set(0)
	}
	return m
}

func (m *metrics) setRoute(r Route) {
	m.routeEpoch.Set(float64(r.Epoch))
	m.routeInfo.Reset()
	m.routeInfo.WithLabelValues(r.Primary, r.Fallback).Set(1)
}

func errLabel(n xks.ErrorName) string {
	if n == "" {
		return labelNone
	}
	return string(n)
}

func (m *metrics) observe(prefix string, res *Result) {
	op := opName(res.Op)
	be := res.Backend
	if be == "" {
		be = labelProxy
	}
	n := res.ErrorName
	if res.CallerGone {
		n = callerGoneLabel
	}
	rk := reqKey{prefix, op, be, errLabel(n)}
	dk := durKey{op, be}
	m.mu.RLock()
	c, ok1 := m.reqCache[rk]
	o, ok2 := m.durCache[dk]
	m.mu.RUnlock()
	if !ok1 || !ok2 {
		m.mu.Lock()
		if c, ok1 = m.reqCache[rk]; !ok1 {
			c = m.requests.WithLabelValues(rk.prefix, rk.op, rk.backend, rk.err)
			m.reqCache[rk] = c
		}
		if o, ok2 = m.durCache[dk]; !ok2 {
			o = m.duration.WithLabelValues(dk.op, dk.backend)
			m.durCache[dk] = o
		}
		m.mu.Unlock()
	}
	c.Inc()
	o.Observe(res.Latency.Seconds())
}

func (m *metrics) backendObserve(backend string, op xks.Operation, d time.Duration, n xks.ErrorName) {
	dk := durKey{op.String(), backend}
	rk := reqKey{"", dk.op, backend, errLabel(n)}
	m.mu.RLock()
	o, ok1 := m.bdCache[dk]
	c, ok2 := m.brCache[rk]
	m.mu.RUnlock()
	if !ok1 || !ok2 {
		m.mu.Lock()
		if o, ok1 = m.bdCache[dk]; !ok1 {
			o = m.backendDur.WithLabelValues(backend, dk.op)
			m.bdCache[dk] = o
		}
		if c, ok2 = m.brCache[rk]; !ok2 {
			c = m.backendReqs.WithLabelValues(backend, rk.op, rk.err)
			m.brCache[rk] = c
		}
		m.mu.Unlock()
	}
	o.Observe(d.Seconds())
	c.Inc()
}

func (m *metrics) sigv4Failure(prefix, reason string) { m.sigv4.WithLabelValues(prefix, reason).Inc() }

func (m *metrics) fallback(from, to string) { m.fallbacks.WithLabelValues(from, to).Inc() }

func (p *Proxy) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.cfg.Registry, promhttp.HandlerOpts{}))
	return mux
}
