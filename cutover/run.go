package cutover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
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
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	c.mu.Lock()
	running, st, active := c.running, c.j.State, activeOf(c.j)
	c.mu.Unlock()
	if running {
		return ErrRunning
	}
	switch st {
	case StateServing, StateRolledBack, StateFinalized:
		if active != c.src.name {
			return fmt.Errorf("%w: backend %q serves (state %s); configure it as the migration source", ErrWrongState, active, st)
		}
		now := c.cfg.Now().UTC()
		err := c.transition(StateCopying, func(j *journal) {
			j.Source, j.Target = c.src.name, c.tgt.name
			j.StartedAt, j.SwitchedAt = now, time.Time{}
			j.Options = opts
			j.Reason, j.LastError = "", ""
			j.ProbationPassed = false
			j.Keys = map[string]*KeyProgress{}
			j.CreatedDuring, j.CreatedOnTarget = nil, nil
			clear(c.created)
		})
		if err != nil {
			return err
		}
	case StateCopyFailed, StateVerifyFailed:
		err := c.transition(StateCopying, func(j *journal) {
			j.Options = opts
			j.LastError = ""
			for id, k := range j.Keys {
				if k.Result == ResultError || k.Result == ResultConflict {
					delete(j.Keys, id)
				}
			}
		})
		if err != nil {
			return err
		}
	case StateCopying, StateVerifying, StateShadowing, StateVerified:
		c.mu.Lock()
		c.j.Options = opts
		c.dirty = true
		c.mu.Unlock()
	default:
		return fmt.Errorf("%w: cannot start in state %s", ErrWrongState, st)
	}
	c.launch()
	return nil
}

// Resume continues a run interrupted by a restart (copy, verify, shadow,
// auto-switch, probation). It is a no-op when there is nothing to resume.
func (c *Controller) Resume(ctx context.Context) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	c.mu.Lock()
	running, st, opts, passed := c.running, c.j.State, c.j.Options, c.j.ProbationPassed
	c.mu.Unlock()
	if running {
		return nil
	}
	if st == StateRollingBack {
		c.mu.Lock()
		reason := c.j.Reason
		c.mu.Unlock()
		c.log.Info("cutover: resuming an interrupted rollback")
		return c.rollbackLocked(ctx, reason, "resumed")
	}
	switch {
	case st == StateCopying, st == StateVerifying, st == StateShadowing,
		st == StateVerified && opts.AutoSwitch,
		st == StateSwitched && (!passed || opts.AutoFinalize):
		c.log.Info("cutover: resuming", "state", st)
		c.launch()
	}
	return nil
}

// launch starts the runner. The caller holds ctl.
func (c *Controller) launch() {
	ctx, cancel := context.WithCancel(c.baseCtx)
	done := make(chan struct{})
	c.mu.Lock()
	c.running, c.runStop, c.runDone = true, cancel, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		defer cancel()
		c.run(ctx)
		c.mu.Lock()
		if c.runDone == done {
			c.running, c.runStop, c.runDone = false, nil, nil
		}
		c.mu.Unlock()
	}()
}

// stopRunner cancels the runner and waits for it. The caller holds ctl,
// never the runner itself.
func (c *Controller) stopRunner() {
	c.mu.Lock()
	cancel, done := c.runStop, c.runDone
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// run drives the machine from its current state until it needs the
// operator, ends, or ctx is cancelled.
func (c *Controller) run(ctx context.Context) {
	for ctx.Err() == nil {
		var err error
		switch st := c.curState(); st {
		case StateCopying:
			err = c.phaseCopy(ctx)
		case StateVerifying:
			err = c.phaseVerify(ctx)
		case StateShadowing:
			err = c.phaseShadow(ctx)
		case StateVerified:
			c.mu.Lock()
			auto := c.j.Options.AutoSwitch
			c.mu.Unlock()
			if !auto {
				return
			}
			if err = c.lock(ctx); err != nil {
				return
			}
			err = c.switchLocked(ctx)
			c.unlock()
			if err != nil {
				c.log.Error("cutover: automatic switch failed; staying on the source", "err", err)
				return
			}
		case StateSwitched:
			bctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); c.backfillLoop(bctx) }()
			c.probationLoop(ctx)
			if c.curState() == StateSwitched {
				// Probation passed without auto-finalize: keep the fallback complete until
				// the operator finalizes or rolls back.
				<-ctx.Done()
			}
			stop()
			<-done
			return
		default:
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("cutover: run stopped", "err", err)
				c.setError(truncate(err.Error()))
			}
			return
		}
	}
}

