package cutover

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// TestStartAndPlanName the pair: a controller starts or plans its own pair (named or not) and
// refuses another with ErrOtherPair, leaving the state as it was; the journal keeps the pair in
// its header, not in the options an earlier release reads.
func TestStartAndPlanNameThePair(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	for _, o := range []PlanOptions{{Source: "B", Target: "C"}, {Source: "A", Target: "C"}, {Target: "A"}} {
		if _, err := c.Plan(ctx, o); !errors.Is(err, ErrOtherPair) {
			t.Errorf("Plan(%+v): %v, want ErrOtherPair", o, err)
		}
		if err := c.Start(ctx, StartOptions{Source: o.Source, Target: o.Target}); !errors.Is(err, ErrOtherPair) {
			t.Errorf("Start(%+v): %v, want ErrOtherPair", o, err)
		}
	}
	if st := c.Status(); st.State != StateServing || st.Epoch != 1 {
		t.Fatalf("a refused pair changed the state: %s epoch %d", st.State, st.Epoch)
	}
	if p, err := c.Plan(ctx, PlanOptions{Source: "A", Target: "B"}); err != nil || p.Source != "A" || p.Target != "B" {
		t.Fatalf("Plan of its own pair: %+v, %v", p, err)
	}
	must(t, c.Start(ctx, StartOptions{Source: "A", Target: "B", NoShadow: true}))
	mustWait(t, c, StateVerified, StateSwitched)
	h, err := ReadJournalHeader(e.journal)
	if err != nil || h == nil {
		t.Fatalf("ReadJournalHeader: %v, %v", h, err)
	}
	if h.Source != "A" || h.Target != "B" || !h.InMigration() || h.Options.Source != "" || h.Options.Target != "" {
		t.Errorf("journal header: %s → %s in migration %v, options %+v", h.Source, h.Target, h.InMigration(), h.Options)
	}
}

// TestStartOptionsPairJSON: the pair travels in the start call's body, and is bounded.
func TestStartOptionsPairJSON(t *testing.T) {
	in := StartOptions{Source: "b", Target: "c", Shadow: time.Second}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out StartOptions
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip of %s: %+v, %v", b, out, err)
	}
	long := `{"source":"` + strings.Repeat("b", 33) + `"}`
	if err := json.Unmarshal([]byte(long), &out); err == nil {
		t.Error("a 33-character backend name was accepted")
	}
}
