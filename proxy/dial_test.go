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
	_, bc := handshakeHookedBackend(t, f, func() {
		handshakes.Add(1)
		n := handshaking.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		handshaking.Add(-1)
	})
	e := &env{fa: f, fb: newFakeKMS(credBackend)}
	e.start(t, []BackendConfig{bc}, nil)
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

// A dial still waiting for a slot when the call that started it has ended must not go on to
// open a connection. Here every handshake stalls for 300 ms while 40 calls with a 100 ms
// timeout all need a connection: 4 dials are in their handshakes and 36 wait for a slot. Once
// the stall ends, the 36 must not dial: under a real backend outage such dials queued by
// the thousand and kept the slots busy long after it recovered.
func TestQueuedDialsEndWithTheirCall(t *testing.T) {
	var stalled atomic.Bool
	var handshakes atomic.Int64
	f := newFakeKMS(credBackend)
	f.addKey("k1", true, true, sharedKey)
	srv, bc := handshakeHookedBackend(t, f, func() {
		handshakes.Add(1)
		if stalled.Load() {
			time.Sleep(300 * time.Millisecond)
		}
	})
	e := &env{fa: f, fb: newFakeKMS(credBackend)}
	e.start(t, []BackendConfig{bc}, nil,
		func(p *Proxy) {
			p.order[0].cfg.Timeout, p.cfg.Limits.Budget = 100*time.Millisecond, 250*time.Millisecond
		})
	stalled.Store(true)
	srv.CloseClientConnections() // the health check's connection: every call now needs a dial
	handshakes.Store(0)
	for _, st := range e.encryptAtOnce(t, 40, "k1") {
		if st == 200 {
			t.Fatal("an encrypt succeeded through a stalled handshake: the test proves nothing")
		}
	}
	stalled.Store(false)
	time.Sleep(700 * time.Millisecond) // the stalled handshakes end; a queued dial would follow
	if n := handshakes.Load(); n > 2*maxDialing {
		t.Errorf("%d handshakes for 40 calls that had all ended; the dials queued behind the first %d should have been dropped", n, maxDialing)
	}
	if st, b := e.post(t, keysPath+"k1/encrypt", encBody([]byte("pt"), nil)); st != 200 {
		t.Errorf("encrypt after the stall: %d %s", st, b)
	}
}

// handshakeHookedBackend serves f over HTTP/1.1 and TLS, calling hook at each ClientHello, and
// returns the server and backend "a" for it.
func handshakeHookedBackend(t *testing.T, f *fakeKMS, hook func()) (*httptest.Server, BackendConfig) {
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = false
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		hook()
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the dials still queued when a test ends
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, BackendConfig{Name: "a", XKSURL: srv.URL + "/aws", Region: "eu-west-1", Credential: credBackend,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond}
}
