package cutover

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// The proxy's own objects on the backends — the cutover markers and the shared-storage
// canaries — live in the callers' key namespace, so they are named by what no caller can
// produce: the key store's random identity, or 96 random bits, behind the "xksproxy-" prefix.
// The proxy refuses every XKS call for one of them (Reserved, KeyNotFoundException, counted
// against no backend), and the migration tells them from customer keys by their owner-only tags,
// never by a name a caller could choose: a customer key named like one is migrated like any
// other.

// ownPrefix starts the id of every object of the proxy's own.
const ownPrefix = "xksproxy-"

// legacyHealthKeyID is the fixed id earlier releases gave their health-check key on every
// backend (proxy.LegacyHealthTestKeyID): two different keys under one id once both backends
// served health checks, which is a conflict for the migration like any other.
const legacyHealthKeyID = "xksproxy-health-check"

// ownNameNote is what plan and a copy's conflict say of a customer key whose id looks like the
// proxy's own objects: it is migrated like any other (never skipped, never replaced).
func (c *Controller) ownNameNote(id string, conflict bool) string {
	if !strings.HasPrefix(id, ownPrefix) {
		return ""
	}
	if id == legacyHealthKeyID && conflict {
		return "earlier xksproxy releases made their health-check key under this id on every backend, each with its own material: if no AWS key uses this id, destroy it on " +
			c.tgt.name + " as the keys' owner, then plan again"
	}
	return "a key under a name like the proxy's own objects: migrated like any other"
}

// reservedIDs are the ids of the canaries alive right now.
type reservedIDs struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (c *Controller) reserve(id string, on bool) {
	r := &c.reserved
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	if on {
		r.ids[id] = true
	} else {
		delete(r.ids, id)
	}
}

// Reserved reports whether keyID names one of the proxy's own objects on the backends (this key
// store's marker, a canary alive now): the proxy answers an XKS call for it KeyNotFoundException
// itself. Called on the request path: anything without the "xksproxy-" prefix is answered
// without a lock.
func (c *Controller) Reserved(keyID string) bool {
	if !strings.HasPrefix(keyID, ownPrefix) {
		return false
	}
	if strings.HasPrefix(keyID, markerIDPrefix) {
		if ks := c.keyStore(); ks != "" && keyID == markerID(ks) {
			return true
		}
	}
	c.reserved.mu.Lock()
	defer c.reserved.mu.Unlock()
	return c.reserved.ids[keyID]
}

// keyStore is the key store identity ("" before an earlier release's journal is upgraded).
func (c *Controller) keyStore() string { return c.book.header().KeyStore }

// dropOwn removes, from ids listed on b, the proxy's own objects: only ids with the proxy's
// prefix are read (their tags say), so a customer key named like one stays.
func (c *Controller) dropOwn(ctx context.Context, b *backend, ids []string, attempts int) ([]string, error) {
	var own []string
	for _, id := range ids {
		if !strings.HasPrefix(id, ownPrefix) {
			continue
		}
		a, err := c.attrs(ctx, b, id, attempts)
		if err != nil {
			return nil, err
		}
		if a != nil && IsOwnObject(a.Tags) {
			own = append(own, id)
		}
	}
	if len(own) == 0 {
		return ids, nil
	}
	return slices.DeleteFunc(ids, func(id string) bool { return slices.Contains(own, id) }), nil
}
