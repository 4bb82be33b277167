package cutover

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Plan actions.
const (
	ActionCopy     = "copy"     // absent on the target: will be copied
	ActionSkip     = "skip"     // identical key already on the target
	ActionConflict = "conflict" // a different key under the same uid on the target: blocks
	ActionError    = "error"    // cannot be migrated (not owned, not found…)
	// ActionUnmovable: the key cannot be exported at all (sensitive, not extractable, wrapped):
	// it blocks the switch, or with [cutover] unmovable = "keep-on-source" it stays served by
	// the source for good.
	ActionUnmovable = "unmovable"
)

// PlanKey is the plan for one key.
type PlanKey struct {
	KeyID  string `json:"key_id"`
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// Plan is what a migration would do, computed without changing anything.
type Plan struct {
	Source string         `json:"source"`
	Target string         `json:"target"`
	Keys   []PlanKey      `json:"keys"`
	Counts map[string]int `json:"counts"`
	// SharedStorage: source and target are nodes over one database; nothing is copied.
	SharedStorage bool     `json:"shared_storage,omitempty"`
	Notes         []string `json:"notes,omitempty"` // for the operator: shared storage, ids never migrated
}

// PlanOptions name the pair to plan; empty names are the controller's own (as in StartOptions).
type PlanOptions struct {
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

// Plan lists the selected keys on the source and compares each with the target. opts, at most
// one (optional so that a plan of the controller's own pair needs none), may name the pair: one
// other than the controller's is refused with ErrOtherPair.
func (c *Controller) Plan(ctx context.Context, opts ...PlanOptions) (*Plan, error) {
	for _, o := range opts {
		if err := c.sides.checkPair(o.Source, o.Target); err != nil {
			return nil, err
		}
	}
	ctx = withClass(ctx, classUrgent) // the operator waits for it: within the pace, never paused
	if err := c.sides.checkAccess(ctx, false); err != nil {
		return nil, err
	}
	shared, err := c.probe.checkShared(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := c.sides.list(ctx, c.sides.src, controlAttempts)
	if err != nil {
		return nil, err
	}
	p := &Plan{Source: c.sides.src.name, Target: c.sides.tgt.name, Keys: make([]PlanKey, 0, len(ids)), Counts: map[string]int{},
		SharedStorage: shared, Notes: c.sides.notes(c.probe.isShared(), c.cfg.Select.Exclude)}
	// A controller built only to plan another pair has no journal of its own.
	if c.book.loaded() {
		h := c.book.header()
		if serving, _ := h.Route(); !h.State.inMigration() && serving != c.sides.src.name {
			// A plan from a backend that no longer serves describes nothing that can start.
			p.Notes = append([]string{fmt.Sprintf("%s serves (state %s, epoch %d): a migration %s → %s cannot start; to migrate from %s, run cutover plan --source %s (or configure [cutover] source = %q)",
				serving, h.State, h.Epoch, c.sides.src.name, c.sides.tgt.name, serving, serving, serving)}, p.Notes...)
		}
	}
	var mu sync.Mutex
	err = c.sides.forEach(ctx, ids, func(ctx context.Context, id string) error {
		pk := PlanKey{KeyID: id, Action: ActionSkip, Reason: SharedStorageNote}
		if !shared {
			pk = c.sides.planKey(ctx, id)
		}
		if n := ownNameNote(id, c.sides.tgt.name, pk.Action == ActionConflict); n != "" {
			pk.Reason = strings.TrimPrefix(pk.Reason+"; "+n, "; ")
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mu.Lock()
		p.Keys = append(p.Keys, pk)
		p.Counts[pk.Action]++
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(p.Keys, func(i, j int) bool { return p.Keys[i].KeyID < p.Keys[j].KeyID })
	return p, nil
}

func (c *sides) planKey(ctx context.Context, id string) PlanKey {
	pk := PlanKey{KeyID: id}
	fail := func(err error) PlanKey {
		var ke *keyError
		pk.Action = ActionError
		if errors.As(err, &ke) && ke.result == ResultConflict {
			pk.Action = ActionConflict
		}
		pk.Reason = truncate(err.Error())
		if ke, ok := isUnmovable(err); ok {
			pk.Action = ActionUnmovable
			pk.Reason = c.unmovableReason(ke.reason)
		}
		return pk
	}
	sa, err := c.attrs(ctx, c.src, id, controlAttempts)
	if err != nil {
		return fail(err)
	}
	if sa == nil {
		return fail(failKey("not found on %s, or the configured identity has no right on it", c.src.name))
	}
	if why := unmovableAttrs(sa); why != "" {
		return fail(unmovableKey("%s", why))
	}
	if sa.ObjectType != "" && sa.ObjectType != "SymmetricKey" {
		return fail(failKey("unsupported object type %s (only symmetric keys migrate)", sa.ObjectType))
	}
	exp, err := c.export(ctx, c.src, id, controlAttempts)
	if err != nil {
		return fail(err)
	}
	defer exp.Wipe()
	ta, err := c.attrs(ctx, c.tgt, id, controlAttempts)
	if err != nil {
		return fail(err)
	}
	if ta == nil {
		pk.Action = ActionCopy
		return pk
	}
	if destroyed(ta.State) {
		return fail(conflictKey("uid is taken on %s by a destroyed object", c.tgt.name))
	}
	same, err := c.sameMaterial(ctx, c.tgt, id, exp.Material, controlAttempts)
	if err != nil {
		return fail(err)
	}
	if !same {
		return fail(conflictKey("a different key with this uid already exists on %s", c.tgt.name))
	}
	pk.Action = ActionSkip
	pk.Reason = "identical key already on " + c.tgt.name
	return pk
}

// unmovableReason is what plan and the copy say of a key that cannot be exported: why, and what
// the configuration makes of it.
func (c *sides) unmovableReason(why string) string {
	if c.sel.Unmovable == UnmovableKeep {
		return truncate(why + "; stays served by " + c.src.name + " for good ([cutover] unmovable = \"keep-on-source\"): " + c.src.name + " cannot be retired while it remains")
	}
	return truncate(why + "; blocks the switch: [cutover] unmovable = \"keep-on-source\" leaves it served by " + c.src.name + " and moves everything else")
}
