package cutover

import (
	"context"
	"fmt"
)

// What the proxy asks the controller on the request path (proxy.Migration; the app wires it).

// Active reports whether a migration is in progress.
func (c *Controller) Active() bool { return c.curState().inMigration() }

// GrantsPending reports whether backend holds keyID as a copy this controller imported and whose
// access rights (and revocation state) it has not finished writing.
func (c *Controller) GrantsPending(keyID, backend string) bool {
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
func (c *Controller) MintOn() string {
	if c.mintOnSource() && c.curState() == StateSwitched {
		return c.sides.src.name
	}
	return ""
}

// mintOnSource: the source may authorize per principal and the target may be of the
// [aws-xks-service] generation (either known, or not known: "both").
func (c *Controller) mintOnSource() bool {
	return mayServe(c.sides.src.acl, ACLARN) && mayServe(c.sides.tgt.acl, ACLService)
}

// mayServe reports whether a backend of generation acl (ACLBoth: not known) may be of gen.
func mayServe(acl, gen string) bool { return acl == gen || acl == ACLBoth }

// MayLack reports whether backend may not hold keyID yet. The target holds every key the copy
// reported copied and every key created on it; the source holds every key the migration found
// there and every key the source answered a CreateKey for. Any other id may be missing (created
// on the other side since, or not yet copied): a KeyNotFound for it is worth a fallback. A
// KeyNotFound for a key the backend is known to hold means it was destroyed (or its grant
// revoked, which Cosmian reports the same way) on that side, and is final.
func (c *Controller) MayLack(keyID, backend string) bool {
	switch backend {
	case c.sides.tgt.name:
		return c.book.mayLack(keyID, sideTarget)
	case c.sides.src.name:
		return c.book.mayLack(keyID, sideSource)
	}
	return true
}

// Holds reports whether backend holds keyID in any state, read as the keys' owner (KMIP).
func (c *Controller) Holds(ctx context.Context, keyID, name string) (bool, error) {
	var b *backend
	switch name {
	case c.sides.src.name:
		b = c.sides.src
	case c.sides.tgt.name:
		b = c.sides.tgt
	default:
		return false, fmt.Errorf("cutover: backend %q is neither source nor target", name)
	}
	if validKeyID(keyID) != nil {
		return false, fmt.Errorf("cutover: invalid key id")
	}
	a, err := c.sides.attrs(ctx, b, keyID, 1)
	if err != nil {
		return false, err
	}
	return a != nil, nil
}
