package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// closeSignal is a listener that says when Run closed it (stopped accepting).
type closeSignal struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeSignal) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// TestDrainAnswersOnOpenConnections: once Run stops accepting, a request on a connection that
// was open is still answered, with the connection's end announced (Connection: close over
// HTTP/1.1, GOAWAY over HTTP/2), instead of the idle connection being closed under the client.
// The listening socket is the one ListenFunc gave.
func TestDrainAnswersOnOpenConnections(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "http1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			fa := newFakeKMS(credBackend)
			fa.addKey("k1", true, true, sharedKey)
			sa, ta := startFake(t, fa)
			serverTLS, cert := selfSignedTLS(t, "localhost", "127.0.0.1")
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := &closeSignal{Listener: raw, closed: make(chan struct{})}
			var asked []string
			cfg := Config{
				Listen:        "xks.example:8443", // never bound: ListenFunc answers for it
				MetricsListen: MetricsDisabled,
				TLS:           serverTLS,
				Prefixes:      []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}},
				Backends:      []BackendConfig{{Name: "a", XKSURL: sa.URL + "/aws", Region: "eu-west-1", Credential: credBackend, TLS: ta, Timeout: 200 * time.Millisecond}},
				Route:         Route{Epoch: 1, Primary: "a"},
				Logger:        slog.New(slog.DiscardHandler),
				Health:        HealthConfig{Disabled: true},
				ListenFunc: func(_ context.Context, addr string) (net.Listener, error) {
					asked = append(asked, addr)
					return ln, nil
				},
			}
			p, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			relaxTimeouts(p)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-p.Ready()
			if got := p.Addr().String(); got != raw.Addr().String() || len(asked) != 1 || asked[0] != cfg.Listen {
				t.Fatalf("served %s after ListenFunc(%q), want the given socket %s", got, asked, raw.Addr())
			}
			pool := x509.NewCertPool()
			pool.AddCert(cert)
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, ForceAttemptHTTP2: h2, MaxConnsPerHost: 1}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			e := &env{p: p, url: "https://" + p.Addr().String(), client: &http.Client{Transport: tr, Timeout: 5 * time.Second},
				signer: mustSigner(t, credOld, time.Now)}
			st, body, hdr := e.send(t, e.request(t, http.MethodPost, keysPath+"k1/metadata", []byte(`{"requestMetadata":`+meta("DescribeKey")+`}`), e.signer, styleKMS))
			if st != 200 || hdr.Get("Connection") == "close" {
				t.Fatalf("before the stop: %d %s (Connection %q)", st, body, hdr.Get("Connection"))
			}
			cancel()
			<-ln.closed // Run stopped accepting; the connection above is still open
			req := e.request(t, http.MethodPost, keysPath+"k1/metadata", []byte(`{"requestMetadata":`+meta("DescribeKey")+`}`), e.signer, styleKMS)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatalf("a request on a connection open before the stop failed: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("during the drain: %d", resp.StatusCode)
			}
			if !h2 && !resp.Close {
				t.Error("an HTTP/1.1 reply during the drain does not say Connection: close")
			}
			select {
			case err := <-done:
				done <- err
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after its connections closed")
			}
			if p.OpenConnections() != 0 {
				t.Errorf("%d connections still open after Run", p.OpenConnections())
			}
		})
	}
}
