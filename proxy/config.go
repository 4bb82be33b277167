package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// Config configures a Proxy. New validates it and fills the defaults.
type Config struct {
	Listen        string          // main XKS listener; default "127.0.0.1:8443"
	TLS           *tls.Config     // server TLS with certificate(s) loaded; required
	Prefixes      []PrefixConfig  // ≥ 1
	Backends      []BackendConfig // 1..10 (ekmFleetDetails holds at most 10 entries)
	Route         Route           // initial route; Primary required
	Limits        Limits
	Health        HealthConfig
	MetricsListen string // default DefaultMetricsListen; MetricsDisabled ("off") disables
	Admin         AdminConfig
	Version       string        // reported in xksProxyModel, e.g. "xksproxy 0.1.0"
	KeyInfo       KeyInfoConfig // true key usage and status (keyinfo.go)
	// Migration, when set, is the migration in progress (migration.go): its rules for the
	// fallback and CreateKey, what it learns of each request, the fleet's size and readiness,
	// and its operator handlers. Optional.
	Migration Migration
	Logger    *slog.Logger
	Registry  *prometheus.Registry // default: a new one (nothing registered globally)
	Now       func() time.Time
	// ListenFunc, when set, gives Run its listening sockets instead of binding them: it is called
	// once for Listen, MetricsListen and Admin.Listen each (when enabled). The app passes sockets
	// inherited from the process it replaces or from systemd, or shared by the proxies of two
	// configurations during a reload. Run closes what it returns when it stops accepting, so
	// that Close must end this proxy's accepting only. Default: bind the address.
	ListenFunc func(ctx context.Context, addr string) (net.Listener, error)
	// PreferHTTP1 offers "http/1.1" before "h2" in TLS ALPN (moved first in TLS.NextProtos):
	// a client offering both then gets HTTP/1.1, which costs the proxy less CPU per request
	// than Go's HTTP/2 server (bench/README.md); an h2-only client still gets h2. Default
	// false: h2 first, as AWS's own examples negotiate.
	PreferHTTP1 bool
}

// MetricsDisabled as Config.MetricsListen turns the metrics listener off.
const MetricsDisabled = "off"

// PrefixConfig is one logical key store.
type PrefixConfig struct {
	Path        string // URI prefix before /kms/xks/v1, e.g. "/aws" or ""
	Region      string
	Service     string // default kms-xks-proxy
	Credentials []sigv4.Credential
}

// BackendConfig is one Cosmian KMS server's XKS endpoint.
type BackendConfig struct {
	Name         string // [a-z0-9-]{1,32}, unique
	XKSURL       string // base before /kms/xks/v1, e.g. "https://kms-a:9998/aws"
	Region       string
	Service      string // default kms-xks-proxy
	Credential   sigv4.Credential
	TLS          *tls.Config   // client TLS; nil → system roots
	Timeout      time.Duration // per attempt; default 200ms
	MaxIdleConns int           // default 64
	Model        string        // ekmFleetDetails.model; default "Cosmian KMS"
}

// Route names the backend that serves traffic and an optional fallback.
type Route struct {
	Epoch    uint64 `json:"epoch"`
	Primary  string `json:"primary"`
	Fallback string `json:"fallback,omitempty"`
}

// Limits bound every request.
type Limits struct {
	MaxBodyBytes      int64         // default 64 KiB
	MaxHeaderBytes    int           // default 16 KiB
	MaxHeaderCount    int           // default 64 header values
	ReadHeaderTimeout time.Duration // default 5s
	ReadTimeout       time.Duration // default 10s
	WriteTimeout      time.Duration // default 10s
	IdleTimeout       time.Duration // default 120s (AWS reuses connections)
	Budget            time.Duration // total per request incl. a fallback attempt; default 240ms
	MaxInFlight       int           // default 1024 authenticated requests; beyond → 429 ThrottlingException
	// BodyTimeout bounds the time from the handler's start to the body's last byte; default
	// 250ms (AWS's whole budget), at most 10s. A later body is 400 ValidationException.
	BodyTimeout time.Duration
	// SlowBodyAfter: a body not read by then makes its request "slow" (default 50ms, below
	// BodyTimeout). Slow requests need a slot of MaxSlowBodies (default 64) and of
	// MaxSlowBodiesPerConn on their connection (default 4); without one they are cut: 429.
	SlowBodyAfter        time.Duration
	MaxSlowBodies        int
	MaxSlowBodiesPerConn int
	// MaxHandshakes bounds the TLS handshakes the main listener runs at once (default
	// GOMAXPROCS, at least 2); a ClientHello waits up to ReadHeaderTimeout for a slot.
	MaxHandshakes int
	// AllowSlowBudget lifts the 250 ms cap on Budget. Only for end-to-end tests under the race
	// detector, which slows every component several times over; configuration never sets it.
	AllowSlowBudget bool
	XKS             xks.Limits
}

