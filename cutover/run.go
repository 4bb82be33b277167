package cutover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// controlAttempts bounds retries inside operator actions (switch check,
// rollback copy-back, finalize reconcile): they must answer, not hang.
const controlAttempts = 3

// Start begins a migration source → target in the background and returns
// once it is under way. From copy_failed/verify_failed it retries the failed
// keys; from serving, rolled_back or finalized it starts afresh (the backend
// serving now must be the configured source). In an interrupted state it
// resumes with the new options.
func (c *Controller) Start(ctx context.Context, opts StartOptions) error {
	if opts.Shadow < 0 {
		return errors.New("cutover: negative shadow duration")
	}
	if err := c.sides.checkPair(opts.Source, opts.Target); err != nil {
		return err
	}
	// The journal's header names the pair; its options keep the earlier form, which a release
	// rolled back to still reads.
	opts.Source, opts.Target = "", ""
	switch {
	case opts.NoShadow && opts.Shadow > 0:
		return errors.New("cutover: a shadow duration and no shadowing both asked for")
	case opts.NoShadow:
	case opts.Shadow == 0:
		opts.Shadow = c.cfg.Shadow.Duration
	}
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if err := c.fleet.mustDrive(); err != nil {
		return err
	}
	h := c.book.header()
	st := h.State
	active, _ := h.Route()
	if c.control.isRunning() {
		return ErrRunning
	}
	if err := c.sides.checkAccess(ctx, true); err != nil {
		return err
	}
	c.probe.ensureShared(ctx)
	switch st {
	case StateServing, StateRolledBack, StateFinalized:
		if active != c.sides.src.name {
			return fmt.Errorf("%w: backend %q serves (state %s); start from it (cutover start --source %s, or [cutover] source)", ErrWrongState, active, st, active)
		}
		now := c.cfg.Now().UTC()
		err := c.transition(held, evStart, func(h *Header) {
			h.Source, h.Target = c.sides.src.name, c.sides.tgt.name
			h.StartedAt, h.SwitchedAt = now, time.Time{}
			h.Options = opts
			h.Reason, h.LastError = "", ""
			h.ProbationPassed, h.Paused = false, false
		})
		if err != nil {
			return err
		}
		c.rights.reset()
		c.shadow.reset() // this migration's shadow figures, not the last one's
	case StateCopyFailed, StateVerifyFailed:
		err := c.transition(held, evRetry, func(h *Header) {
			h.Options = opts
			h.LastError = ""
		})
		if err != nil {
			return err
		}
	case StateCopying, StateVerifying, StateShadowing, StateVerified:
		c.book.edit(func(h *Header) { h.Options = opts })
	default:
		return fmt.Errorf("%w: cannot start in state %s", ErrWrongState, st)
	}
	c.launch(held)
	return nil
}

// resume continues, in parent (Run's context, or a fleet driver's lead), the run the journal
// records (copy, verify, shadow, auto-switch, probation, an interrupted rollback). It is a no-op
// when there is nothing to resume.
func (c *Controller) resume(parent context.Context) error {
	held, err := c.control.lock(parent)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	h := c.book.header()
	st, opts, passed := h.State, h.Options, h.ProbationPassed
	if c.control.isRunning() {
		return nil
	}
	if st == StateRollingBack {
		c.log.Info("cutover: resuming an interrupted rollback")
		return c.rollback(parent, held, h.Reason, "resumed")
	}
	switch {
	case st == StateCopying, st == StateVerifying, st == StateShadowing,
		st == StateVerified && opts.AutoSwitch,
		st == StateSwitched && (!passed || opts.AutoFinalize):
		c.log.Info("cutover: resuming", "state", st)
		c.probe.ensureShared(parent)
		c.launch(held)
	}
	return nil
}

// launch starts the runner: in Run's context, or in the lead of a fleet member that drives (a
// member that does not drive runs none).
func (c *Controller) launch(held ctlHeld) {
	parent := c.control.runContext()
	if c.fleet != nil {
		parent = c.fleet.leadContext()
	}
	if parent == nil || parent.Err() != nil {
		return
	}
	c.control.launch(held, parent, c.run)
}

