package app

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
)

// The proxy and the controller meet here, once in each direction: the migration's request-path
// side as the proxy's Migration (seam), and the proxy as the Proxy the controller drives
// (proxyRoute, given to the controller's Run). The two packages do not import each other.

// seam is the migration as the proxy sees it: the controller's Traffic, and the admin API's and
// the fleet forwarding's handlers. They belong to the controller in service, which a reload or a
// new pair replaces (Live) without a new proxy: each call reads the current one.
type seam struct {
	cur atomic.Pointer[migrationParts]
	// relay, while the journal is released to the process replacing this one, is told each
	// CreateKey: the new process journals it (Live.Release).
	relay atomic.Pointer[func(keyID, backend string)]
}

// migrationParts are one controller's sides of the seam.
type migrationParts struct {
	t     *cutover.Traffic
	admin http.Handler // at proxy.AdminPath, behind the token
	peer  http.Handler // at proxy.PeerPath, without it; nil outside fleet mode (or without a secret)
}

func newSeam(p *migrationParts) *seam {
	s := &seam{}
	s.cur.Store(p)
	return s
}

var _ proxy.Migration = (*seam)(nil)

func (s *seam) p() *migrationParts { return s.cur.Load() }

func (s *seam) Active() bool                          { return s.p().t.Active() }
func (s *seam) GrantsPending(keyID, b string) bool    { return s.p().t.GrantsPending(keyID, b) }
func (s *seam) MayLack(keyID, backend string) bool    { return s.p().t.MayLack(keyID, backend) }
func (s *seam) MintOn() string                        { return s.p().t.MintOn() }
func (s *seam) Reserved(keyID string) bool            { return s.p().t.Reserved(keyID) }
func (s *seam) KeptOn(keyID string) string            { return s.p().t.KeptOn(keyID) }
func (s *seam) TrialOn(keyID, servedBy string) string { return s.p().t.TrialOn(keyID, servedBy) }
func (s *seam) CrossChecked(backend string, ok bool)  { s.p().t.CrossChecked(backend, ok) }
func (s *seam) FleetSize() int                        { return s.p().t.FleetSize() }
func (s *seam) Ready() bool                           { return s.p().t.Ready() }
func (s *seam) CreateKeyRefused(keyID, b, m string)   { s.p().t.NoteCreateKeyRefused(keyID, b, m) }

func (s *seam) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.p().admin.ServeHTTP(w, r) })
}

func (s *seam) PeerHandler() http.Handler {
	if s.p().peer == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := s.p().peer; h != nil {
			h.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	})
}

func (s *seam) Holds(ctx context.Context, keyID, backend string) (bool, error) {
	return s.p().t.Holds(ctx, keyID, backend)
}

func (s *seam) Observe(r proxy.Result) {
	s.p().t.ObserveRequest(r.Latency, r.InFlight)
	if r.CallerGone {
		return // the caller closed the request: no backend is judged by it
	}
	if r.FellBackFrom != "" {
		// The failed attempt counts against the backend that failed (probation must see B's
		// errors even when A's fallback answered), unless the fallback refused the same way (the
		// caller's mistake).
		s.p().t.ObserveFellBack(r.FellBackFrom, r.KeyID, r.PrimaryError, r.PrimaryLatency, r.ErrorName)
	}
	if r.Backend != "" { // "" when the proxy answered itself ("proxy" is only its metric label)
		// The backend is judged on its own attempt, not on the proxy's work around it (the
		// CreateKey checks and copy, a failed primary attempt before this one).
		s.p().t.Observe(r.Backend, r.ErrorName, r.BackendLatency, r.FellBackFrom != "")
	}
}

func (s *seam) Mirror(r proxy.Result, req, resp []byte) { s.p().t.Mirror(r.KeyID, req, resp) }

func (s *seam) Recheck(r proxy.Result, req []byte) {
	s.p().t.Recheck(r.Backend, r.Op, r.KMSOperation == "CreateKey", r.KeyID, r.ErrorName, r.BackendLatency, req)
}

func (s *seam) CreateKey(ctx context.Context, ev proxy.CreateKeyEvent) {
	t := s.p().t
	if r := s.relay.Load(); r != nil {
		(*r)(ev.KeyID, ev.Backend)
	}
	t.NoteCreateKey(ev.KeyID, ev.Backend)
	// While a migration runs, copy the new key to the other side before AWS hears back, so that
	// it is there whichever side serves its first Encrypt; the catch-up and the backfill retry
	// on failure.
	t.CopyCreated(ctx, ev.KeyID, ev.Backend)
}

// proxyRoute is the proxy as the controller drives it: its route table and its forwarding to one
// backend (cutover.Proxy).
type proxyRoute struct{ *proxy.Proxy }

var _ cutover.Proxy = proxyRoute{}

func (r proxyRoute) SetRoute(epoch uint64, primary, fallback string) error {
	return r.Proxy.SetRoute(proxy.Route{Epoch: epoch, Primary: primary, Fallback: fallback})
}
