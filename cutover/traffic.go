package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// Traffic is the migration as the request path sees it: the rules a migration in progress sets
// for the proxy's fallback and CreateKey decisions (fast: called on the request path), what the
// proxy tells it of each request (observations for probation, mirrored Decrypts for the shadow,
// new keys to copy), and the fleet's size and readiness. It reads the controller's parts, and
// changes nothing but what they record. The app wires it to the proxy (proxy.Migration).
type Traffic struct {
	book      *ledger
	sides     *sides
	copier    *copier
	probe     *storageProbe
	probation *probation
	shadow    *shadower
	fleet     *member // nil: one process
	log       *slog.Logger
	m         *metrics
}

// Traffic returns the controller's request-path side.
func (c *Controller) Traffic() *Traffic {
	return &Traffic{book: c.book, sides: c.sides, copier: c.copier, probe: c.probe, probation: c.probation,
		shadow: c.shadow, fleet: c.fleet, log: c.log, m: c.m}
}

// NoteCreateKey is the proxy's hook for a CreateKey it forwarded: backend answered it. The id
// tells the migration which key to look at (copy it to the other side, copy it back before a
// rollback), never who may use it: the caller's principal is not recorded, and every right the
// migration writes is copied from the access list the other backend holds (copyGrants).
func (c *Traffic) NoteCreateKey(keyID, backend string) {
	if validKeyID(keyID) != nil || slices.Contains(c.sides.sel.Exclude, keyID) || c.book.keptOn(keyID) != "" {
		return
	}
	onSource := backend == c.sides.src.name
	st, noted := c.book.noteCreated(keyID, func(st State) (CreatedKey, bool) {
		n := CreatedKey{ID: keyID}
		switch st {
		case StateServing, StateRolledBack:
			return n, false // nothing to migrate: the source serves and keeps it
		case StateRollingBack:
			if onSource {
				return n, false // the source serves again and holds it
			}
			n.OnTarget = true // the second pass copies it back
		case StateFinalized:
			// The target serves alone and the migration is over: a rollback from here lists the
			// target's keys by the selection, so only an explicit list needs to remember the new
			// key; nothing is copied now and the operator is not told about every CreateKey.
			if c.sides.sel.Mode != SelectList {
				return n, false
			}
			n.OnTarget = true
		case StateSwitched:
			// Created on the target: copied back to the source in the background while switched,
			// and a rollback makes sure of it first. The source answered (the proxy found the key
			// there): copy it to the target.
			n.OnTarget = !onSource
		default:
			// Created on the source during the migration: catch-up copies it.
		}
		return n, true
	})
	if !noted {
		return
	}
	// Debug: AWS repeats CreateKey for keys that exist, and a line each would drown the log; the
	// copy, when there is one, logs its own result.
	c.log.Debug("cutover: CreateKey noted", "key_id", keyID, "backend", backend, "state", st)
}

// CopyCreated copies a key that a CreateKey just made (or found) on backend to the other side
// while a migration runs, within ctx, when the key must be there before AWS hears back
// (copyNow); otherwise it returns at once and the catch-up, the backfill (woken by the key's
// note), a finalize or a rollback copies it. Failures are left to them too.
func (c *Traffic) CopyCreated(ctx context.Context, keyID, backend string) {
	if !c.copyNow(backend) {
		return
	}
	c.copier.copyCreated(withClass(ctx, classLive), keyID, backend)
}

// copyNow reports whether a key a CreateKey made or found on backend must be on the other side
// before the reply: whether some replica could route a call for it to the other side alone, or a
// rollback complete without it, before the background work copies it. The rule:
//   - a selection that does not list the keys XKS creates (a tag other than aws-xks, an explicit
//     list): only the created-key notes know the key, and a note lives in memory until flushed
//     (a crash loses it): copied now;
//   - before the switch the key is on the source, which every route reaches until the switch,
//     whose catch-up copies it (and a KeyNotFound on the target falls back to the source): later;
//   - switched, made on the target, on probation: the source is the fallback that answers when
//     the target fails, which is what probation watches for; a key only the target holds has
//     none: now;
//   - switched, made on the target, probation passed: every replica routes to the target first
//     once all of them applied the switch, and a rollback lists the target before its last
//     pass: later; while some replica may still be on the epoch before (the source alone), now;
//   - switched, made on the source (a 5.26 source, MintOn): a finalize may route to the target
//     alone before the backfill copied it: now;
//   - rolling back: made on the source, which serves; or found on the target, which held it
//     since the switch, and which the rollback's last pass lists: later.
func (c *Traffic) copyNow(backend string) bool {
	if !c.sides.listable() {
		return true
	}
	if c.book.state() != StateSwitched {
		return false
	}
	if backend != c.sides.tgt.name {
		return true
	}
	h := c.book.header()
	if !h.ProbationPassed {
		return true
	}
	return c.fleet != nil && !c.fleet.settled(h.Epoch)
}

