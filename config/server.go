package config

import (
	"net"
	"time"
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
}

// server checks [server] and [server.limits].
func (c *checker) server(s *Server) {
	defStr(&s.Listen, DefaultListen)
	c.hostPort("server.listen", s.Listen)
	switch s.MetricsListen {
	case "":
		s.MetricsListen = DefaultMetricsListen
	case "off":
		s.MetricsListen = ""
	}
	if s.MetricsListen != "" {
		c.hostPort("server.metrics_listen", s.MetricsListen)
	}
	l := &s.Limits
	defInt(&l.MaxBodyBytes, 64<<10)
	defInt(&l.MaxHeaderBytes, 16<<10)
	defInt(&l.MaxHeaderCount, 64)
	defDur(&l.ReadHeaderTimeout, 5*time.Second)
	defDur(&l.ReadTimeout, 10*time.Second)
	defDur(&l.WriteTimeout, 10*time.Second)
	defDur(&l.IdleTimeout, 120*time.Second)
	defDur(&l.Budget, 240*time.Millisecond)
	defInt(&l.MaxInFlight, 1024)
	defInt(&l.MaxPayloadBytes, 6144)
	defInt(&l.MaxAADBytes, 8192)
	const lp = "server.limits."
	if l.MaxBodyBytes < 32<<10 || l.MaxBodyBytes > 16<<20 {
		c.fail(lp+"max_body_bytes", "must be between 32768 and 16777216")
	}
	if l.MaxHeaderBytes < 4096 || l.MaxHeaderBytes > 1<<20 {
		c.fail(lp+"max_header_bytes", "must be between 4096 and 1048576")
	}
	if l.MaxHeaderCount < 8 || l.MaxHeaderCount > 1000 {
		c.fail(lp+"max_header_count", "must be between 8 and 1000")
	}
	c.positiveDur(lp+"read_header_timeout", l.ReadHeaderTimeout)
	c.positiveDur(lp+"read_timeout", l.ReadTimeout)
	c.positiveDur(lp+"write_timeout", l.WriteTimeout)
	c.positiveDur(lp+"idle_timeout", l.IdleTimeout)
	if l.Budget <= 0 || l.Budget.D() > 250*time.Millisecond {
		c.fail(lp+"budget", "must be positive and at most 250ms (AWS KMS's timeout)")
	}
	if l.MaxInFlight < 1 {
		c.fail(lp+"max_in_flight", "must be at least 1")
	}
	if l.MaxPayloadBytes < 4300 || l.MaxPayloadBytes > 1<<20 {
		c.fail(lp+"max_payload_bytes", "must be between 4300 (spec minimum) and 1048576")
	}
	if l.MaxAADBytes < 8192 || l.MaxAADBytes > 1<<20 {
		c.fail(lp+"max_aad_bytes", "must be between 8192 (spec minimum) and 1048576")
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

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
