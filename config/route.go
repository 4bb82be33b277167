package config

import (
	"time"

	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/xks"
)

// Route is [route].
type Route struct {
	Primary  string `toml:"primary"`
	Fallback string `toml:"fallback"`
}

// Health is [health].
type Health struct {
	Interval        Duration `toml:"interval"`
	TestKeyID       string   `toml:"test_key_id"`
	PrincipalARN    string   `toml:"principal_arn"`
	DegradedLatency Duration `toml:"degraded_latency"`
	Disabled        bool     `toml:"disabled"`
}

// Admin is [admin].
type Admin struct {
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
	Token       string `toml:"token"`
	TokenFile   string `toml:"token_file"`
	TokenEnv    string `toml:"token_env"`
	// TLS serves the admin API over TLS with the server's certificate; CertFile/KeyFile give
	// it its own (admin_tls.go). One of them is required with allow_remote.
	TLS      bool   `toml:"tls"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// route checks [route] against the backend names.
func (c *checker) route(f *File, names map[string]int) {
	if f.Route.Primary == "" && len(f.Backend) > 0 {
		f.Route.Primary = f.Backend[0].Name
	}
	if _, ok := names[f.Route.Primary]; !ok && len(f.Backend) > 0 {
		c.fail("route.primary", "no backend is named %q", f.Route.Primary)
	}
	if fb := f.Route.Fallback; fb != "" {
		if _, ok := names[fb]; !ok {
			c.fail("route.fallback", "no backend is named %q", fb)
		} else if fb == f.Route.Primary {
			c.fail("route.fallback", "must differ from route.primary")
		}
	}
}

// health checks [health]; keys left out take the proxy's defaults (proxy.HealthConfig).
func (c *checker) health(h *Health) {
	if h.Interval < 0 || h.Interval.D() > 55*time.Second {
		c.fail("health.interval", "must be positive and at most 55s (the cached result must stay under a minute old)")
	}
	if h.TestKeyID != "" {
		c.xksRule("health.test_key_id", xks.ValidKeyID(h.TestKeyID))
	}
	if len(h.PrincipalARN) > 2048 {
		c.fail("health.principal_arn", "longer than 2048 characters")
	}
	c.positiveDur("health.degraded_latency", h.DegradedLatency)
}

// admin checks [admin] and resolves its token.
func (c *checker) admin(a *Admin) {
	a.Token = c.secret("admin", "token", a.Token, a.TokenFile, a.TokenEnv, a.Listen != "")
	if a.Listen != "" {
		if host, ok := c.hostPort("admin.listen", a.Listen); ok && !a.AllowRemote && !proxy.IsLoopback(host) {
			c.fail("admin.listen", "must be a loopback address (127.0.0.1, ::1, localhost) unless admin.allow_remote = true")
		}
		if len(a.Token) < 32 && c.resolves("admin") {
			c.fail("admin.token", "must be at least 32 characters")
		}
		c.adminTLS(a)
	}
}
