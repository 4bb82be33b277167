package cutover

import (
	"strings"
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
func ownNameNote(id, target string, conflict bool) string {
	if !strings.HasPrefix(id, ownPrefix) {
		return ""
	}
	if id == legacyHealthKeyID && conflict {
		return "earlier xksproxy releases made their health-check key under this id on every backend, each with its own material: if no AWS key uses this id, destroy it on " +
			target + " as the keys' owner, then plan again"
	}
	return "a key under a name like the proxy's own objects: migrated like any other"
}
