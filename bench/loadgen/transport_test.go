package loadgen

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/xksproxy/xksproxy/sigv4"
)

type connKey struct{}

// connCounter is a loopback TLS server that numbers the connections it accepts and counts the
// requests each carried.
type connCounter struct {
	mu     sync.Mutex
	perCon map[int]int // connection number → requests
	n      int
}

func startConnCounter(t *testing.T, http2 bool) (*httptest.Server, *connCounter) {
	t.Helper()
	cc := &connCounter{perCon: map[int]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Context().Value(connKey{}).(int)
		cc.mu.Lock()
		cc.perCon[id]++
		cc.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		cc.n++
		return context.WithValue(ctx, connKey{}, cc.n)
	}
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, cc
}

// Requests that never overlap (a low rate: each reply is back before the next request leaves)
// still use every one of Conns connections, in turn: behind a load balancer that balances
// connections, that is what spreads the load over the replicas.
func TestEndpointSpreadsOverConns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		http2 bool
		conns int
	}{
		{"http1 16 conns", false, 16},
		{"http2 4 conns", true, 4},
		{"http1 1 conn", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cc := startConnCounter(t, tc.http2)
			cfg := Config{
				Endpoint: srv.URL, Prefix: "/aws", Region: testRegion,
				Credential: sigv4.Credential{AccessKeyID: testAKID, Secret: testSecret},
				TLS:        &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs},
				Conns:      tc.conns, HTTP2: tc.http2,
			}
			if err := cfg.checkAndSetDefaults(false); err != nil {
				t.Fatal(err)
			}
			ep, err := newEndpoint(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ep.close()
			const rounds = 5
			var reply []byte
			for range rounds * tc.conns {
				status, rep, class, err := ep.roundTrip(context.Background(), ep.base+"/health", []byte(`{}`), reply)
				reply = rep
				if err != nil || class != "" || status != http.StatusOK {
					t.Fatalf("request: status %d, class %q, err %v", status, class, err)
				}
			}
			cc.mu.Lock()
			defer cc.mu.Unlock()
			if cc.n != tc.conns || len(cc.perCon) != tc.conns {
				t.Fatalf("server accepted %d connections (%d carried requests), want %d: %v", cc.n, len(cc.perCon), tc.conns, cc.perCon)
			}
			for id, n := range cc.perCon {
				if n != rounds {
					t.Errorf("connection %d carried %d requests, want %d (round-robin): %v", id, n, rounds, cc.perCon)
				}
			}
			want := int64(rounds * tc.conns)
			if got := ep.replies2.Load(); tc.http2 && got != want {
				t.Errorf("%d HTTP/2 replies, want %d", got, want)
			}
		})
	}
}
