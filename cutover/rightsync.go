package cutover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/xksproxy/xksproxy/cosmian"
)

// Rights while switched. The target serves; the source is the fallback and the side a rollback
// returns to. A change the keys' owner makes on the target (a grant, a revoked grant, a revoked
// or destroyed key) is carried to the source as the same change, within one RightsSyncInterval
// plus one pass: the source's list is never replaced wholesale, so a right the owner gave only
// there is never removed, and nobody gains on the source a right the owner did not give on the
// target. The changes are found by comparing the target's access list and state with the last
// ones seen (the baseline, taken when the key was copied); after a restart the first pass takes
// the baseline, so a change made on the target while no controller ran is not carried over
// (a rollback then only adds what the target has and the source lacks).

// keySnap is one key's access list (user → sorted operations) and state on the target.
type keySnap struct {
	acl   map[string][]string
	state string
}

// rightsBase holds a baseline for every migrated key, for as long as a rollback may need it
// (through a finalize), so it is kept packed: one string per key instead of a map of slices
// (BenchmarkRightsBaseMemory: 324 instead of 902 bytes a key).
type rightsBase struct {
	mu   sync.Mutex
	base map[string]packedSnap
}

type packedSnap struct {
	acl   string // packACL's encoding
	state string
}

func newRightsBase() *rightsBase { return &rightsBase{base: map[string]packedSnap{}} }

func (r *rightsBase) get(id string) (keySnap, bool) {
	r.mu.Lock()
	p, ok := r.base[id]
	r.mu.Unlock()
	if !ok {
		return keySnap{}, false
	}
	return keySnap{acl: unpackACL(p.acl), state: p.state}, true
}

// same reports whether id's baseline is s: then a pass has nothing to carry.
func (r *rightsBase) same(id string, s keySnap) bool {
	r.mu.Lock()
	p, ok := r.base[id]
	r.mu.Unlock()
	return ok && p.state == s.state && p.acl == packACL(s.acl)
}

// drop forgets id's baseline: the source's rights were changed by the controller itself (a
// finalize that revoked them), so a rollback must add back what the target holds.
func (r *rightsBase) drop(id string) {
	r.mu.Lock()
	delete(r.base, id)
	r.mu.Unlock()
}

// reset forgets every baseline: a new migration (its sides may be the last one's swapped)
// takes its own, and a stale one would be read as changes the owner never made.
func (r *rightsBase) reset() {
	r.mu.Lock()
	clear(r.base)
	r.base = map[string]packedSnap{} // and give the old table's memory back
	r.mu.Unlock()
}

func (r *rightsBase) set(id string, s keySnap) {
	p := packedSnap{acl: packACL(s.acl), state: s.state}
	r.mu.Lock()
	r.base[id] = p
	r.mu.Unlock()
}

// packACL encodes an access list as users in order, each with its sorted operations, every
// string length-prefixed (a user id may hold any byte). Equal lists give equal strings.
func packACL(acl map[string][]string) string {
	users := make([]string, 0, len(acl))
	n := 0
	for u, ops := range acl {
		users = append(users, u)
		n += len(u) + 2*binary.MaxVarintLen16
		for _, op := range ops {
			n += len(op) + binary.MaxVarintLen16
		}
	}
	sort.Strings(users)
	b := make([]byte, 0, n)
	for _, u := range users {
		b = binary.AppendUvarint(b, uint64(len(u)))
		b = append(b, u...)
		ops := acl[u]
		b = binary.AppendUvarint(b, uint64(len(ops)))
		for _, op := range ops {
			b = binary.AppendUvarint(b, uint64(len(op)))
			b = append(b, op...)
		}
	}
	return string(b)
}

// unpackACL is packACL's inverse; the input is only ever packACL's output.
func unpackACL(s string) map[string][]string {
	acl := map[string][]string{}
	uvarint := func() int {
		var x uint64
		for i, shift := 0, uint(0); i < len(s); i, shift = i+1, shift+7 {
			c := s[i]
			if c < 0x80 {
				s = s[i+1:]
				return int(x | uint64(c)<<shift)
			}
			x |= uint64(c&0x7f) << shift
		}
		panic("cutover: corrupt packed access list") // only packACL's output is ever unpacked
	}
	next := func() string {
		l := uvarint()
		v := s[:l]
		s = s[l:]
		return v
	}
	for len(s) > 0 {
		u := next()
		n := uvarint()
		ops := make([]string, 0, n)
		for range n {
			ops = append(ops, next())
		}
		acl[u] = ops
	}
	return acl
}

