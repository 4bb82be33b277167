package config

import (
	"errors"
	"net"

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
	MaxHandshakes        int      `toml:"max_handshakes"`
}

// server checks [server] and [server.limits]. A key left out stays zero and takes the proxy's
// default (proxy.Config).
func (c *checker) server(s *Server) {
	if s.Listen != "" {
		c.hostPort("server.listen", s.Listen)
	}
	if s.MetricsListen != "" && s.MetricsListen != proxy.MetricsDisabled {
		c.hostPort("server.metrics_listen", s.MetricsListen)
	}
	// The bounds are the proxy's own (proxy.CheckLimits); this only names the file's key.
	err := proxy.CheckLimits(s.Limits.Proxy())
	for _, e := range unjoin(err) {
		var le *proxy.LimitError
		if errors.As(e, &le) {
			c.fail("server.limits."+limitKeys[le.Field], "%s", le.Msg)
		} else {
			c.fail("server.limits", "%s", e.Error())
		}
	}
}

// limitKeys maps proxy.Limits fields onto [server.limits] keys.
var limitKeys = map[string]string{
	"MaxBodyBytes": "max_body_bytes", "MaxHeaderBytes": "max_header_bytes", "MaxHeaderCount": "max_header_count",
	"ReadHeaderTimeout": "read_header_timeout", "ReadTimeout": "read_timeout", "WriteTimeout": "write_timeout",
	"IdleTimeout": "idle_timeout", "Budget": "budget", "MaxInFlight": "max_in_flight",
	"XKS.MaxPayload": "max_payload_bytes", "XKS.MaxAAD": "max_aad_bytes",
	"BodyTimeout": "body_timeout", "SlowBodyAfter": "slow_body_after",
	"MaxSlowBodies": "max_slow_bodies", "MaxSlowBodiesPerConn": "max_slow_bodies_per_conn",
	"MaxHandshakes": "max_handshakes",
}

// unjoin lists the errors an errors.Join holds (or err alone).
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Proxy maps [server.limits] onto the proxy's Limits (a key left out stays zero: the default).
func (l Limits) Proxy() proxy.Limits {
	return proxy.Limits{
		MaxBodyBytes:         l.MaxBodyBytes,
		MaxHeaderBytes:       l.MaxHeaderBytes,
		MaxHeaderCount:       l.MaxHeaderCount,
		ReadHeaderTimeout:    l.ReadHeaderTimeout.D(),
		ReadTimeout:          l.ReadTimeout.D(),
		WriteTimeout:         l.WriteTimeout.D(),
		IdleTimeout:          l.IdleTimeout.D(),
		Budget:               l.Budget.D(),
		MaxInFlight:          l.MaxInFlight,
		BodyTimeout:          l.BodyTimeout.D(),
		SlowBodyAfter:        l.SlowBodyAfter.D(),
		MaxSlowBodies:        l.MaxSlowBodies,
		MaxSlowBodiesPerConn: l.MaxSlowBodiesPerConn,
		MaxHandshakes:        l.MaxHandshakes,
		XKS:                  xks.Limits{MaxPayload: l.MaxPayloadBytes, MaxAAD: l.MaxAADBytes},
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
