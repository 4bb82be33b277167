package cutover

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// NoteCreateKey is the proxy's hook for a CreateKey it forwarded: backend answered it. The id
// tells the migration which key to look at (copy it to the other side, copy it back before a
// rollback), never who may use it: the caller's principal is not recorded, and every right the
// migration writes is copied from the access list the other backend holds (copyGrants).
func (c *Controller) NoteCreateKey(keyID, backend string) {
	if validKeyID(keyID) != nil || slices.Contains(c.cfg.Select.Exclude, keyID) {
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
			if c.cfg.Select.Mode != SelectList {
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
	lv := slog.LevelInfo
	if st == StateFinalized {
		lv = slog.LevelDebug
	}
	c.log.Log(context.Background(), lv, "cutover: CreateKey noted", "key_id", keyID, "backend", backend, "state", st)
}

// truncate shortens an error text for the journal and status.
func truncate(s string) string { return Truncate(s) }

// Truncate shortens an error text to one line of at most 300 bytes, for the journal, status
// and its rendering.
func Truncate(s string) string {
	const max = 300
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// CopyCreated copies a key that a CreateKey just made (or found) on backend to the other side
// while a migration runs, within ctx. The proxy calls it before replying to AWS, so that the key
// is on both sides before it is first used. Failures are left to the catch-up before the switch
// and to the backfill loop after it.
func (c *Controller) CopyCreated(ctx context.Context, keyID, backend string) {
	c.copier.copyCreated(ctx, keyID, backend)
}

// Observe is the proxy's hook, called once per backend attempt: errName is that attempt's XKS
// error ("" on success) and fellBack is true for the retry sent to the fallback backend.
func (c *Controller) Observe(backend string, errName xks.ErrorName, latency time.Duration, fellBack bool) {
	if c.fleet != nil && !fellBack {
		c.fleet.view.count()
	}
	c.probation.observe(backend, errName, latency, fellBack)
}

// ObserveFellBack is the proxy's hook for a request the primary failed and the fallback then
// answered (with fallbackErr, "" on success): the primary's attempt is recorded like Observe's,
// except that a definite refusal the fallback answered the same way is the caller's (an id
// neither side holds), not the primary's. The fallback's own attempt goes to Observe.
func (c *Controller) ObserveFellBack(primary string, primaryErr xks.ErrorName, latency time.Duration, fallbackErr xks.ErrorName) {
	if c.fleet != nil {
		c.fleet.view.count()
	}
	c.probation.observeFellBack(primary, primaryErr, latency, fallbackErr)
}

// Recheck is the proxy's hook for a request the backend that served it refused definitely (no
// fallback tried): body is the request, not retained after the call returns. While switched, a
// refusal from the target is recorded in the probation window once the source has given its
// answer to the same request.
func (c *Controller) Recheck(backend string, op xks.Operation, createKey bool, keyID string, errName xks.ErrorName, latency time.Duration, body []byte) {
	c.probation.recheck(c.sides.src.name, backend, op, createKey, keyID, errName, latency, body)
}

// Mirror is the proxy's hook after a successful Decrypt on the source (shadowing).
func (c *Controller) Mirror(keyID string, reqBody, respBody []byte) {
	c.shadow.mirror(keyID, reqBody, respBody)
}
