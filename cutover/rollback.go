package cutover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Rollback returns traffic to the source from any migration state. After a
// switch it first copies back keys created on the target (and state and
// grant changes); if that fails it refuses and names the keys.
func (c *Controller) Rollback(ctx context.Context, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "manual rollback"
	}
	if len(reason) > 500 {
		reason = reason[:500]
	}
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if err := c.fleet.mustDrive(); err != nil {
		return err
	}
	c.log.Info("cutover: rollback asked", "reason", reason)
	err = c.withRunnerStopped(held, func() error { return c.rollback(ctx, held, reason, "manual") })
	if err == nil {
		c.settle(ctx)
	}
	return err
}

func (c *Controller) rollback(ctx context.Context, held ctlHeld, reason, category string) error {
	ctx = withClass(ctx, classUrgent) // within the pace, never paused
	st := c.book.state()
	if st == StateServing || st == StateRolledBack {
		return fmt.Errorf("%w: nothing to roll back (state %s, %s serves)", ErrWrongState, st, c.sides.src.name)
	}
	if st == StateSwitched || st == StateFinalized {
		// First pass while the target still serves: everything it gained so far.
		if err := (restorer{c.copier}).copyBack(ctx); err != nil {
			c.book.setError(truncate("rollback refused: " + err.Error()))
			return fmt.Errorf("%w: rollback: %v", ErrRefused, err)
		}
		if err := c.barrier(ctx); err != nil {
			return err
		}
		if err := c.transition(held, evRollback, func(h *Header) {
			h.Reason = reason
			h.LastError = ""
		}); err != nil {
			return err
		}
		st = StateRollingBack
	}
	if st == StateRollingBack {
		// Second pass with the source serving and the target as fallback: keys created on the
		// target while the first pass ran. Until it succeeds they stay reachable through the
		// fallback, and Rollback can be called again. It starts once every replica routes to the
		// source first and one request budget has passed: a CreateKey sent to the target under
		// the switched route has minted its key by then, and the pass (which lists the target)
		// sees it, whether or not its copy or its note reached this process.
		if err := c.barrier(ctx); err != nil {
			return err
		}
		t := time.NewTimer(c.cfg.Pace.RequestBudget)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if err := (restorer{c.copier}).copyBack(ctx); err != nil {
			c.book.setError(truncate("rolling back: the target stays the fallback until its remaining keys are copied back: " + err.Error()))
			return fmt.Errorf("%w: rollback: %v", ErrRefused, err)
		}
	}
	if err := c.barrier(ctx); err != nil {
		return err
	}
	ev := evRollback
	if st == StateRollingBack {
		ev = evRolledBack
	}
	if err := c.transition(held, ev, func(h *Header) {
		h.Reason = reason
		h.LastError = ""
		// The source serves every key again: a key kept there needs no route of its own.
		h.Kept = slices.DeleteFunc(slices.Clone(h.Kept), func(k KeptKey) bool { return k.On == h.Source })
	}); err != nil {
		return err
	}
	c.m.rollbacks.WithLabelValues(category).Inc()
	c.rights.reset() // rolled back: no pass or rollback reads them again
	return nil
}

// restorer is rollback's copy back: what the target gained while it served goes to the source
// (keys, revocations, rights changes), so that a rollback never strands a key.
type restorer struct{ *copier }