// withRunnerStopped is the dance Switch, Rollback and Finalize share: the background runner is
// stopped while op changes the state, and relaunched when op leaves the migration switched (the
// runner watches probation), whether op succeeded or not.
func (c *Controller) withRunnerStopped(held ctlHeld, op func() error) error {
	c.control.stopRunner(held)
	err := op()
	if c.book.state() == StateSwitched {
		c.launch(held)
	}
	return err
}

// run drives the machine from its current state until it needs the
// operator, ends, or ctx is cancelled.
func (c *Controller) run(ctx context.Context) {
	for ctx.Err() == nil {
		var err error
		switch st := c.book.state(); st {
		case StateCopying:
			err = c.phaseCopy(ctx)
		case StateVerifying:
			err = c.phaseVerify(ctx)
		case StateShadowing:
			err = c.phaseShadow(ctx)
		case StateVerified:
			if !c.book.header().Options.AutoSwitch {
				return
			}
			if c.sides.pace.unpaused(ctx) != nil { // paused: no automatic switch until a resume
				return
			}
			held, lerr := c.control.lock(ctx)
			if lerr != nil {
				return
			}
			err = c.doSwitch(ctx, held)
			c.control.unlock(held)
			if err != nil {
				c.log.Error("cutover: automatic switch failed; staying on the source", "err", err)
				return
			}
		case StateSwitched:
			bctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); backfill{c.copier}.loop(bctx) }()
			rdone := make(chan struct{})
			go func() { defer close(rdone); c.rights.loop(bctx) }()
			c.watchProbation(ctx)
			if c.book.state() == StateSwitched {
				// Probation passed without auto-finalize: keep the fallback complete until
				// the operator finalizes or rolls back.
				<-ctx.Done()
			}
			stop()
			<-done
			<-rdone
			return
		default:
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("cutover: run stopped", "err", err)
				c.book.setError(truncate(err.Error()))
			}
			return
		}
	}
}