// Observe is the proxy's hook, called once per backend attempt: errName is that attempt's XKS
// error ("" on success) and fellBack is true for the retry sent to the fallback backend.
func (c *Traffic) Observe(backend string, errName xks.ErrorName, latency time.Duration, fellBack bool) {
	if c.fleet != nil && !fellBack {
		c.fleet.view.count()
	}
	c.observeAttempt(backend, errName, latency)
	c.probation.observe(backend, errName, latency, fellBack)
}

// ObserveRequest is the proxy's hook for every finished XKS request: its whole latency and the
// requests in flight when it was admitted, the live signals the pace backs off on.
func (c *Traffic) ObserveRequest(latency time.Duration, inFlight int) {
	c.sides.pace.sig.request(latency, inFlight)
}

// observeAttempt gives the pace a backend attempt's own time and whether the backend was
// overloaded or out of reach.
func (c *Traffic) observeAttempt(backend string, errName xks.ErrorName, latency time.Duration) {
	switch backend {
	case c.sides.src.name:
		c.sides.pace.sig.live[0].add(latency, overload(errName))
	case c.sides.tgt.name:
		c.sides.pace.sig.live[1].add(latency, overload(errName))
	}
}

// ObserveFellBack is the proxy's hook for a request for keyID the primary failed and the
// fallback then answered (with fallbackErr, "" on success): the primary's attempt is recorded
// like Observe's, except that a definite refusal the fallback answered the same way is the
// caller's (an id neither side holds), and a KeyNotFound for a key created during the migration
// is the migration's (not copied there yet), not the primary's. The fallback's own attempt goes
// to Observe.
func (c *Traffic) ObserveFellBack(primary, keyID string, primaryErr xks.ErrorName, latency time.Duration, fallbackErr xks.ErrorName) {
	if c.fleet != nil {
		c.fleet.view.count()
	}
	c.observeAttempt(primary, primaryErr, latency)
	c.probation.observeFellBack(primary, keyID, primaryErr, latency, fallbackErr)
}

// Recheck is the proxy's hook for a request the backend that served it refused definitely (no
// fallback tried): body is the request, not retained after the call returns. While switched, a
// refusal from the target is recorded in the probation window once the source has given its
// answer to the same request.
func (c *Traffic) Recheck(backend string, op xks.Operation, createKey bool, keyID string, errName xks.ErrorName, latency time.Duration, body []byte) {
	c.probation.recheck(c.sides.src.name, backend, op, createKey, keyID, errName, latency, body)
}

// Mirror is the proxy's hook after a successful Decrypt on the source (shadowing).
func (c *Traffic) Mirror(keyID string, reqBody, respBody []byte) {
	c.shadow.mirror(keyID, reqBody, respBody)
}

// What the proxy asks the controller on the request path (proxy.Migration; the app wires it).

// Active reports whether a migration is in progress.
func (c *Traffic) Active() bool { return c.book.state().inMigration() }

// GrantsPending reports whether backend holds keyID as a copy this controller imported and whose
// access rights (and revocation state) it has not finished writing.
func (c *Traffic) GrantsPending(keyID, backend string) bool {
	return c.book.marks.grantsPending(keyID, backend)
}

// MintOn names the backend where a CreateKey for an id neither side holds must mint the key while
// a migration can still roll back ("" = the serving side). From a 5.26 source (rights per
// principal) to a newer target ([aws-xks-service]): a key minted on the target is granted only
// to [aws-xks-service], which the source can express only as a grant to every user, so a
// rollback could not carry it back as the owner's policy; minted on the source, Cosmian 5.26
// grants the principal that minted it there, and the copy gives the target that grant plus its
// own [aws-xks-service] one. Every right stays one a backend gave. Once finalized the target
// mints (the source may be retired); a rollback from there needs grant_everyone_for_service_keys
// for those keys.
func (c *Traffic) MintOn() string {
	if c.sides.mintOnSource() && c.book.state() == StateSwitched {
		return c.sides.src.name
	}
	return ""
}

// mayServe reports whether a backend of generation acl (ACLBoth: not known) may be of gen.
func mayServe(acl, gen string) bool { return acl == gen || acl == ACLBoth }

// MayLack reports whether backend may not hold keyID yet. The target holds every key the copy
// reported copied and every key created on it; the source holds every key the migration found
// there and every key the source answered a CreateKey for. Any other id may be missing (created
// on the other side since, or not yet copied): a KeyNotFound for it is worth a fallback. A
// KeyNotFound for a key the backend is known to hold means it was destroyed (or its grant
// revoked, which Cosmian reports the same way) on that side, and is final.
func (c *Traffic) MayLack(keyID, backend string) bool {
	switch backend {
	case c.sides.tgt.name:
		return c.book.mayLack(keyID, sideTarget)
	case c.sides.src.name:
		return c.book.mayLack(keyID, sideSource)
	}
	return true
}