// copyBack makes the source hold everything the target gained since the
// switch: keys created there, revocations and access-right changes.
func (c restorer) copyBack(ctx context.Context) error {
	srcIDs, err := c.list(ctx, c.src, controlAttempts)
	if err != nil {
		return fmt.Errorf("source %s unreachable: %v", c.src.name, err)
	}
	inSrc := map[string]bool{}
	for _, id := range srcIDs {
		inSrc[id] = true
	}
	tgtIDs, terr := c.list(ctx, c.tgt, controlAttempts)
	cand := map[string]bool{}
	_, onTarget := c.book.createdKeys()
	for _, id := range onTarget {
		cand[id] = true
	}
	migrated := c.book.keyIDs(isCopied)
	if terr == nil && c.sel.Mode != SelectList {
		for _, id := range tgtIDs {
			if !inSrc[id] {
				cand[id] = true
			}
		}
	}
	ids := make([]string, 0, len(cand))
	for id := range cand {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	var mu sync.Mutex
	var failed, split []KeyFailure
	fail := func(id string, err error) {
		mu.Lock()
		var se *splitKeyError
		if errors.As(err, &se) {
			split = append(split, KeyFailure{KeyID: id, Result: ResultConflict, Reason: truncate(err.Error())})
		} else {
			failed = append(failed, KeyFailure{KeyID: id, Result: ResultError, Reason: truncate(err.Error())})
		}
		mu.Unlock()
	}
	err = c.forEach(ctx, ids, func(ctx context.Context, id string) error {
		sa, err := c.attrs(ctx, c.src, id, controlAttempts)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			fail(id, err)
			return nil
		}
		if sa != nil && (terr != nil || c.book.marks.isCompleted(id)) {
			return nil // there, and complete, or the target cannot be read to complete it (warned below)
		}
		if terr != nil {
			fail(id, fmt.Errorf("created on %s after the switch and %s cannot be read: %v", c.tgt.name, c.tgt.name, terr))
			return nil
		}
		if _, err := c.copyKey(ctx, c.tgt, c.src, id, controlAttempts); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fail(id, fmt.Errorf("copy back to %s: %v", c.src.name, err))
			return nil
		}
		// Also for a key already on the source: a copy cut short after its import left it
		// without its grants, which copyKey completes (it only adds, from the target's list).
		if sa == nil {
			c.log.Info("cutover: copied key created on the target back to the source", "key_id", id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if terr != nil {
		c.log.Warn("cutover: target unreachable during rollback; state and access-right changes made on it since the switch cannot be copied back",
			"target", c.tgt.name, "err", truncate(terr.Error()))
	} else {
		// Every id on both sides: the migrated keys, those copied back, and any other the two
		// selections share (a key made on each side under one id is found here).
		both := append(migrated, ids...)
		for _, id := range tgtIDs {
			if inSrc[id] {
				both = append(both, id)
			}
		}
		sort.Strings(both)
		both = slices.Compact(both)
		err = c.forEach(ctx, both, func(ctx context.Context, id string) error {
			if err := c.syncBack(ctx, id); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				fail(id, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	var errs []error
	if len(split) > 0 {
		sort.Slice(split, func(i, j int) bool { return split[i].KeyID < split[j].KeyID })
		errs = append(errs, errors.New(summarize("hold different key material on "+c.src.name+" and "+c.tgt.name+" under one id (neither is overwritten; data encrypted under one cannot be decrypted with the other)", split)))
	}
	if len(failed) > 0 {
		sort.Slice(failed, func(i, j int) bool { return failed[i].KeyID < failed[j].KeyID })
		errs = append(errs, errors.New(summarize("could not be copied back to "+c.src.name+" (they would be stranded on "+c.tgt.name+")", failed)))
	}
	return errors.Join(errs...)
}

// splitKeyError: an id whose material differs between the two sides.
type splitKeyError struct{ id string }

func (e *splitKeyError) Error() string { return "different key material under id " + e.id }

// syncBack checks that id is the same key on both sides, then carries the rights changes made
// on the target since they were last carried (rightsync.go): the same changes, never a
// replacement of the source's list, so a right is removed on the source only where it was
// removed on the target.
func (c restorer) syncBack(ctx context.Context, id string) error {
	if c.probe.isShared() {
		return nil // one database: the source already holds every change (shared.go)
	}
	ta, err := c.attrs(ctx, c.tgt, id, controlAttempts)
	if err != nil || ta == nil {
		return err // a key gone from the target has nothing to carry back
	}
	sa, err := c.attrs(ctx, c.src, id, controlAttempts)
	if err != nil {
		return err
	}
	if sa == nil {
		return failKey("missing on %s", c.src.name)
	}
	if !destroyed(ta.State) && !destroyed(sa.State) {
		exp, err := c.export(ctx, c.src, id, controlAttempts)
		if err != nil {
			return err
		}
		same, err := c.sameMaterial(ctx, c.tgt, id, exp.Material, controlAttempts)
		exp.Wipe()
		if err != nil {
			return err
		}
		if !same {
			return &splitKeyError{id: id}
		}
	}
	return c.rights.syncRights(ctx, id, controlAttempts, true)
}
