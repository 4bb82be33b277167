package certs

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/internal/metrictest"
)

func TestSelfSigned(t *testing.T) {
	tests := []struct {
		name       string
		hosts      []string
		serverName string
		dialHost   string
	}{
		{"default localhost", nil, "localhost", "127.0.0.1"},
		{"dns name", []string{"xks.test"}, "xks.test", "127.0.0.1"},
		{"ip address", []string{"127.0.0.1"}, "127.0.0.1", "127.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := SelfSigned(tc.hosts...)
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := serveTLS(t, s.TLSConfig(), 0)
			leaf := handshake(t, addr, tc.serverName, s.CertPool())[0]
			if !leaf.Equal(s.Certificate()) {
				t.Error("served leaf differs from Certificate()")
			}
			if leaf.PublicKeyAlgorithm.String() != "ECDSA" {
				t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
			}
		})
	}
	if _, err := SelfSigned(""); err == nil {
		t.Error("empty host accepted")
	}
}

func TestSelfSignedRunAndMetrics(t *testing.T) {
	s, err := SelfSigned("xks.test")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s.SetMetrics(NewMetrics(reg))
	if d, ok := metrictest.Value(t, reg, MetricCertificateExpirySeconds, map[string]string{"source": "self-signed", "domain": "xks.test"}); !ok || d < 364*86400 || d > 366*86400 {
		t.Errorf("expiry seconds = %v (present %v), want ~365 days", d, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); err != nil {
		t.Error(err)
	}
}
