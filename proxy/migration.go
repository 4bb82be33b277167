package proxy

import (
	"context"
	"net/http"
	"strings"

	"github.com/xksproxy/xksproxy/xks"
)

// Migration is the migration's side of the request path: the one seam between the proxy and the
// cutover controller (the app implements it over the controller; the proxy does not know the
// controller). The proxy asks it the rules a migration in progress sets (fast: called on the
// request path; Holds makes a KMIP call), tells it what each request did (each must be fast
// and must not block, except CreateKey), asks it the fleet's size and this replica's readiness,
// and serves its operator handlers. nil in Config: no migration (a single backend, or a fallback
// configured by hand).
type Migration interface {
	// Active reports whether a migration is in progress (from the start of the copy to the
	// end of a rollback or finalize).
	Active() bool
	// GrantsPending reports whether backend holds keyID as a copy the migration imported and
	// whose access rights it is still writing: for that moment a refusal there is not policy.
	GrantsPending(keyID, backend string) bool
	// MayLack reports whether backend may not hold keyID yet (the migration has not copied it
	// there, or it was created on the other side since).
	MayLack(keyID, backend string) bool
	// Holds reports whether backend holds keyID in any state, as seen by the keys' owner
	// (KMIP with the cutover's credential), never as the caller: a caller without a grant
	// sees "not found" for a key that exists.
	Holds(ctx context.Context, keyID, backend string) (bool, error)
	// MintOn names the backend where a CreateKey for an id no backend holds mints the key
	// ("" = the primary): the migration keeps every new key's rights ones a backend gave and
	// the other can express.
	MintOn() string
	// TrialOn names the other backend when it holds keyID during a migration (verified,
	// shadowing or switched) so that an Encrypt's CDIV trial decrypt runs there: live traffic
	// then proves the other side decrypts what this one encrypts. "" for none.
	TrialOn(keyID, servedBy string) string
	// CrossChecked is told the outcome of such a trial on the other backend (counted beside
	// the shadow figures; never the caller's failure).
	CrossChecked(backend string, ok bool)
	// KeptOn names the backend that serves keyID for good because the key cannot be exported
	// ("" for every other key): such a key is routed there alone, whatever the route. Called
	// on every request: fast, no allocation.
	KeptOn(keyID string) string
	// Reserved reports whether keyID names one of the migration's own objects on the
	// backends (its markers, its canaries): the proxy refuses XKS calls for them. Called on the
	// request path: fast for every id that does not start with "xksproxy-".
	Reserved(keyID string) bool

	// Observe is told every finished XKS API request (not /ping).
	Observe(r Result)
	// Mirror is told a successful Decrypt the primary answered without fallback; the buffers
	// are valid during the call only.
	Mirror(r Result, reqBody, respBody []byte)
	// Recheck is told, after the reply, a request the backend that served it refused
	// definitely (KeyNotFound, InvalidCiphertext, InvalidKeyUsage, InvalidState, AccessDenied)
	// with no fallback tried: reqBody is not retained after the call returns. The migration
	// asks the other backend for a second opinion before it counts the refusal against the
	// target.
	Recheck(r Result, reqBody []byte)
	// CreateKey is told a successful GetKeyMetadata with kmsOperation "CreateKey", BEFORE the
	// reply is written. It may block until ctx's deadline (the rest of the request's budget):
	// the migration copies the new key to the other side.
	CreateKey(ctx context.Context, ev CreateKeyEvent)
	// CreateKeyRefused is told a backend refused CreateKey because a non-XKS key holds the id
	// (Cosmian after 5.26); such a CreateKey is never retried on the fallback.
	CreateKeyRefused(keyID, backend, message string)

	// FleetSize is health's xksProxyFleetSize (the live replicas).
	FleetSize() int
	// Ready answers GET /ready: false until this replica knows where keys live.
	Ready() bool

	// AdminHandler serves the migration's operator API under /v1/cutover/ on the admin
	// listener, behind the token.
	AdminHandler() http.Handler
	// PeerHandler, when not nil, serves the calls other replicas forward under PeerPrefix +
	// "cutover/", WITHOUT the token check: it must authenticate every call itself.
	PeerHandler() http.Handler
}

// AdminPath and PeerPath are where a Migration's handlers are served on the admin listener.
const (
	AdminPath = "/v1/cutover/"
	PeerPath  = PeerPrefix + "cutover/"
)

// errOwnObject answers an XKS call for one of the proxy's own objects, as for a key that does
// not exist: the proxy answers itself, so no backend is counted for it.
var errOwnObject = xks.Errorf(xks.KeyNotFoundException, "key not found")

// ownObject reports whether keyID names one of the proxy's own objects: a health-check key or
// one of the migration's.
func (p *Proxy) ownObject(keyID string) bool {
	if p.ownIDs[keyID] {
		return true
	}
	mig := p.cfg.Migration
	return mig != nil && strings.HasPrefix(keyID, "xksproxy-") && mig.Reserved(keyID)
}