// rightsSync carries to the source, while switched, the rights changes the keys' owner makes on
// the target (see above), paced at RightsSyncRate keys a second; a rollback carries the last ones.
// It also revokes the source's rights at a finalize that asks for it.
type rightsSync struct {
	*sides
	base     *rightsBase
	lim      *rate.Limiter
	interval time.Duration
	m        *metrics
	now      func() time.Time
}

// reset forgets every baseline (a new migration, a rollback).
func (c *rightsSync) reset() { c.base.reset() }

// snapshot reads id's access list and state on b; a missing key is (nil, nil).
func (c *rightsSync) snapshot(ctx context.Context, b *backend, id string, attempts int) (*keySnap, error) {
	a, err := c.attrs(ctx, b, id, attempts)
	if err != nil || a == nil {
		return nil, err
	}
	list, err := retry(ctx, c.sides, b, attempts, "list access on "+b.name, func(ctx context.Context) ([]cosmian.UserAccess, error) {
		return b.k.ListAccess(ctx, id)
	})
	if err != nil {
		return nil, wrapKMS(err, "list access on %s", b.name)
	}
	s := &keySnap{acl: map[string][]string{}, state: a.State}
	for _, ua := range list {
		s.acl[ua.UserID] = append(s.acl[ua.UserID], ua.Operations...)
	}
	for u, ops := range s.acl {
		sort.Strings(ops)
		s.acl[u] = slices.Compact(ops)
	}
	return s, nil
}

// noteBaseline records the target's rights on id right after a copy (either direction).
func (c *rightsSync) noteBaseline(ctx context.Context, id string, attempts int) {
	s, err := c.snapshot(ctx, c.tgt, id, attempts)
	if err != nil || s == nil {
		return // the first sync pass takes it
	}
	c.base.set(id, *s)
}

