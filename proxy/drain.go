package proxy

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Draining: when Run stops, the main listener stops accepting first (its socket may be serving on
// in the proxy of a new configuration, or in the process that replaces this one), then every
// open connection is closed after its next reply, which says so: "Connection: close" over
// HTTP/1.1, a GOAWAY over HTTP/2 (net/http turns the header into one). A client learns from the
// reply that it must not reuse the connection, so no request of its is cut. Closing an idle
// HTTP/1.1 connection instead, as http.Server.Shutdown does, races with a client that is just
// sending on it: a POST lost in that race is not retried by the client, and AWS would count it
// as a failed request. Shutdown runs only after the drain, for connections that stayed idle.

// drainable marks each reply "Connection: close" once the proxy is draining.
func (p *Proxy) drainable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.draining.Load() {
			w.Header()["Connection"] = closeConn
		}
		h.ServeHTTP(w, r)
	})
}

var closeConn = []string{"close"}

// countConn counts the main listener's open connections (http.Server.ConnState).
func (p *Proxy) countConn(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		p.openConns.Add(1)
	case http.StateClosed, http.StateHijacked:
		p.openConns.Add(-1)
	}
}

// drain marks every later reply as the connection's last and waits, up to max (or ctx's end),
// for the open connections to close.
func (p *Proxy) drain(ctx context.Context, limit time.Duration) {
	p.draining.Store(true)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for p.openConns.Load() > 0 {
		select {
		case <-ctx.Done():
			p.log.Info("drain: closing the connections that stayed idle", "open", p.openConns.Load())
			return
		case <-t.C:
		}
	}
}

// OpenConnections is the number of connections open on the main listener.
func (p *Proxy) OpenConnections() int64 { return p.openConns.Load() }