// CreateKeyEvent is what Migration.CreateKey learns of a successful CreateKey: which key, and
// which backend answered. Not who asked: a caller's principal is never a source of rights (the
// backend that minted the key granted what its policy grants, and a copy copies that).
type CreateKeyEvent struct {
	KeyID   string
	Backend string // the backend that answered
}

// fallbackWorthy says whether the primary's error may be retried on the fallback.
//   - Retryable errors (network, timeout, 429/500/503): always.
//   - KeyNotFound: only for an id the primary may still lack (the migration has not copied it
//     there). A key the primary held and lost (destroyed there) is not resurrected from the
//     other side. Without a Migration (a fallback configured by hand) nothing is known: it
//     falls back.
//   - InvalidKeyUsage, AccessDenied, InvalidState are policy — a missing or revoked grant, a
//     revoked or deactivated key — and are returned as they are, except for a key the
//     migration imported on the primary and whose grants it is still writing.
func (p *Proxy) fallbackWorthy(err error, keyID, primary string) bool {
	n := xks.NameOf(err)
	mig := p.cfg.Migration
	switch {
	case isCreateKeyRefusal(err):
		return false // the fallback would mint a second key under this id (keyinfo.go)
	case n.Retryable():
		return true
	case n == xks.KeyNotFoundException:
		return mig == nil || mig.MayLack(keyID, primary)
	case n == xks.InvalidKeyUsageException || n == xks.AccessDeniedException || n == xks.InvalidStateException:
		return mig != nil && mig.GrantsPending(keyID, primary)
	}
	return false
}

var errCreateUnknown = xks.Errorf(xks.InternalException, "cannot tell whether another key manager holds this key id; retry")

// createKeyTarget guards CreateKey during a migration. Cosmian answers CreateKey for an id it
// does not hold by minting a new key granted to the caller, and for an id it holds with 200.
// Whether each side holds the id is asked as the keys' owner (Migration.Holds, KMIP), never as
// the caller, who may have no right on an existing key and would be told "not found":
//   - only the fallback holds it: the CreateKey goes there (no second key under the id);
//   - the primary holds it: it goes to the primary, which answers without minting;
//   - neither: it goes to the primary, which mints it (or to the side the migration names,
//     Migration.MintOn);
//   - either side cannot be asked: refused with a retryable error, never a guess that could
//     leave two keys under one id.
//
// Whichever side it goes to, a failed CreateKey is never retried on the other (forward).
//
// Outside a migration (or without one wired in) CreateKey goes to the primary.
func (p *Proxy) createKeyTarget(ex *exchange, rt *routeTable) (*backend, *xks.Error) {
	mig := p.cfg.Migration
	if mig == nil || !mig.Active() {
		return rt.primary, nil
	}
	// Leave at least half the budget for the CreateKey itself. The fallback is asked at the same
	// time as the primary (CreateKey is rare, a goroutine is cheap): an id the migration has not
	// seen costs one round trip, not two. The migration answers an id it knows from its records.
	ctx, cancel := context.WithDeadline(ex.ctx, ex.start.Add(p.cfg.Limits.Budget/2))
	defer cancel() // also ends the fallback's check when the primary's answer is enough
	var onFallback chan heldAnswer
	if rt.fallback != nil {
		onFallback = make(chan heldAnswer, 1)
		go func() {
			ok, err := mig.Holds(ctx, ex.keyID, rt.fallback.name)
			onFallback <- heldAnswer{ok, err}
		}()
	}
	onPrimary, err := mig.Holds(ctx, ex.keyID, rt.primary.name)
	if err != nil {
		p.log.Warn("CreateKey during a migration: cannot tell whether the primary holds the key; refused",
			"keyId", ex.keyID, "backend", rt.primary.name, "error", err.Error())
		return nil, errCreateUnknown
	}
	if onPrimary || rt.fallback == nil {
		return rt.primary, nil
	}
	fb := <-onFallback
	if fb.err != nil {
		p.log.Warn("CreateKey during a migration: cannot tell whether the fallback holds the key; refused",
			"keyId", ex.keyID, "backend", rt.fallback.name, "error", fb.err.Error())
		return nil, errCreateUnknown
	}
	onFallbackHolds := fb.held
	if onFallbackHolds {
		return rt.fallback, nil
	}
	if mig.MintOn() == rt.fallback.name {
		return rt.fallback, nil // minted where its rights are expressible both ways (cutover.MintOn)
	}
	return rt.primary, nil
}

// heldAnswer is a Migration.Holds answer.
type heldAnswer struct {
	held bool
	err  error
}

// HealthKeyIDs lists the health-check keys' ids, one per backend, in configuration order.
func (p *Proxy) HealthKeyIDs() []string {
	out := make([]string, len(p.order))
	for i, b := range p.order {
		out[i] = b.healthKey
	}
	return out
}

// keptRoute is the route of a key kept on backend on: that backend alone, at the route's epoch.
// A backend the proxy does not know (a configuration changed since) leaves the route as it is.
func (p *Proxy) keptRoute(rt *routeTable, on string) *routeTable {
	b := p.backends[on]
	if b == nil || (rt.primary == b && rt.fallback == nil) {
		return rt
	}
	return &routeTable{Route: Route{Epoch: rt.Epoch, Primary: on}, primary: b}
}
