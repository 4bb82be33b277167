package proxy

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
)

// rules are the request-path questions a Migration answers (emuMigration is one).
type rules interface {
	Active() bool
	GrantsPending(keyID, backend string) bool
	MayLack(keyID, backend string) bool
	Holds(ctx context.Context, keyID, backend string) (bool, error)
	MintOn() string
	Reserved(keyID string) bool
}

// hooks is a Migration for tests: rules answers the rules (nil: those of no migration in
// progress), and each observation goes to the function set for it.
type hooks struct {
	rules              rules
	onResult           func(Result)
	mirror             func(r Result, req, resp []byte)
	recheck            func(r Result, req []byte)
	onCreateKey        func(ctx context.Context, ev CreateKeyEvent)
	onCreateKeyRefused func(keyID, backend, message string)
	ready              func() bool
	crossChecked       func(backend string, ok bool)
	admin, peer        http.Handler
}

var _ Migration = (*hooks)(nil)

func (h *hooks) Active() bool { return h.rules != nil && h.rules.Active() }
func (h *hooks) GrantsPending(id, b string) bool {
	return h.rules != nil && h.rules.GrantsPending(id, b)
}
func (h *hooks) MayLack(id, b string) bool { return h.rules == nil || h.rules.MayLack(id, b) }
func (h *hooks) Holds(ctx context.Context, id, b string) (bool, error) {
	if h.rules == nil {
		return false, nil
	}
	return h.rules.Holds(ctx, id, b)
}
func (h *hooks) MintOn() string {
	if h.rules == nil {
		return ""
	}
	return h.rules.MintOn()
}
func (h *hooks) Reserved(id string) bool { return h.rules != nil && h.rules.Reserved(id) }
func (h *hooks) TrialOn(id, servedBy string) string {
	if k, ok := h.rules.(interface{ TrialOn(string, string) string }); ok {
		return k.TrialOn(id, servedBy)
	}
	return ""
}
func (h *hooks) CrossChecked(backend string, ok bool) {
	if h.crossChecked != nil {
		h.crossChecked(backend, ok)
	}
}
func (h *hooks) KeptOn(id string) string {
	if k, ok := h.rules.(interface{ KeptOn(string) string }); ok {
		return k.KeptOn(id)
	}
	return ""
}
func (h *hooks) Observe(r Result) {
	if h.onResult != nil {
		h.onResult(r)
	}
}
func (h *hooks) Mirror(r Result, req, resp []byte) {
	if h.mirror != nil {
		h.mirror(r, req, resp)
	}
}
func (h *hooks) Recheck(r Result, req []byte) {
	if h.recheck != nil {
		h.recheck(r, req)
	}
}
func (h *hooks) CreateKey(ctx context.Context, ev CreateKeyEvent) {
	if h.onCreateKey != nil {
		h.onCreateKey(ctx, ev)
	}
}
func (h *hooks) CreateKeyRefused(k, b, m string) {
	if h.onCreateKeyRefused != nil {
		h.onCreateKeyRefused(k, b, m)
	}
}
func (h *hooks) FleetSize() int { return 1 }
func (h *hooks) Ready() bool    { return h.ready == nil || h.ready() }
func (h *hooks) AdminHandler() http.Handler {
	if h.admin == nil {
		return http.NotFoundHandler()
	}
	return h.admin
}
func (h *hooks) PeerHandler() http.Handler { return h.peer }

// askedRules is a migration in progress whose Holds answers are scripted per backend: each call
// waits for release (closed: answer at once) and is counted.
type askedRules struct {
	held    map[string]bool
	release map[string]chan struct{}
	asked   sync.Map // backend → *atomic.Int64
}

func (r *askedRules) Active() bool                   { return true }
func (r *askedRules) GrantsPending(_, _ string) bool { return false }
func (r *askedRules) MayLack(_, _ string) bool       { return true }
func (r *askedRules) MintOn() string                 { return "" }
func (r *askedRules) Reserved(string) bool           { return false }
func (r *askedRules) Holds(ctx context.Context, _, b string) (bool, error) {
	n, _ := r.asked.LoadOrStore(b, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	select {
	case <-r.release[b]:
		return r.held[b], nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
