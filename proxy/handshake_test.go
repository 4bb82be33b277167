package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowHandshakes makes every server handshake of the proxy take d inside its slot (in
// GetCertificate, part of the server's work) and counts how many run at once.
type slowHandshakes struct {
	d                 time.Duration
	running, peak, nb atomic.Int64
}

func (s *slowHandshakes) wrap(cfg *Config) {
	cfg.TLS = cfg.TLS.Clone()
	get, certs := cfg.TLS.GetCertificate, cfg.TLS.Certificates
	cfg.TLS.Certificates = nil
	cfg.TLS.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.nb.Add(1)
		n := s.running.Add(1)
		for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
		}
		time.Sleep(s.d)
		s.running.Add(-1)
		if get != nil {
			return get(hello)
		}
		return &certs[0], nil
	}
}

// newGatedEnv is a proxy with max_handshakes n whose server handshakes take d each.
func newGatedEnv(t *testing.T, d time.Duration, n int) (*env, *slowHandshakes) {
	slow := &slowHandshakes{d: d}
	return newEnv(t, func(c *Config) {
		slow.wrap(c)
		c.Limits.MaxHandshakes = n
	}), slow
}

func (e *env) clientTLS() *tls.Config {
	return e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
}

// handshake dials the proxy and completes a TLS handshake within limit.
func (e *env) handshake(cfg *tls.Config, limit time.Duration) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	d := &tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", e.p.Addr().String())
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

func TestHandshakesAreBounded(t *testing.T) {
	e, slow := newGatedEnv(t, 30*time.Millisecond, 2)
	cfg := e.clientTLS()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Go(func() {
			c, err := e.handshake(cfg, 5*time.Second)
			if err != nil {
				failed.Add(1)
				t.Log(err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of 16 handshakes failed; they should have waited for a slot", failed.Load())
	}
	if p := slow.peak.Load(); p > 2 {
		t.Errorf("%d server handshakes at once; max_handshakes is 2", p)
	}
	if slow.nb.Load() < 16 {
		t.Errorf("only %d handshakes reached the server", slow.nb.Load())
	}
}

// A slot is held from the ClientHello to the end of the server's part only: not by a client
// that connects and sends nothing, nor by a handshake that failed or was abandoned.
func TestHandshakeSlotsAreGivenBack(t *testing.T) {
	e, _ := newGatedEnv(t, 50*time.Millisecond, 1)
	good := e.clientTLS()
	for _, c := range []struct {
		name string
		try  func(t *testing.T) // one connection that must not keep the one slot
	}{
		{"silent connection", func(t *testing.T) {
			c, err := net.Dial("tcp", e.p.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}},
		{"refused certificate", func(t *testing.T) {
			// The client refuses the server's certificate, after the server's flight.
			if c, err := e.handshake(&tls.Config{ServerName: "127.0.0.1"}, 2*time.Second); err == nil {
				c.Close()
				t.Fatal("a client without the proxy's root accepted its certificate")
			}
		}},
		{"connection kept open after its handshake", func(t *testing.T) {
			c, err := e.handshake(good, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}},
		{"client gone mid-handshake", func(t *testing.T) {
			// It gives up while the server is still in its part (50 ms).
			if c, err := e.handshake(good, 10*time.Millisecond); err == nil {
				c.Close()
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for range 4 {
				c.try(t)
			}
			conn, err := e.handshake(good, 2*time.Second)
			if err != nil {
				t.Fatalf("handshake after 4 of them: %v", err)
			}
			conn.Close()
		})
	}
	if e.p.handshakes.refused.Load() != 0 {
		t.Errorf("%d handshakes refused for want of a slot", e.p.handshakes.refused.Load())
	}
}

// A ClientHello that finds no slot within read_header_timeout is refused, and counted; once a
// slot is free again, handshakes go through.
func TestHandshakeRefusedAfterWaiting(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits.MaxHandshakes = 1
		c.Limits.ReadHeaderTimeout = 100 * time.Millisecond
	})
	cfg := e.clientTLS()
	e.p.handshakes.slots <- struct{}{} // the one slot, taken
	if c, err := e.handshake(cfg, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("a handshake went through with no slot free")
	}
	<-e.p.handshakes.slots
	c, err := e.handshake(cfg, 5*time.Second)
	if err != nil {
		t.Fatalf("handshake with the slot free: %v", err)
	}
	c.Close()
	if n := e.p.handshakes.refused.Load(); n != 1 {
		t.Errorf("%d handshakes counted as refused, want 1", n)
	}
	if !strings.Contains(scrape(t, e), "\nxks_tls_handshakes_refused_total 1\n") {
		t.Error("xks_tls_handshakes_refused_total is not 1 on the metrics endpoint")
	}
}

// Session resumption still works through the per-connection configuration.
func TestHandshakeGateKeepsResumption(t *testing.T) {
	e := newEnv(t, nil)
	cfg := e.clientTLS()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 4 {
		c, err := e.handshake(cfg, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		resumed := c.ConnectionState().DidResume
		// TLS 1.3 tickets arrive after the handshake: a read processes them.
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, _ = c.Read(make([]byte, 1))
		c.Close()
		if resumed {
			return
		}
		t.Logf("connection %d did not resume", i+1)
	}
	t.Error("no connection resumed an earlier one's session")
}
