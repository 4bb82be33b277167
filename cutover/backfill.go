package cutover

import (
	"context"
	"time"
)

// backfillLoop keeps the source, now the fallback, complete while switched: keys AWS creates on
// the target are copied back to the source as soon as they are noticed. A request for such a key
// can then fall back to the source when the target fails, and a rollback has less to copy.
func (c *Controller) backfillLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.book.createdSignal():
		case <-t.C:
		}
		if c.curState() != StateSwitched {
			return
		}
		type job struct {
			id       string
			from, to *backend
		}
		during, onTarget := c.book.createdKeys()
		var jobs []job
		for _, id := range onTarget {
			if !c.book.marks.isCompleted(id) {
				jobs = append(jobs, job{id, c.tgt, c.src})
			}
		}
		// Keys the source answered a CreateKey for after the switch (see the proxy's guard):
		// the target, which serves, must hold them too.
		for _, id := range during {
			if !c.book.marks.isCompleted(id) {
				jobs = append(jobs, job{id, c.src, c.tgt})
			}
		}
		for _, jb := range jobs {
			if ctx.Err() != nil {
				return
			}
			// copyKey even when the key is already on jb.to: a copy cut short after its import
			// (at CreateKey time, or a pass before) left it there without its grants, and
			// copyKey, given an identical key, only completes the grants.
			res, err := c.copyKey(ctx, jb.from, jb.to, jb.id, controlAttempts)
			if err != nil {
				c.log.Warn("cutover: copying a key created during the switch failed; will retry",
					"key_id", jb.id, "from", jb.from.name, "to", jb.to.name, "err", err)
				continue
			}
			if res == ResultOK {
				c.log.Info("cutover: key created during the switch copied", "key_id", jb.id, "from", jb.from.name, "to", jb.to.name)
			}
			c.book.marks.markCompleted(jb.id)
		}
	}
}

// CopyCreated copies a key that a CreateKey just made (or found) on backend to the other side
// while a migration runs, within ctx. The proxy calls it before replying to AWS, so that the key
// is on both sides before it is first used. Failures are left to the catch-up before the switch
// and to the backfill loop after it.
func (c *Controller) CopyCreated(ctx context.Context, keyID, backend string) {
	// Not only once switched: a key made on the source after the switch's last catch-up pass,
	// and first used after the switch, would otherwise reach the target before the backfill
	// copied it (a KeyNotFound there that falls back, but that probation counts against the
	// target). In fleet mode some member may serve the other side at any moment anyway (the
	// epochs reach members at different times).
	if !c.curState().inMigration() {
		return
	}
	// AWS repeats CreateKey (GetKeyMetadata with kmsOperation CreateKey) for keys that exist: a
	// key this process copied to completion, or one the migration copied, is on both sides, and
	// copying it again on every repeat would only load both backends while the migration runs.
	if c.book.marks.isCompleted(keyID) {
		return
	}
	if k, ok := c.book.key(keyID); copied(k, ok) {
		return
	}
	from, to := c.tgt, c.src
	if backend == c.src.name {
		from, to = c.src, c.tgt
	}
	// No "already there" shortcut: a key found on to may be a copy cut short before its
	// grants; copyKey completes those on an identical key and refuses a different one.
	if _, err := c.copyKey(ctx, from, to, keyID, 1); err != nil {
		c.log.Warn("cutover: copying a new key at CreateKey time failed; the backfill will retry",
			"key_id", keyID, "from", from.name, "to", to.name, "err", err)
		return
	}
	c.book.marks.markCompleted(keyID)
	c.log.Info("cutover: new key copied at CreateKey time", "key_id", keyID, "from", from.name, "to", to.name)
}