// workList is the selection on the source plus keys created during the
// migration and keys already journaled, sorted.
func (c *Controller) workList(ctx context.Context) ([]string, error) {
	ids, err := c.list(ctx, c.src, forever)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	c.mu.Lock()
	for _, id := range c.j.CreatedDuring {
		set[id] = true
	}
	for id := range c.j.Keys {
		set[id] = true
	}
	c.mu.Unlock()
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	c.mu.Lock()
	c.listed = len(out)
	c.mu.Unlock()
	return out, nil
}

// catchUp copies (and, with verify, verifies) every key of the work list not
// yet done, until a pass finds nothing new: this is how keys created during
// the migration get copied. Failed keys are not retried here.
func (c *Controller) catchUp(ctx context.Context, verify bool) error {
	for round := 0; round < 10; round++ {
		ids, err := c.workList(ctx)
		if err != nil {
			return err
		}
		var todo []string
		for _, id := range ids {
			k, ok := c.keyProgress(id)
			if ok && (k.Result == ResultError || k.Result == ResultConflict) {
				continue
			}
			if !copied(k, ok) || (verify && !verified(k, ok)) {
				todo = append(todo, id)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		err = c.forEach(ctx, todo, func(ctx context.Context, id string) error {
			if k, ok := c.keyProgress(id); !copied(k, ok) {
				if err := c.copyOne(ctx, id); err != nil {
					return err
				}
			}
			if k, ok := c.keyProgress(id); verify && copied(k, ok) && !verified(k, ok) {
				return c.verifyOne(ctx, id)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// failures lists the keys whose copy or verification failed, sorted.
func (c *Controller) failures() []KeyFailure {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []KeyFailure
	for id, k := range c.j.Keys {
		if k.Result == ResultError || k.Result == ResultConflict {
			out = append(out, KeyFailure{KeyID: id, Phase: k.Phase, Result: k.Result, Reason: k.Error})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
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
func (c *Controller) advance(ctx context.Context, from, to State, mutate func(*journal)) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	if c.curState() != from {
		return fmt.Errorf("%w: state changed to %s", ErrWrongState, c.curState())
	}
	return c.transition(to, mutate)
}

func (c *Controller) phaseCopy(ctx context.Context) error {
	ids, err := c.workList(ctx)
	if err != nil {
		return err
	}
	var todo []string
	for _, id := range ids {
		if k, ok := c.keyProgress(id); !ok || !copied(k, ok) {
			todo = append(todo, id)
		}
	}
	c.log.Info("cutover: copying", "keys", len(ids), "to_copy", len(todo), "source", c.src.name, "target", c.tgt.name)
	if err := c.forEach(ctx, todo, c.copyOne); err != nil {
		return err
	}
	if err := c.catchUp(ctx, false); err != nil {
		return err
	}
	if f := c.failures(); len(f) > 0 {
		return c.advance(ctx, StateCopying, StateCopyFailed, func(j *journal) {
			j.LastError = summarize("could not be copied; the switch is blocked", f)
		})
	}
	return c.advance(ctx, StateCopying, StateVerifying, func(j *journal) { j.LastError = "" })
}

func (c *Controller) phaseVerify(ctx context.Context) error {
	c.mu.Lock()
	var todo []string
	for id, k := range c.j.Keys {
		if copied(*k, true) && !verified(*k, true) && k.Result != ResultError && k.Result != ResultConflict {
			todo = append(todo, id)
		}
	}
	c.mu.Unlock()
	sort.Strings(todo)
	c.log.Info("cutover: verifying", "keys", len(todo))
	if err := c.forEach(ctx, todo, c.verifyOne); err != nil {
		return err
	}
	// Reachability first: the catch-up retries transient errors without limit, so with the
	// target down it would hold the control lock until ctx ends instead of refusing.
	if err := c.checkTarget(ctx); err != nil {
		msg := fmt.Sprintf("not switching: %v", err)
		c.setError(truncate(msg))
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.failures(); len(f) > 0 {
		return c.advance(ctx, StateVerifying, StateVerifyFailed, func(j *journal) {
			j.LastError = summarize("failed verification; the switch is blocked", f)
		})
	}
	c.mu.Lock()
	shadow := c.j.Options.Shadow
	c.mu.Unlock()
	next := StateVerified
	if shadow > 0 && c.cfg.Forwarder != nil {
		next = StateShadowing
		// Mirror is open as soon as the state says shadowing.
		c.shadow.start()
	}
	err := c.advance(ctx, StateVerifying, next, func(j *journal) { j.LastError = "" })
	if err != nil && next == StateShadowing {
		c.shadow.stop()
	}
	return err
}

func (c *Controller) phaseShadow(ctx context.Context) error {
	c.mu.Lock()
	d := c.j.Options.Shadow
	c.mu.Unlock()
	if c.cfg.Forwarder == nil {
		c.log.Warn("cutover: shadowing asked for but no Forwarder is configured; skipping it")
	} else {
		c.log.Info("cutover: shadowing live Decrypts to the target", "duration", d)
		before := c.shadow.snapshot()
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
		after := c.shadow.snapshot()
		if n := after.Mismatch - before.Mismatch; n > 0 {
			return c.advance(ctx, StateShadowing, StateVerifyFailed, func(j *journal) {
				j.LastError = fmt.Sprintf("shadow: %d mirrored Decrypt(s) returned different plaintext on %s; the switch is blocked", n, c.tgt.name)
			})
		}
	}
	// Keys created while shadowing are copied and verified before the switch.
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.failures(); len(f) > 0 {
		return c.advance(ctx, StateShadowing, StateVerifyFailed, func(j *journal) {
			j.LastError = summarize("failed copy or verification; the switch is blocked", f)
		})
	}
	return c.advance(ctx, StateShadowing, StateVerified, nil)
}

// Switch moves traffic to the target (with the source as fallback) once
// verification passed; used when AutoSwitch is off.
func (c *Controller) Switch(ctx context.Context) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	if st := c.curState(); st != StateVerified {
		return fmt.Errorf("%w: switch needs state verified, not %s", ErrWrongState, st)
	}
	// A runner in verified is finishing (or about to auto-switch): we switch instead.
	c.stopRunner()
	if err := c.switchLocked(ctx); err != nil {
		return err
	}
	c.launch() // probation
	return nil
}

// switchLocked: final catch-up, target reachability check, journal, route.
// A target that does not answer means no switch and no route change: the
// state stays verified with the reason in last_error, and Switch (or the
// automatic switch of a later Start) can be tried again.
func (c *Controller) switchLocked(ctx context.Context) error {
	if st := c.curState(); st != StateVerified {
		return fmt.Errorf("%w: switch needs state verified, not %s", ErrWrongState, st)
	}
	if err := c.catchUp(ctx, true); err != nil {
		return err
	}
	if f := c.failures(); len(f) > 0 {
		msg := summarize("failed copy or verification; the switch is blocked", f)
		if err := c.transition(StateVerifyFailed, func(j *journal) { j.LastError = msg }); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrRefused, msg)
	}
	if err := c.checkTarget(ctx); err != nil {
		msg := fmt.Sprintf("not switching: %v", err)
		c.setError(truncate(msg))
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	c.probation.reset()
	now := c.cfg.Now().UTC()
	err := c.transition(StateSwitched, func(j *journal) {
		j.SwitchedAt = now
		j.ProbationPassed = false
		j.LastError = ""
	})
	if err != nil && c.curState() == StateSwitched {
		// Journaled but the router refused: go back to the source.
		msg := truncate(err.Error())
		if err2 := c.transition(StateVerified, func(j *journal) { j.LastError = msg }); err2 != nil {
			return errors.Join(err, err2)
		}
	}
	return err
}

// checkTarget proves the target answers KMIP right now and still holds a
// migrated key.
func (c *Controller) checkTarget(ctx context.Context) error {
	_, err := retry(ctx, c, controlAttempts, "version of "+c.tgt.name, func(ctx context.Context) (string, error) {
		return c.tgt.k.Version(ctx)
	})
	if err != nil {
		return fmt.Errorf("target %s does not answer: %v", c.tgt.name, err)
	}
	c.mu.Lock()
	var probe string
	for id := range c.j.Keys {
		if probe == "" || id < probe {
			probe = id
		}
	}
	c.mu.Unlock()
	if probe == "" {
		return nil
	}
	a, err := c.attrs(ctx, c.tgt, probe, controlAttempts)
	if err != nil {
		return fmt.Errorf("target %s: reading key %s: %v", c.tgt.name, probe, err)
	}
	if a == nil {
		return fmt.Errorf("target %s no longer has key %s", c.tgt.name, probe)
	}
	return nil
}

// probationLoop watches the target's error rate and p99 while switched and
// rolls back automatically on a breach.
func (c *Controller) probationLoop(ctx context.Context) {
	p := c.cfg.Probation
	c.mu.Lock()
	passed, autoFinal := c.j.ProbationPassed, c.j.Options.AutoFinalize
	c.mu.Unlock()
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
		st := c.probation.stats(now, p.Window)
		var reason, category string
		if st.Requests >= p.MinRequests {
			switch {
			case st.ErrorRate > p.MaxErrorRate:
				category = "error_rate"
				reason = fmt.Sprintf("probation: error rate %.2f%% (%d of %d requests) on %s exceeds %.2f%%",
					100*st.ErrorRate, st.Errors, st.Requests, c.tgt.name, 100*p.MaxErrorRate)
			case st.P99 > p.MaxP99:
				category = "p99"
				reason = fmt.Sprintf("probation: p99 latency %s on %s exceeds %s (%d requests)",
					st.P99.Round(time.Microsecond), c.tgt.name, p.MaxP99, st.Requests)
			}
		}
		if reason != "" {
			c.log.Error("cutover: probation breached; rolling back", "reason", reason)
			if err := c.lock(ctx); err != nil {
				return
			}
			if c.curState() == StateSwitched {
				if err := c.rollbackLocked(ctx, reason, category); err != nil {
					c.log.Error("cutover: automatic rollback refused; staying on the target", "err", err)
					c.unlock()
					// Keep watching: the operator decides, or a later breach retries.
					continue
				}
			}
			c.unlock()
			return
		}
		if !now.Before(end) {
			passed = true
			c.mu.Lock()
			c.j.ProbationPassed = true
			c.dirty = true
			c.mu.Unlock()
			c.log.Info("cutover: probation passed", "target", c.tgt.name)
		}
	}
	if autoFinal {
		if err := c.lock(ctx); err != nil {
			return
		}
		defer c.unlock()
		if c.curState() == StateSwitched {
			if err := c.finalizeLocked(ctx, FinalizeOptions{}); err != nil {
				c.log.Error("cutover: automatic finalize failed", "err", err)
				c.setError(truncate(err.Error()))
			}
		}
	}
}

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
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	c.stopRunner()
	err := c.rollbackLocked(ctx, reason, "manual")
	if err != nil && c.curState() == StateSwitched {
		c.launch() // keep probation running
	}
	return err
}

func (c *Controller) rollbackLocked(ctx context.Context, reason, category string) error {
	st := c.curState()
	if st == StateServing || st == StateRolledBack {
		return fmt.Errorf("%w: nothing to roll back (state %s, %s serves)", ErrWrongState, st, c.src.name)
	}
	if st == StateSwitched || st == StateFinalized {
		// First pass while the target still serves: everything it gained so far.
		if err := c.copyBack(ctx); err != nil {
			c.setError(truncate("rollback refused: " + err.Error()))
			return fmt.Errorf("%w: rollback: %v", ErrRefused, err)
		}
		if err := c.transition(StateRollingBack, func(j *journal) {
			j.Reason = reason
			j.LastError = ""
		}); err != nil {
			return err
		}
		st = StateRollingBack
	}
	if st == StateRollingBack {
		// Second pass with the source serving and the target as fallback: keys created on the
		// target while the first pass ran. Until it succeeds they stay reachable through the
		// fallback, and Rollback can be called again.
		if err := c.copyBack(ctx); err != nil {
			c.setError(truncate("rolling back: the target stays the fallback until its remaining keys are copied back: " + err.Error()))
			return fmt.Errorf("%w: rollback: %v", ErrRefused, err)
		}
	}
	if err := c.transition(StateRolledBack, func(j *journal) {
		j.Reason = reason
		j.LastError = ""
	}); err != nil {
		return err
	}
	c.m.rollbacks.WithLabelValues(category).Inc()
	return nil
}

// copyBack makes the source hold everything the target gained since the
// switch: keys created there, revocations and access-right changes.
func (c *Controller) copyBack(ctx context.Context) error {
	srcIDs, err := c.list(ctx, c.src, controlAttempts)
	if err != nil {
		return fmt.Errorf("source %s unreachable: %v", c.src.name, err)
	}
	inSrc := map[string]bool{}
	for _, id := range srcIDs {
		inSrc[id] = true
	}
	tgtIDs, terr := c.list(ctx, c.tgt, controlAttempts)
	c.mu.Lock()
	cand := map[string]bool{}
	for _, id := range c.j.CreatedOnTarget {
		cand[id] = true
	}
	migrated := make([]string, 0, len(c.j.Keys))
	for id, k := range c.j.Keys {
		if copied(*k, true) {
			migrated = append(migrated, id)
		}
	}
	c.mu.Unlock()
	if terr == nil && c.cfg.Select.Mode != "list" {
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
	var failed []KeyFailure
	fail := func(id string, err error) {
		mu.Lock()
		failed = append(failed, KeyFailure{KeyID: id, Result: ResultError, Reason: truncate(err.Error())})
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
		if sa != nil {
			return nil // already there; state and grants are synced below
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
		c.log.Info("cutover: copied key created on the target back to the source", "key_id", id)
		return nil
	})
	if err != nil {
		return err
	}
	if terr != nil {
		c.log.Warn("cutover: target unreachable during rollback; state and access-right changes made on it since the switch cannot be copied back",
			"target", c.tgt.name, "err", truncate(terr.Error()))
	} else {
		err = c.forEach(ctx, append(migrated, ids...), func(ctx context.Context, id string) error {
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
	if len(failed) > 0 {
		sort.Slice(failed, func(i, j int) bool { return failed[i].KeyID < failed[j].KeyID })
		return errors.New(summarize("could not be copied back to "+c.src.name+" (they would be stranded on "+c.tgt.name+")", failed))
	}
	return nil
}

// syncBack carries a revocation and access-right changes made on the target
// back to the source.
func (c *Controller) syncBack(ctx context.Context, id string) error {
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
	if revoked(ta.State) && sa.State != ta.State && sa.State != cosmian.StateCompromised {
		reason := revokeReason(ta.State)
		if err := retryErr(ctx, c, controlAttempts, "revoke on "+c.src.name, func(ctx context.Context) error {
			return c.src.k.Revoke(ctx, id, reason, "revoked on "+c.tgt.name+" after the switch; replicated by xksproxy rollback")
		}); err != nil {
			return wrapKMS(err, "revoke on %s", c.src.name)
		}
	}
	return c.copyGrants(ctx, c.tgt, c.src, id, controlAttempts, true)
}

// Finalize stops falling back to the source. It first copies to the target
// any selected key that exists only on the source (created just before the
// switch); it refuses, naming them, if that fails.
func (c *Controller) Finalize(ctx context.Context, opts FinalizeOptions) error {
	if err := c.lock(ctx); err != nil {
		return err
	}
	defer c.unlock()
	if st := c.curState(); st != StateSwitched {
		return fmt.Errorf("%w: finalize needs state switched, not %s", ErrWrongState, st)
	}
	c.stopRunner()
	err := c.finalizeLocked(ctx, opts)
	if err != nil && c.curState() == StateSwitched {
		c.launch()
	}
	return err
}

func (c *Controller) finalizeLocked(ctx context.Context, opts FinalizeOptions) error {
	ids, err := c.list(ctx, c.src, controlAttempts)
	if err != nil {
		return fmt.Errorf("%w: finalize: cannot list keys on %s to make sure none would be stranded: %v", ErrRefused, c.src.name, err)
	}
	c.mu.Lock()
	ids = append(ids, c.j.CreatedDuring...)
	c.mu.Unlock()
	var mu sync.Mutex
	var failed []KeyFailure
	err = c.forEach(ctx, ids, func(ctx context.Context, id string) error {
		if k, ok := c.keyProgress(id); verified(k, ok) {
			return nil
		}
		_, err := c.copyKey(ctx, c.src, c.tgt, id, controlAttempts)
		if err == nil {
			err = c.verifyKey(ctx, id, controlAttempts)
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
		c.setKey(id, KeyProgress{Phase: PhaseVerify, Result: ResultOK})
		return nil
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		sort.Slice(failed, func(i, j int) bool { return failed[i].KeyID < failed[j].KeyID })
		msg := summarize("exist on "+c.src.name+" but could not be copied to "+c.tgt.name, failed)
		c.setError(msg)
		return fmt.Errorf("%w: finalize: %s", ErrRefused, msg)
	}
	if err := c.transition(StateFinalized, func(j *journal) { j.LastError = "" }); err != nil {
		return err
	}
	if opts.RevokeSourceGrants {
		c.revokeSourceGrants(ctx)
	}
	return nil
}

// revokeSourceGrants removes, on the source, every access right of the
// migrated keys. Failures are reported, not fatal: the route no longer
// reaches the source.
func (c *Controller) revokeSourceGrants(ctx context.Context) {
	c.mu.Lock()
	ids := make([]string, 0, len(c.j.Keys))
	for id := range c.j.Keys {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	sort.Strings(ids)
	var mu sync.Mutex
	var failed []string
	_ = c.forEach(ctx, ids, func(ctx context.Context, id string) error {
		list, err := retry(ctx, c, controlAttempts, "list access on "+c.src.name, func(ctx context.Context) ([]cosmian.UserAccess, error) {
			return c.src.k.ListAccess(ctx, id)
		})
		for _, ua := range list {
			if err != nil {
				break
			}
			a := cosmian.Access{UID: id, UserID: ua.UserID, Operations: ua.Operations}
			err = retryErr(ctx, c, controlAttempts, "revoke access on "+c.src.name, func(ctx context.Context) error {
				return c.src.k.RevokeAccess(ctx, a)
			})
		}
		if err != nil {
			mu.Lock()
			failed = append(failed, id)
			mu.Unlock()
		}
		return nil
	})
	if len(failed) > 0 {
		sort.Strings(failed)
		msg := fmt.Sprintf("finalized, but revoking access rights on %s failed for %d key(s), e.g. %s", c.src.name, len(failed), failed[0])
		c.log.Warn("cutover: " + msg)
		c.setError(msg)
	}
}

// backfillLoop keeps the source, now the fallback, complete while switched: keys AWS creates on
// the target are copied back to the source as soon as they are noticed. A request for such a key
// can then fall back to the source when the target fails, and a rollback has less to copy.
func (c *Controller) backfillLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	done := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.backfill:
		case <-t.C:
		}
		if c.curState() != StateSwitched {
			return
		}
		type job struct {
			id       string
			from, to *backend
		}
		c.mu.Lock()
		var jobs []job
		for _, id := range c.j.CreatedOnTarget {
			if !done[id] {
				jobs = append(jobs, job{id, c.tgt, c.src})
			}
		}
		// Keys the source answered a CreateKey for after the switch (see the proxy's guard):
		// the target, which serves, must hold them too.
		for _, id := range c.j.CreatedDuring {
			if !done[id] {
				jobs = append(jobs, job{id, c.src, c.tgt})
			}
		}
		c.mu.Unlock()
		for _, jb := range jobs {
			if ctx.Err() != nil {
				return
			}
			have, err := c.attrs(ctx, jb.to, jb.id, controlAttempts)
			if err != nil {
				continue // retried on the next tick
			}
			if have == nil {
				if _, err := c.copyKey(ctx, jb.from, jb.to, jb.id, controlAttempts); err != nil {
					c.log.Warn("cutover: copying a key created during the switch failed; will retry",
						"key_id", jb.id, "from", jb.from.name, "to", jb.to.name, "err", err)
					continue
				}
				c.log.Info("cutover: key created during the switch copied", "key_id", jb.id, "from", jb.from.name, "to", jb.to.name)
			}
			done[jb.id] = true
		}
	}
}

// CopyCreated copies a key that a CreateKey just made (or found) on backend to the other side
// while switched (or rolling back), within ctx. The proxy calls it before replying to AWS, so
// that the key is on both sides before it is first used. Failures are left to the backfill loop.
func (c *Controller) CopyCreated(ctx context.Context, keyID, backend string) {
	st := c.curState()
	if st != StateSwitched && st != StateRollingBack {
		return
	}
	from, to := c.tgt, c.src
	if backend == c.src.name {
		from, to = c.src, c.tgt
	}
	if have, err := c.attrs(ctx, to, keyID, 1); err != nil || have != nil {
		return
	}
	if _, err := c.copyKey(ctx, from, to, keyID, 1); err != nil {
		c.log.Warn("cutover: copying a new key at CreateKey time failed; the backfill will retry",
			"key_id", keyID, "from", from.name, "to", to.name, "err", err)
		return
	}
	c.log.Info("cutover: new key copied at CreateKey time", "key_id", keyID, "from", from.name, "to", to.name)
}