// workList is the selection on the source plus keys created during the
// migration and keys already journaled, sorted.
func (c *Controller) workList(ctx context.Context) ([]string, error) {
	ids, err := c.sides.list(ctx, c.sides.src, forever)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	during, _ := c.book.createdKeys()
	for _, id := range during {
		set[id] = true
	}
	for _, id := range c.book.keyIDs(nil) {
		set[id] = true
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	c.book.setListed(len(out))
	return out, nil
}

// catchUp copies (and, with verify, verifies) every key of the work list not
// yet done, until a pass finds nothing new, or nothing but keys created through
// the proxy (at most 10 passes): this is how keys created during the migration
// get copied. Failed keys are not retried here.
func (c *Controller) catchUp(ctx context.Context, verify bool) error {
	for round := 0; round < 10; round++ {
		ids, err := c.workList(ctx)
		if err != nil {
			return err
		}
		var todo []string
		for _, id := range ids {
			k, ok := c.book.key(id)
			if ok && (k.Result == ResultError || k.Result == ResultConflict || k.Result == ResultKept) {
				continue
			}
			if !copied(k, ok) || (verify && !verified(k, ok)) {
				todo = append(todo, id)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		// Keys AWS created through the proxy since the last listing are what a busy key store
		// always has new: their created-key notes follow them from here (the next pass, the
		// switch's guard, the backfill), so a pass that finds only those ends the catch-up
		// rather than listing every key again (each listing of 100 000 keys takes seconds).
		onlyNoted := true
		for _, id := range todo {
			if !c.book.isCreated(id) {
				onlyNoted = false
				break
			}
		}
		err = c.sides.forEach(ctx, todo, func(ctx context.Context, id string) error {
			if k, ok := c.book.key(id); !copied(k, ok) {
				if err := c.copier.copyOne(ctx, id); err != nil {
					return err
				}
			}
			if k, ok := c.book.key(id); verify && copied(k, ok) && !verified(k, ok) {
				return c.verifier.verifyOne(ctx, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if onlyNoted {
			return nil
		}
	}
	return nil
}

func summarize(what string, f []KeyFailure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d key(s) %s:", len(f), what)
	for i, k := range f {
		if i == 5 {
			fmt.Fprintf(&b, " … and %d more", len(f)-5)
			break
		}
		fmt.Fprintf(&b, " %s (%s: %s);", k.KeyID, k.Result, k.Reason)
	}
	return truncate(b.String())
}

// advance takes a runner transition under the control lock, if the state is
// still from (an operator may have acted meanwhile).
func (c *Controller) advance(ctx context.Context, from State, ev event, mutate func(*Header)) error {
	held, err := c.control.lock(ctx)
	if err != nil {
		return err
	}
	defer c.control.unlock(held)
	if c.book.state() != from {
		return fmt.Errorf("%w: state changed to %s", ErrWrongState, c.book.state())
	}
	return c.transition(held, ev, mutate)
}

func (c *Controller) phaseCopy(ctx context.Context) error {
	c.probe.ensureShared(ctx)
	ids, err := c.workList(ctx)
	if err != nil {
		return err
	}
	var todo []string
	for _, id := range ids {
		if k, ok := c.book.key(id); !ok || !copied(k, ok) {
			todo = append(todo, id)
		}
	}
	c.log.Info("cutover: copying", "keys", len(ids), "to_copy", len(todo), "source", c.sides.src.name, "target", c.sides.tgt.name)
	if err := c.sides.forEach(ctx, todo, c.copier.copyOne); err != nil {
		return err
	}
	if err := c.catchUp(ctx, false); err != nil {
		return err
	}
	if f := c.book.failures(); len(f) > 0 {
		return c.advance(ctx, StateCopying, evCopyFailed, func(h *Header) {
			h.LastError = summarize("could not be copied; the switch is blocked", f)
		})
	}
	return c.advance(ctx, StateCopying, evCopied, func(h *Header) { h.LastError = "" })
}

func (c *Controller) phaseVerify(ctx context.Context) error {
	todo := c.book.keyIDs(func(k KeyProgress) bool {
		return copied(k, true) && !verified(k, true) && k.Result != ResultError && k.Result != ResultConflict
	})
	c.log.Info("cutover: verifying", "keys", len(todo))
	if err := c.sides.forEach(ctx, todo, c.verifier.verifyOne); err != nil {
		return err
	}
	// Reachability first: the catch-up retries transient errors without limit, so with the
	// target down it would hold the control lock until ctx ends instead of refusing.
	if err := c.verifier.checkTarget(ctx); err != nil {
		msg := fmt.Sprintf("not switching: %v", err)
		c.book.setError(truncate(msg))
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.book.failures(); len(f) > 0 {
		return c.advance(ctx, StateVerifying, evVerifyFailed, func(h *Header) {
			h.LastError = summarize("failed verification; the switch is blocked", f)
		})
	}
	shadow := c.book.header().Options.Shadow
	ev := evVerified
	if shadow > 0 {
		ev = evShadow
		// Mirror is open as soon as the state says shadowing.
		c.shadow.start()
	}
	err := c.advance(ctx, StateVerifying, ev, func(h *Header) { h.LastError = "" })
	if err != nil && ev == evShadow {
		c.shadow.stop()
	}
	return err
}

func (c *Controller) phaseShadow(ctx context.Context) error {
	d := c.book.header().Options.Shadow
	c.log.Info("cutover: shadowing live Decrypts to the target", "duration", d)
	before := c.shadow.stats()
	c.shadow.start()
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	c.shadow.stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	after := c.shadow.stats()
	if n := after.Mismatch - before.Mismatch; n > 0 {
		return c.advance(ctx, StateShadowing, evVerifyFailed, func(h *Header) {
			h.LastError = fmt.Sprintf("shadow: %d mirrored Decrypt(s) returned different plaintext on %s; the switch is blocked", n, c.sides.tgt.name)
		})
	}
	// Keys created while shadowing are copied and verified before the switch.
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.book.failures(); len(f) > 0 {
		return c.advance(ctx, StateShadowing, evVerifyFailed, func(h *Header) {
			h.LastError = summarize("failed copy or verification; the switch is blocked", f)
		})
	}
	return c.advance(ctx, StateShadowing, evVerified, nil)
}