// Holds reports whether backend holds keyID in any state: from the migration's own records for
// an id it has seen (a copied key, a key created during the migration; no backend call), else
// read as the keys' owner (KMIP, one attempt within ctx). Only a CreateKey asks (proxy.Migration).
func (c *Traffic) Holds(ctx context.Context, keyID, name string) (bool, error) {
	b := c.sides.byName(name)
	if b == nil {
		return false, fmt.Errorf("cutover: backend %q is neither source nor target", name)
	}
	if validKeyID(keyID) != nil {
		return false, fmt.Errorf("cutover: invalid key id")
	}
	s := sideSource
	if b == c.sides.tgt {
		s = sideTarget
	}
	if c.book.holds(keyID, s) {
		c.sides.checks.note("records")
		c.m.createKeyChecks.WithLabelValues("records").Inc()
		return true, nil
	}
	a, err := c.sides.attrs(withClass(ctx, classLive), b, keyID, 1)
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		// The caller no longer needs the answer (the other side's was enough): not a failure.
	case err != nil:
		c.sides.checks.note("failed")
		c.m.createKeyChecks.WithLabelValues("failed").Inc()
	default:
		c.sides.checks.note("backend")
		c.m.createKeyChecks.WithLabelValues("backend").Inc()
	}
	if err != nil {
		return false, err
	}
	return a != nil, nil
}

// NoteCreateKeyRefused is the proxy's hook for cosmian.IsXKSCreateKeyRefusal: the key id is recorded as a
// conflict, named in status and blocking the switch, because the backend holds a different,
// non-XKS key under the id AWS asked for. The proxy does not retry such a CreateKey on the
// other backend (that would mint a second key under one id).
func (c *Traffic) NoteCreateKeyRefused(keyID, backend, reason string) {
	if validKeyID(keyID) != nil {
		return
	}
	c.log.Warn("cutover: CreateKey refused: a non-XKS key holds this id", "key_id", keyID, "backend", backend)
	switch c.book.state() {
	case StateServing, StateRolledBack, StateFinalized:
		return // no migration to block; the log line and AWS's error say it
	}
	c.book.setKey(keyID, KeyProgress{Phase: PhaseCopy, Result: ResultConflict,
		Error: truncate("CreateKey refused on " + backend + ": " + reason)})
}

// TrialOn names the backend other than servedBy that runs an Encrypt's CDIV trial decrypt
// while a migration holds keyID on both sides (verified, shadowing or switched: every key was
// copied and verified), "" otherwise: live traffic then proves the target decrypts what the
// source encrypts, and the reverse.
func (c *Traffic) TrialOn(keyID, servedBy string) string {
	switch c.book.state() {
	case StateVerified, StateShadowing, StateSwitched:
	default:
		return ""
	}
	var other *backend
	var s side
	switch servedBy {
	case c.sides.src.name:
		other, s = c.sides.tgt, sideTarget
	case c.sides.tgt.name:
		other, s = c.sides.src, sideSource
	default:
		return ""
	}
	if c.book.keptOn(keyID) != "" || c.book.mayLack(keyID, s) || c.book.marks.grantsPending(keyID, other.name) {
		return ""
	}
	return other.name
}

// CrossChecked counts a CDIV trial decrypt run on the other backend, beside the shadow figures.
func (c *Traffic) CrossChecked(backend string, ok bool) { c.shadow.crossChecked(backend, ok) }

// KeptOn names the backend that serves keyID for good because it cannot be exported ("" for
// any other key): the proxy routes it there alone.
func (c *Traffic) KeptOn(keyID string) string { return c.book.keptOn(keyID) }

// Reserved reports whether keyID names one of the proxy's own objects on the backends (this key
// store's marker, a canary alive now): the proxy answers an XKS call for it KeyNotFoundException
// itself. Called on the request path: anything without the "xksproxy-" prefix is answered
// without a lock.
func (c *Traffic) Reserved(keyID string) bool {
	if !strings.HasPrefix(keyID, ownPrefix) {
		return false
	}
	if strings.HasPrefix(keyID, markerIDPrefix) {
		if ks := c.keyStore(); ks != "" && keyID == markerID(ks) {
			return true
		}
	}
	return c.probe.reserved(keyID)
}

// keyStore is the key store identity ("" before an earlier release's journal is upgraded).
func (c *Traffic) keyStore() string { return c.book.header().KeyStore }

// FleetSize is the number of live members (1 without a fleet): health's xksProxyFleetSize.
func (c *Traffic) FleetSize() int {
	if c.fleet == nil {
		return 1
	}
	return c.fleet.view.size()
}

// Ready reports whether this replica may serve: in fleet mode, once it applied an epoch (from
// the store or its local copy). Without a fleet, always.
func (c *Traffic) Ready() bool { return c.fleet == nil || c.fleet.ready() }
