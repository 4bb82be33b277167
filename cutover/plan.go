package cutover

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
)

// Plan actions.
const (
	ActionCopy     = "copy"     // absent on the target: will be copied
	ActionSkip     = "skip"     // identical key already on the target
	ActionConflict = "conflict" // a different key under the same uid on the target: blocks
	ActionError    = "error"    // cannot be migrated (sensitive, wrapped, not owned…)
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

// Plan lists the selected keys on the source and compares each with the target.
func (c *Controller) Plan(ctx context.Context) (*Plan, error) {
	ctx = withClass(ctx, classUrgent) // the operator waits for it: within the pace, never paused
	shared, err := c.probe.checkShared(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := c.sides.list(ctx, c.sides.src, controlAttempts)
	if err != nil {
		return nil, err
	}
	p := &Plan{Source: c.sides.src.name, Target: c.sides.tgt.name, Keys: make([]PlanKey, 0, len(ids)), Counts: map[string]int{},
		SharedStorage: shared, Notes: c.notes()}
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
		return pk
	}
	sa, err := c.attrs(ctx, c.src, id, controlAttempts)
	if err != nil {
		return fail(err)
	}
	if sa == nil {
		return fail(failKey("not found on %s, or the configured identity has no right on it", c.src.name))
	}
	if sa.Sensitive {
		return fail(failKey("sensitive key: cannot be exported"))
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
