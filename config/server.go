package config

import (
	"net"
	"time"

	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/xks"
)

// Server is [server].
type Server struct {
	Listen        string `toml:"listen"`
	MetricsListen string `toml:"metrics_listen"`
	VersionLabel  string `toml:"version_label"`
	PreferHTTP1   bool   `toml:"prefer_http1"`
	Limits        Limits `toml:"limits"`
}

// Limits is [server.limits].
type Limits struct {
	MaxBodyBytes      int64    `toml:"max_body_bytes"`
	MaxHeaderBytes    int      `toml:"max_header_bytes"`
	MaxHeaderCount    int      `toml:"max_header_count"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	Budget            Duration `toml:"budget"`
	MaxInFlight       int      `toml:"max_in_flight"`
	MaxPayloadBytes   int      `toml:"max_payload_bytes"`
	MaxAADBytes       int      `toml:"max_aad_bytes"`
	// Unauthenticated work (proxy.Limits; the proxy's Config holds the defaults and bounds).
	BodyTimeout          Duration `toml:"body_timeout"`
	SlowBodyAfter        Duration `toml:"slow_body_after"`
	MaxSlowBodies        int      `toml:"max_slow_bodies"`
	MaxSlowBodiesPerConn int      `toml:"max_slow_bodies_per_conn"`
}

// server checks [server] and [server.limits]. A key left out stays zero and takes the proxy's
// default (proxy.Config); the ranges below are the file's bounds on what an operator may write.
func (c *checker) server(s *Server) {
	if s.Listen != "" {
		c.hostPort("server.listen", s.Listen)
	}
	if s.MetricsListen != "" && s.MetricsListen != proxy.MetricsDisabled {
		c.hostPort("server.metrics_listen", s.MetricsListen)
	}
	l := &s.Limits
	const lp = "server.limits."
	if l.MaxBodyBytes != 0 && (l.MaxBodyBytes < 32<<10 || l.MaxBodyBytes > 16<<20) {
		c.fail(lp+"max_body_bytes", "must be between 32768 and 16777216")
	}
	if l.MaxHeaderBytes != 0 && (l.MaxHeaderBytes < 4096 || l.MaxHeaderBytes > 1<<20) {
		c.fail(lp+"max_header_bytes", "must be between 4096 and 1048576")
	}
	if l.MaxHeaderCount != 0 && (l.MaxHeaderCount < 8 || l.MaxHeaderCount > 1000) {
		c.fail(lp+"max_header_count", "must be between 8 and 1000")
	}
	c.positiveDur(lp+"read_header_timeout", l.ReadHeaderTimeout)
	c.positiveDur(lp+"read_timeout", l.ReadTimeout)
	c.positiveDur(lp+"write_timeout", l.WriteTimeout)
	c.positiveDur(lp+"idle_timeout", l.IdleTimeout)
	if l.Budget < 0 || l.Budget.D() > 250*time.Millisecond {
		c.fail(lp+"budget", "must be positive and at most 250ms (AWS KMS's timeout)")
	}
	if l.MaxInFlight < 0 {
		c.fail(lp+"max_in_flight", "must be at least 1")
	}
	c.positiveDur(lp+"body_timeout", l.BodyTimeout)
	c.positiveDur(lp+"slow_body_after", l.SlowBodyAfter)
	if l.MaxSlowBodies < 0 || l.MaxSlowBodiesPerConn < 0 {
		c.fail(lp+"max_slow_bodies", "must be at least 1")
	}
	if l.MaxPayloadBytes != 0 && (l.MaxPayloadBytes < xks.SpecMinPayload || l.MaxPayloadBytes > 1<<20) {
		c.fail(lp+"max_payload_bytes", "must be between %d (spec minimum) and 1048576", xks.SpecMinPayload)
	}
	if l.MaxAADBytes != 0 && (l.MaxAADBytes < xks.SpecMinAAD || l.MaxAADBytes > 1<<20) {
		c.fail(lp+"max_aad_bytes", "must be between %d (spec minimum) and 1048576", xks.SpecMinAAD)
	}
}

func (c *checker) hostPort(field, s string) (string, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		c.fail(field, "must be host:port (e.g. \"0.0.0.0:443\")")
		return "", false
	}
	for _, ch := range port {
		if ch < '0' || ch > '9' {
			c.fail(field, "port must be a number")
			return "", false
		}
	}
	return host, true
}
