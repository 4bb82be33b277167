package cutover

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Finalize stops falling back to the source. It first copies to the target
// any selected key that exists only on the source (created just before the
// switch); it refuses, naming them, if that fails.
func (c *Controller) Finalize(ctx context.Context, opts FinalizeOptions) error {
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if err := c.fleet.mustDrive(); err != nil {
		return err
	}
	if st := c.book.state(); st != StateSwitched {
		return fmt.Errorf("%w: finalize needs state switched, not %s", ErrWrongState, st)
	}
	passed := c.book.header().ProbationPassed
	if !passed {
		reason := strings.TrimSpace(opts.Reason)
		if !opts.Force || reason == "" {
			return fmt.Errorf("%w: probation has not passed (%s); finalizing now needs force and a reason", ErrRefused, c.probationLeft())
		}
		c.log.Warn("cutover: finalizing before probation passed", "reason", truncate(reason), "requests", c.probation.seen.Load())
	}
	opts.RevokeSourceGrants = opts.RevokeSourceGrants || c.cfg.RevokeSourceGrantsOnFinalize
	err = c.withRunnerStopped(held, func() error { return c.finalize(ctx, held, opts) })
	if err == nil {
		c.settle(ctx)
	}
	return err
}

func (c *Controller) finalize(ctx context.Context, held ctlHeld, opts FinalizeOptions) error {
	ctx = withClass(ctx, classUrgent) // within the pace, never paused
	if opts.RevokeSourceGrants {
		if err := c.probe.refuseRevokeShared(ctx); err != nil {
			c.book.setError(truncate(err.Error()))
			return err
		}
	}
	ids, err := c.sides.list(ctx, c.sides.src, controlAttempts)
	if err != nil {
		return fmt.Errorf("%w: finalize: cannot list keys on %s to make sure none would be stranded: %v", ErrRefused, c.sides.src.name, err)
	}
	during, _ := c.book.createdKeys()
	ids = append(ids, during...)
	var mu sync.Mutex
	var failed []KeyFailure
	err = c.sides.forEach(ctx, ids, func(ctx context.Context, id string) error {
		if k, ok := c.book.key(id); verified(k, ok) || ok && k.Result == ResultKept || c.book.keptOn(id) != "" {
			return nil
		}
		_, err := c.copier.copyKey(ctx, c.sides.src, c.sides.tgt, id, controlAttempts)
		if err == nil {
			err = c.verifier.verifyKey(ctx, id, controlAttempts)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			mu.Lock()
			failed = append(failed, KeyFailure{KeyID: id, Result: ResultError, Reason: truncate(err.Error())})
			mu.Unlock()
			return nil
		}
		c.book.setKey(id, KeyProgress{Phase: PhaseVerify, Result: ResultOK})
		return nil
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		sort.Slice(failed, func(i, j int) bool { return failed[i].KeyID < failed[j].KeyID })
		msg := summarize("exist on "+c.sides.src.name+" but could not be copied to "+c.sides.tgt.name, failed)
		c.book.setError(msg)
		return fmt.Errorf("%w: finalize: %s", ErrRefused, msg)
	}
	// Fleet: nobody may still serve an epoch older than the switched one, which created keys
	// on either side are copied under.
	if err := c.barrier(ctx); err != nil {
		return err
	}
	if err := c.transition(held, evFinalize, func(h *Header) { h.LastError = "" }); err != nil {
		return err
	}
	if opts.RevokeSourceGrants {
		// Only once every member serves the finalized route: a member still falling back to the
		// source would fail there.
		if err := c.barrier(ctx); err != nil {
			c.book.setError(truncate("finalized; source grants not revoked: " + err.Error()))
			return err
		}
		c.rights.revokeSource(ctx)
	}
	return nil
}

// probationLeft says what probation still waits for: the rest of its duration, the requests it
// needs as evidence, or both.
func (c *Controller) probationLeft() string {
	now := c.cfg.Now()
	p := c.cfg.Probation
	var missing []string
	if sw := c.book.header().SwitchedAt; !sw.IsZero() {
		if left := sw.Add(p.Duration).Sub(now); left > 0 {
			missing = append(missing, fmt.Sprintf("%s of its %s left", left.Round(time.Second), p.Duration))
		}
	}
	seen := c.probation.evidence(now)
	if need := int64(*p.MinRequests); seen < need {
		missing = append(missing, fmt.Sprintf("%d of the %d requests it needs reached %s so far", seen, need, c.sides.tgt.name))
	} else {
		missing = append(missing, fmt.Sprintf("the %d requests it needs reached %s (%d so far)", need, c.sides.tgt.name, seen))
	}
	return strings.Join(missing, "; ")
}