// HealthConfig configures the deep health check.
type HealthConfig struct {
	Interval        time.Duration // default 15s; ≤ 55s
	TestKeyID       string        // default: per backend, HealthKeyID
	PrincipalARN    string        // default "xksproxy-health"
	DegradedLatency time.Duration // default 150ms
	// ProbeTimeout bounds one backend's whole probe (3 calls); default 2s.
	ProbeTimeout time.Duration
	Disabled     bool // no probes; every backend is reported ACTIVE
}

// AdminConfig configures the admin listener.
type AdminConfig struct {
	Listen      string // "" disables; must be loopback unless AllowRemote
	Token       string // required when Listen is set; ≥ 32 characters
	AllowRemote bool
	// TLS serves the admin API over TLS (its own certificate, or the server's config). It is
	// required beyond loopback: the bearer token must never cross a network in clear text.
	TLS *tls.Config
}

// Defaults of Config that another layer needs to reason about (the configuration file checks a
// backend timeout against the budget in effect).
const (
	DefaultListen        = "127.0.0.1:8443"
	DefaultMetricsListen = "127.0.0.1:9464"
	DefaultBudget        = 240 * time.Millisecond
)

const (
	maxBackends  = 10
	maxHealthAge = 60 * time.Second
)

func (c *Config) checkAndSetDefaults() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.TLS == nil {
		return configErr("TLS is required")
	}
	if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil {
		return configErr("TLS has no certificate")
	}
	if len(c.Prefixes) == 0 {
		return configErr("at least one prefix is required")
	}
	if len(c.Backends) == 0 || len(c.Backends) > maxBackends {
		return configErr("need 1 to %d backends, got %d", maxBackends, len(c.Backends))
	}
	if c.Route.Primary == "" {
		return configErr("route: primary is required")
	}
	switch c.MetricsListen {
	case "":
		c.MetricsListen = DefaultMetricsListen
	case MetricsDisabled:
		c.MetricsListen = ""
	}
	if c.Version == "" {
		c.Version = "xksproxy"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := c.KeyInfo.CheckAndSetDefaults(); err != nil {
		return err
	}
	l := &c.Limits
	if err := l.checkAndSetDefaults(); err != nil {
		return err
	}
	h := &c.Health
	setDef(&h.Interval, 15*time.Second)
	if h.Interval < 0 || h.Interval > 55*time.Second {
		return configErr("health: Interval must be at most 55s (the cached result must stay under a minute old)")
	}
	if h.TestKeyID != "" {
		if err := xks.ValidKeyID(h.TestKeyID); err != nil {
			return configErr("health: TestKeyID: %v", err)
		}
	}
	if h.PrincipalARN == "" {
		h.PrincipalARN = "xksproxy-health"
	}
	setDef(&h.DegradedLatency, 150*time.Millisecond)
	setDef(&h.ProbeTimeout, 2*time.Second)
	for i := range c.Backends {
		b := &c.Backends[i]
		if !ValidBackendName(b.Name) {
			return configErr("backend[%d]: name %q must be 1 to 32 characters of a-z 0-9 -", i, b.Name)
		}
		if b.Service == "" {
			b.Service = sigv4.DefaultService
		}
		setDef(&b.Timeout, 200*time.Millisecond)
		if b.Timeout < 0 || b.Timeout > l.Budget {
			return configErr("backend[%d] %q: Timeout must be positive and within the budget %v", i, b.Name, l.Budget)
		}
		setDef(&b.MaxIdleConns, 64)
		if b.Model == "" {
			b.Model = "Cosmian KMS"
		}
	}
	a := &c.Admin
	if a.Listen != "" {
		if len(a.Token) < 32 {
			return configErr("admin: Token of at least 32 characters is required when Listen is set")
		}
		host, _, err := net.SplitHostPort(a.Listen)
		if err != nil {
			return configErr("admin: Listen %q: %v", a.Listen, err)
		}
		if !a.AllowRemote && !IsLoopback(host) {
			return configErr("admin: Listen %q is not a loopback address (set AllowRemote to allow it)", a.Listen)
		}
		if !IsLoopback(host) && a.TLS == nil {
			return configErr("admin: Listen %q is beyond loopback without TLS: the bearer token would cross the network in clear text (give the admin listener TLS)", a.Listen)
		}
		if a.TLS != nil && len(a.TLS.Certificates) == 0 && a.TLS.GetCertificate == nil && a.TLS.GetConfigForClient == nil {
			return configErr("admin: TLS has no certificate")
		}
	}
	return nil
}

func setDef[T int | int64 | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// IsLoopback reports whether host (of a listen address) is a loopback name or address: the admin
// listener's rule.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidBackendName: 1 to 32 characters of a-z 0-9 - (a metric label and a route name).
func ValidBackendName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
