package cutover

import (
	"context"
	"time"
)

// backfill keeps the source, now the fallback, complete while switched: keys AWS creates on the
// target are copied back to the source as soon as they are noticed (the ledger wakes it), and
// keys the source answered a CreateKey for are copied to the target. A request for such a key can
// then fall back to the source when the target fails, and a rollback has less to copy.
type backfill struct{ *copier }

// loop runs until ctx ends or the state is no longer switched. Its copies go ahead of the rest
// of the background work and through a pause (within the budget): they come as fast as AWS
// creates keys, and they keep the fallback complete.
func (c backfill) loop(ctx context.Context) {
	ctx = withClass(ctx, classUrgent)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.book.createdSignal():
		case <-t.C:
		}
		if c.book.state() != StateSwitched {
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
			release, err := c.pace.slot(ctx)
			if err != nil {
				return
			}
			// copyKey even when the key is already on jb.to: a copy cut short after its import
			// (at CreateKey time, or a pass before) left it there without its grants, and
			// copyKey, given an identical key, only completes the grants.
			res, err := c.copyKey(ctx, jb.from, jb.to, jb.id, controlAttempts)
			release()
			if ctx.Err() != nil {
				return // this replica stopped driving or is stopping; the next driver checks again
			}
			if err != nil {
				c.log.Warn("cutover: copying a key created during the switch failed; will retry",
					"key_id", jb.id, "from", jb.from.name, "to", jb.to.name, "err", truncate(err.Error()))
				continue
			}
			if res == ResultOK {
				c.log.Info("cutover: key created during the switch copied", "key_id", jb.id, "from", jb.from.name, "to", jb.to.name)
			}
			c.book.marks.markCompleted(jb.id)
		}
	}
}
