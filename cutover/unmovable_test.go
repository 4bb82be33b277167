package cutover

import (
	"slices"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// A key Cosmian 5.28 will not export (Extractable = false) cannot move. Plan names it; by
// default it blocks the switch, named; with unmovable = "keep-on-source" everything else moves,
// the key stays served by the source through a route of its own that survives finalize and a
// restart, finalize neither copies it nor revokes its grants on the source, and a rollback drops
// the route (the source serves it anyway).
func TestUnmovableKeys(t *testing.T) {
	no := false
	seed := func(t *testing.T) (*env, []string) {
		e := newEnvGen(t, kmsemu.Cosmian528, kmsemu.Cosmian528, false)
		ids := seedMixed(t, e.A, 6)
		must(t, e.A.CreateKey("admin", "locked", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}, Extractable: &no}))
		must(t, e.A.GrantAccess("admin", "locked", "arn:aws:iam::123456789012:user/Alice", xksServiceOps...))
		return e, ids
	}

	t.Run("block", func(t *testing.T) {
		e, _ := seed(t)
		c := e.controller(t, nil)
		ctx := ctxT(t)
		p, err := c.Plan(ctx)
		must(t, err)
		i := slices.IndexFunc(p.Keys, func(k PlanKey) bool { return k.KeyID == "locked" })
		if i < 0 || p.Keys[i].Action != ActionUnmovable || !strings.Contains(p.Keys[i].Reason, "blocks the switch") ||
			!strings.Contains(p.Keys[i].Reason, "Extractable = false") {
			t.Fatalf("plan: %+v", p.Keys)
		}
		must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
		st := mustWait(t, c, StateCopyFailed, StateSwitched)
		if st.State != StateCopyFailed || !slices.ContainsFunc(st.Failures, func(f KeyFailure) bool { return f.KeyID == "locked" }) {
			t.Fatalf("state %s failures %+v", st.State, st.Failures)
		}
		if on := c.Traffic().KeptOn("locked"); on != "" {
			t.Errorf("kept on %q without keep-on-source", on)
		}
	})

	t.Run("keep-on-source", func(t *testing.T) {
		e, ids := seed(t)
		keep := func(cfg *Config) {
			cfg.Select.Unmovable = UnmovableKeep
			cfg.RevokeSourceGrantsOnFinalize = true
		}
		c := e.controller(t, keep)
		ctx := ctxT(t)
		p, err := c.Plan(ctx)
		must(t, err)
		if i := slices.IndexFunc(p.Keys, func(k PlanKey) bool { return k.KeyID == "locked" }); i < 0 ||
			p.Keys[i].Action != ActionUnmovable || !strings.Contains(p.Keys[i].Reason, "stays served by A") {
			t.Fatalf("plan: %+v", p.Keys)
		}
		must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
		st := mustWait(t, c, StateSwitched, StateCopyFailed, StateVerifyFailed)
		if st.State != StateSwitched || st.Keys.Kept != 1 || len(st.Kept) != 1 || st.Kept[0].ID != "locked" || st.Kept[0].On != "A" {
			t.Fatalf("state %s keys %+v kept %+v failures %+v", st.State, st.Keys, st.Kept, st.Failures)
		}
		if on := c.Traffic().KeptOn("locked"); on != "A" {
			t.Errorf("locked is routed to %q, want A", on)
		}
		if on := c.Traffic().KeptOn(ids[0]); on != "" {
			t.Errorf("a key that moved is kept on %q", on)
		}
		if _, ok := e.B.Object("locked"); ok {
			t.Error("the key that cannot be exported is on B")
		}
		must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test"}))
		if st := c.Status(); st.State != StateFinalized {
			t.Fatalf("finalize: %s %q", st.State, st.LastError)
		}
		e.checkCopies(t, ids[:2])
		if ops := e.A.Access("locked")["arn:aws:iam::123456789012:user/Alice"]; len(ops) != 3 {
			t.Errorf("finalize revoked the kept key's grants on A: %v", ops)
		}
		// A restart keeps the route: it lives in the journal.
		must(t, e.stop(c))
		must(t, c.Close())
		c2 := e.controller(t, keep)
		if on := c2.Traffic().KeptOn("locked"); on != "A" {
			t.Fatalf("after a restart locked is routed to %q, want A", on)
		}
		must(t, c2.Rollback(ctx, "test"))
		if st := c2.Status(); st.State != StateRolledBack || len(st.Kept) != 0 {
			t.Errorf("after the rollback: %s kept %+v", st.State, st.Kept)
		}
	})
}
