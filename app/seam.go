package app

import (
	"context"
	"net/http"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
)

// The proxy and the controller meet here, once in each direction: the migration's request-path
// side as the proxy's Migration (seam), and the proxy as the Proxy the controller drives
// (proxyRoute, given to the controller's Run). The two packages do not import each other.

// seam is the migration as the proxy sees it: the controller's Traffic, and the admin API's and
// the fleet forwarding's handlers.
type seam struct {
	t     *cutover.Traffic
	admin http.Handler // at proxy.AdminPath, behind the token
	peer  http.Handler // at proxy.PeerPath, without it; nil outside fleet mode (or without a secret)
}

var _ proxy.Migration = (*seam)(nil)

func (s *seam) Active() bool                        { return s.t.Active() }
func (s *seam) GrantsPending(keyID, b string) bool  { return s.t.GrantsPending(keyID, b) }
func (s *seam) MayLack(keyID, backend string) bool  { return s.t.MayLack(keyID, backend) }
func (s *seam) MintOn() string                      { return s.t.MintOn() }
func (s *seam) Reserved(keyID string) bool          { return s.t.Reserved(keyID) }
func (s *seam) FleetSize() int                      { return s.t.FleetSize() }
func (s *seam) Ready() bool                         { return s.t.Ready() }
func (s *seam) AdminHandler() http.Handler          { return s.admin }
func (s *seam) PeerHandler() http.Handler           { return s.peer }
func (s *seam) CreateKeyRefused(keyID, b, m string) { s.t.NoteCreateKeyRefused(keyID, b, m) }

func (s *seam) Holds(ctx context.Context, keyID, backend string) (bool, error) {
	return s.t.Holds(ctx, keyID, backend)
}

func (s *seam) Observe(r proxy.Result) {
	s.t.ObserveRequest(r.Latency, r.InFlight)
	if r.FellBackFrom != "" {
		// The failed attempt counts against the backend that failed (probation must see B's
		// errors even when A's fallback answered), unless the fallback refused the same way (the
		// caller's mistake).
		s.t.ObserveFellBack(r.FellBackFrom, r.KeyID, r.PrimaryError, r.PrimaryLatency, r.ErrorName)
	}
	if r.Backend != "" { // "" when the proxy answered itself ("proxy" is only its metric label)
		// The backend is judged on its own attempt, not on the proxy's work around it (the
		// CreateKey checks and copy, a failed primary attempt before this one).
		s.t.Observe(r.Backend, r.ErrorName, r.BackendLatency, r.FellBackFrom != "")
	}
}

func (s *seam) Mirror(r proxy.Result, req, resp []byte) { s.t.Mirror(r.KeyID, req, resp) }

func (s *seam) Recheck(r proxy.Result, req []byte) {
	s.t.Recheck(r.Backend, r.Op, r.KMSOperation == "CreateKey", r.KeyID, r.ErrorName, r.BackendLatency, req)
}

func (s *seam) CreateKey(ctx context.Context, ev proxy.CreateKeyEvent) {
	s.t.NoteCreateKey(ev.KeyID, ev.Backend)
	// While a migration runs, copy the new key to the other side before AWS hears back, so that
	// it is there whichever side serves its first Encrypt; the catch-up and the backfill retry
	// on failure.
	s.t.CopyCreated(ctx, ev.KeyID, ev.Backend)
}

// proxyRoute is the proxy as the controller drives it: its route table and its forwarding to one
// backend (cutover.Proxy).
type proxyRoute struct{ *proxy.Proxy }

var _ cutover.Proxy = proxyRoute{}

func (r proxyRoute) SetRoute(epoch uint64, primary, fallback string) error {
	return r.Proxy.SetRoute(proxy.Route{Epoch: epoch, Primary: primary, Fallback: fallback})
}