// loop carries the target's rights changes to the source while switched.
func (c *rightsSync) loop(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if c.book.state() != StateSwitched {
			return
		}
		c.pass(ctx, controlAttempts)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncIDs lists the keys present on both sides as far as the journal knows.
func (c *rightsSync) syncIDs() []string {
	ids := c.book.keyIDs(isCopied)
	during, onTarget := c.book.createdKeys()
	ids = append(append(ids, during...), onTarget...)
	sort.Strings(ids)
	return slices.Compact(ids)
}

// pass runs syncRights over every key, RightsSyncRate keys a second at most and within the
// pace, so the serving backend stays free for live traffic; failures are retried on the next
// pass. A key waits for the rate before it takes a slot of the pace: the slots go to work, not
// to waiting.
func (c *rightsSync) pass(ctx context.Context, attempts int) {
	start := c.now()
	defer func() { c.m.rightsSyncPass.Set(c.now().Sub(start).Seconds()) }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, id := range c.syncIDs() {
		if err := c.lim.Wait(ctx); err != nil || c.book.state() != StateSwitched {
			return // cancelled, or a rollback or finalize (which sync themselves) ended the switch
		}
		release, err := c.pace.slot(ctx)
		if err != nil {
			return
		}
		wg.Go(func() {
			defer release()
			if err := c.syncRights(ctx, id, attempts, false); err != nil && ctx.Err() == nil {
				c.log.Warn("cutover: carrying a rights change to the source failed; will retry", "key_id", id, "err", truncate(err.Error()))
			}
		})
	}
}

// syncRights carries to the source what changed on the target for id since its baseline. With
// no baseline it takes one (noBaseAdd: and also grants on the source what the target has and
// the source lacks, never removing anything: used by a rollback).
func (c *rightsSync) syncRights(ctx context.Context, id string, attempts int, noBaseAdd bool) error {
	cur, err := c.snapshot(ctx, c.tgt, id, attempts)
	if err != nil || cur == nil {
		return err // a key gone from the target: nothing to carry (it is not destroyed on the source on a guess)
	}
	if c.base.same(id, *cur) {
		return nil // nothing changed on the target since the last pass
	}
	base, ok := c.base.get(id)
	if !ok {
		if !noBaseAdd {
			c.base.set(id, *cur)
			return nil
		}
		src, err := c.snapshot(ctx, c.src, id, attempts)
		if err != nil {
			return err
		}
		if src == nil {
			return failKey("missing on %s", c.src.name)
		}
		base = *src // only additions: whatever the source holds is "already there"
		base.state = src.state
	}
	// Grants and revoked grants, user by user.
	users := make([]string, 0, len(cur.acl)+len(base.acl))
	for u := range cur.acl {
		users = append(users, u)
	}
	for u := range base.acl {
		users = append(users, u)
	}
	sort.Strings(users)
	users = slices.Compact(users)
	for _, u := range users {
		if add := missing(cur.acl[u], base.acl[u]); len(add) > 0 {
			a := cosmian.Access{UID: id, UserID: u, Operations: add}
			if err := retryErr(ctx, c.sides, c.src, attempts, "grant on "+c.src.name, func(ctx context.Context) error { return c.src.k.Grant(ctx, a) }); err != nil {
				return wrapKMS(err, "grant %v to %q on %s", add, u, c.src.name)
			}
			c.m.rightsCarried.WithLabelValues("grant").Inc()
			c.log.Info("cutover: grant made on the target carried to the source", "key_id", id, "user", u, "ops", add)
		}
		if ok {
			if del := missing(base.acl[u], cur.acl[u]); len(del) > 0 {
				a := cosmian.Access{UID: id, UserID: u, Operations: del}
				err := retryErr(ctx, c.sides, c.src, attempts, "revoke access on "+c.src.name, func(ctx context.Context) error { return c.src.k.RevokeAccess(ctx, a) })
				if err != nil && !errors.Is(err, cosmian.ErrNotFound) {
					return wrapKMS(err, "revoke %v from %q on %s", del, u, c.src.name)
				}
				c.m.rightsCarried.WithLabelValues("revoke_access").Inc()
				c.log.Info("cutover: grant revoked on the target carried to the source", "key_id", id, "user", u, "ops", del)
			}
		}
	}
	// Key state: a revocation, a destruction.
	if (revoked(cur.state) || destroyed(cur.state)) && !revoked(base.state) && !destroyed(base.state) {
		sa, err := c.attrs(ctx, c.src, id, attempts)
		if err != nil {
			return err
		}
		if sa != nil && !revoked(sa.State) && !destroyed(sa.State) {
			reason := revokeReason(cur.state)
			if cur.state == cosmian.StateDestroyedCompromised {
				reason = "KeyCompromise"
			}
			if err := retryErr(ctx, c.sides, c.src, attempts, "revoke on "+c.src.name, func(ctx context.Context) error {
				return c.src.k.Revoke(ctx, id, reason, "revoked on "+c.tgt.name+" after the switch; replicated by xksproxy cutover")
			}); err != nil {
				return wrapKMS(err, "revoke on %s", c.src.name)
			}
			c.m.rightsCarried.WithLabelValues("revoke_key").Inc()
			c.log.Info("cutover: key revoked on the target; revoked on the source too", "key_id", id, "state", cur.state)
		}
	}
	if destroyed(cur.state) && !destroyed(base.state) {
		sa, err := c.attrs(ctx, c.src, id, attempts)
		if err != nil {
			return err
		}
		if sa != nil && !destroyed(sa.State) {
			if err := retryErr(ctx, c.sides, c.src, attempts, "destroy on "+c.src.name, func(ctx context.Context) error { return c.src.k.Destroy(ctx, id, false) }); err != nil {
				return wrapKMS(err, "destroy on %s", c.src.name)
			}
			c.m.rightsCarried.WithLabelValues("destroy").Inc()
			c.log.Info("cutover: key destroyed on the target; destroyed on the source too", "key_id", id)
		}
	}
	c.base.set(id, *cur)
	return nil
}

// revokeSource removes, on the source, every access right of the
// migrated keys. Failures are reported, not fatal: the route no longer
// reaches the source.
func (c *rightsSync) revokeSource(ctx context.Context) {
	ids := c.book.keyIDs(isCopied) // never a kept key: the source still serves it
	var mu sync.Mutex
	var failed []string
	_ = c.forEach(ctx, ids, func(ctx context.Context, id string) error {
		list, err := retry(ctx, c.sides, c.src, controlAttempts, "list access on "+c.src.name, func(ctx context.Context) ([]cosmian.UserAccess, error) {
			return c.src.k.ListAccess(ctx, id)
		})
		for _, ua := range list {
			if err != nil {
				break
			}
			c.base.drop(id)
			a := cosmian.Access{UID: id, UserID: ua.UserID, Operations: ua.Operations}
			err = retryErr(ctx, c.sides, c.src, controlAttempts, "revoke access on "+c.src.name, func(ctx context.Context) error {
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
		c.book.setError(msg)
	}
}
