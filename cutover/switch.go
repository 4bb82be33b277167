package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Switch moves traffic to the target (with the source as fallback) once
// verification passed; used when AutoSwitch is off.
func (c *Controller) Switch(ctx context.Context) error {
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if err := c.fleet.mustDrive(); err != nil {
		return err
	}
	if st := c.book.state(); st != StateVerified {
		return fmt.Errorf("%w: switch needs state verified, not %s", ErrWrongState, st)
	}
	// A runner in verified is finishing (or about to auto-switch): we switch instead.
	err = c.withRunnerStopped(held, func() error { return c.doSwitch(ctx, held) })
	if err == nil {
		c.settle(ctx)
	}
	return err
}

// doSwitch: final catch-up, target reachability check, journal, route.
// A target that does not answer means no switch and no route change: the
// state stays verified with the reason in last_error, and Switch (or the
// automatic switch of a later Start) can be tried again.
func (c *Controller) doSwitch(ctx context.Context, held ctlHeld) error {
	ctx = withClass(ctx, classUrgent) // within the pace, never paused
	if st := c.book.state(); st != StateVerified {
		return fmt.Errorf("%w: switch needs state verified, not %s", ErrWrongState, st)
	}
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.book.failures(); len(f) > 0 {
		msg := summarize("failed copy or verification; the switch is blocked", f)
		if err := c.transition(held, evVerifyFailed, func(h *Header) { h.LastError = msg }); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	if err := c.verifier.checkTarget(ctx); err != nil {
		msg := fmt.Sprintf("not switching: %v", err)
		c.book.setError(truncate(msg))
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	// Fleet: every member serves the verified epoch before anyone routes to the target.
	if err := c.barrier(ctx); err != nil {
		c.book.setError(truncate("not switching yet: " + err.Error()))
		return err
	}
	c.probation.reset()
	now := c.cfg.Now().UTC()
	err := c.transition(held, evSwitch, func(h *Header) {
		h.SwitchedAt = now
		h.ProbationPassed = false
		h.LastError = ""
	})
	if err != nil && c.book.state() == StateSwitched {
		// Journaled but the router refused: go back to the source.
		msg := truncate(err.Error())
		if err2 := c.transition(held, evRouteRefused, func(h *Header) { h.LastError = msg }); err2 != nil {
			return errors.Join(err, err2)
		}
	}
	return err
}

// watchProbation watches the target's error rate and p99 while switched and rolls back
// automatically on a breach; once probation passed it finalizes, if the run asked for it.
func (c *Controller) watchProbation(ctx context.Context) {
	p := c.cfg.Probation
	h := c.book.header()
	passed, autoFinal := h.ProbationPassed, h.Options.AutoFinalize
	end := c.cfg.Now().Add(p.Duration)
	tick := min(max(p.Duration/50, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for !passed {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := c.cfg.Now()
		v := c.probation.verdict(now)
		reason, category := v.reason, v.category
		if reason != "" {
			c.log.Error("cutover: probation breached; rolling back", "reason", reason)
			held, err := c.control.lock(ctx)
			if err != nil {
				return
			}
			if c.book.state() == StateSwitched {
				if err := c.rollback(ctx, held, reason, category); err != nil {
					c.log.Error("cutover: automatic rollback refused; staying on the target", "err", err)
					c.control.unlock(held)
					// Keep watching: the operator decides, or a later breach retries.
					continue
				}
			}
			c.control.unlock(held)
			return
		}
		if !now.Before(end) {
			if seen := c.probation.evidence(now); seen < int64(*p.MinRequests) || v.watching != "" {
				// Not enough evidence yet: probation goes on past its duration until the
				// target has served MinRequests, and while a rate above its threshold is
				// neither significant nor gone (status says so).
				continue
			}
			passed = true
			c.book.edit(func(h *Header) { h.ProbationPassed = true })
			c.log.Info("cutover: probation passed", "target", c.sides.tgt.name)
		}
	}
	if autoFinal {
		if c.sides.pace.unpaused(ctx) != nil { // paused: no automatic finalize until a resume
			return
		}
		held, err := c.control.lock(ctx)
		if err != nil {
			return
		}
		defer c.control.unlock(held)
		if c.book.state() == StateSwitched {
			if err := c.finalize(ctx, held, FinalizeOptions{RevokeSourceGrants: c.cfg.RevokeSourceGrantsOnFinalize}); err != nil {
				c.log.Error("cutover: automatic finalize failed", "err", err)
				c.book.setError(truncate(err.Error()))
			}
		}
	}
}
