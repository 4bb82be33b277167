package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A burst of requests to a backend over HTTP/1.1 with no idle connection must not open more
// than maxDialing connections at once: each TLS handshake here takes 20 ms, the requests get
// the connections as they come free, and every request succeeds.
func TestDialsToABackendAreBounded(t *testing.T) {
	var handshaking, peak, handshakes atomic.Int64
	f := newFakeKMS(credBackend)
	f.addKey("k1", true, true, sharedKey)
	f.latency.Store(int64(5 * time.Millisecond))
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = false
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		handshakes.Add(1)
		n := handshaking.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		handshaking.Add(-1)
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the dials still queued when the test ends
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	e := &env{fa: f, fb: newFakeKMS(credBackend)}
	e.start(t, []BackendConfig{{Name: "a", XKSURL: srv.URL + "/aws", Region: "eu-west-1", Credential: credBackend,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond}}, nil)
	peak.Store(0)
	for _, st := range e.encryptAtOnce(t, 24, "k1") {
		if st != 200 {
			t.Errorf("encrypt in the burst: %d", st)
		}
	}
	if p := peak.Load(); p > maxDialing {
		t.Errorf("%d TLS handshakes with the backend at once; at most %d", p, maxDialing)
	}
	if handshakes.Load() < 2 {
		t.Errorf("only %d handshakes: the burst never needed a new connection and proves nothing", handshakes.Load())
	}
}
