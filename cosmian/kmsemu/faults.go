package kmsemu

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// Faults are injected failures, changed at run time with SetFaults.
//
// Scoping: with XKSOnly the faults apply to /aws requests only, with KMIPOnly to every other
// route (/kmip, /access, /health, …). Down with a scope is applied per request (hijack and close);
// without a scope it also refuses new connections in Listener.
type Faults struct {
	Latency   time.Duration // added before handling each request (ends early if the client goes away)
	ErrorRate float64       // fraction of requests answered with an injected 500
	Down      bool          // refuse connections and drop existing ones
	XKSOnly   bool
	KMIPOnly  bool
	// CorruptEncrypt makes every successful XKS Encrypt reply wrong in one way, as a failing key
	// manager would (a test of the proxy's integrity checks, not a Cosmian behaviour).
	CorruptEncrypt Corruption
}

// Corruption is a way for CorruptEncrypt to spoil an XKS Encrypt reply.
type Corruption int

const (
	// CorruptNothing leaves replies alone.
	CorruptNothing Corruption = iota
	// CorruptCiphertext flips a bit of the ciphertext before the ciphertextDataIntegrityValue is
	// computed: the value matches the reply, and only a decrypt finds the damage.
	CorruptCiphertext
	// CorruptCDIV flips a bit of the ciphertextDataIntegrityValue.
	CorruptCDIV
)

// SetFaults replaces the injected faults. Switching Down on closes the connections accepted
// through Listener, so keep-alive clients see the outage at once.
func (s *Server) SetFaults(f Faults) {
	old := s.faults.Swap(&f)
	if f.Down && !old.Down && !f.XKSOnly && !f.KMIPOnly {
		s.conns.closeAll()
	}
}

// Faults returns the current faults.
func (s *Server) Faults() Faults { return *s.faults.Load() }

// applyFaults injects the configured faults; it reports whether the request was answered.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, xks bool) bool {
	f := s.faults.Load()
	if (f.XKSOnly && !xks) || (f.KMIPOnly && xks) {
		return false
	}
	if f.Down {
		s.errCount.Add(1)
		dropConnection(w)
		return true
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	if f.ErrorRate > 0 && mrand.Float64() < f.ErrorRate {
		s.errCount.Add(1)
		if xks {
			writeXKSError(w, "InternalException", "injected fault")
		} else {
			writeText(w, http.StatusInternalServerError, "text/html; charset=utf-8", "Internal server error")
		}
		return true
	}
	return false
}

// dropConnection closes the underlying connection without a response (hijack), or aborts the
// handler when the connection cannot be hijacked (HTTP/2).
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// connTracker remembers the live connections accepted through Listener.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (t *connTracker) add(c net.Conn) {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

func (t *connTracker) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *connTracker) closeAll() {
	t.mu.Lock()
	conns := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Listener wraps ln so that Down refuses connections (accept, then close at once) and so that
// switching Down on drops the existing ones.
func (s *Server) Listener(ln net.Listener) net.Listener { return &faultListener{Listener: ln, s: s} }

type faultListener struct {
	net.Listener
	s *Server
}

func (l *faultListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if f := l.s.faults.Load(); f.Down && !f.XKSOnly && !f.KMIPOnly {
			_ = c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, t: &l.s.conns}
		l.s.conns.add(tc)
		return tc, nil
	}
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.t.remove(c) })
	return c.Conn.Close()
}

// Running is a started server.
type Running struct {
	URL      string            // base URL, e.g. https://127.0.0.1:39123
	CertPool *x509.CertPool    // trusts Cert (nil for plain HTTP)
	Cert     *x509.Certificate // the self-signed server certificate (nil for plain HTTP)
	Close    func() error      // graceful shutdown (bounded)
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves s, over TLS with a fresh self-signed ECDSA
// P-256 certificate (for 127.0.0.1, ::1 and localhost) when tlsSelfSigned, else plain HTTP.
func (s *Server) Start(addr string, tlsSelfSigned bool) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kmsemu: listen: %w", err)
	}
	run := &Running{}
	scheme := "http"
	// Connections that never sent a request (a client's spare dial): Shutdown would wait 5 s
	// before it counts them idle; Close closes them at once, as a server going away does.
	var connMu sync.Mutex
	fresh := map[net.Conn]bool{}
	srv := &http.Server{
		ConnState: func(c net.Conn, st http.ConnState) {
			connMu.Lock()
			defer connMu.Unlock()
			if st == http.StateNew {
				fresh[c] = true
			} else {
				delete(fresh, c)
			}
		},
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second, // Cosmian's keep-alive
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	var wrapped net.Listener = s.Listener(ln)
	if tlsSelfSigned {
		cert, leaf, err := selfSigned()
		if err != nil {
			_ = ln.Close()
			return nil, err
		}
		run.Cert = leaf
		run.CertPool = x509.NewCertPool()
		run.CertPool.AddCert(leaf)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		wrapped = tls.NewListener(wrapped, srv.TLSConfig)
		scheme = "https"
	}
	run.URL = scheme + "://" + ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(wrapped); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("kmsemu: serve", "err", err)
		}
	}()
	run.Close = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		connMu.Lock()
		for c := range fresh {
			_ = c.Close()
		}
		connMu.Unlock()
		err := srv.Shutdown(ctx)
		<-done
		return err
	}
	return run, nil
}

func selfSigned() (tls.Certificate, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("kmsemu: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("kmsemu: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kmsemu", Organization: []string{"kmsemu test server"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("kmsemu: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("kmsemu: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}

// ---- response helpers ----

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, "text/html; charset=utf-8", "Internal server error")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeText writes a text body; an empty contentType sends none (actix's .body(&str) sets none;
// net/http would otherwise sniff one).
func writeText(w http.ResponseWriter, status int, contentType, body string) {
	if contentType == "" {
		w.Header()["Content-Type"] = nil
	} else {
		w.Header().Set("Content-Type", contentType)
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
