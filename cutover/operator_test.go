package cutover

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// What the operator is told: a refused finalize says what probation still waits for, a new
// migration starts its own shadow figures, a plan from a backend that no longer serves says so,
// and a single process exports no fleet gauges.
func TestOperatorFacingStatus(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	reg := prometheus.NewRegistry()
	c := e.controller(t, func(cfg *Config) { cfg.Registry = reg })
	ctx := ctxT(t)

	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "xks_fleet_") {
			t.Errorf("a single process exports %s", mf.GetName())
		}
	}

	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	err = c.Finalize(ctx, FinalizeOptions{})
	if err == nil || !strings.Contains(err.Error(), "of its 1h0m0s left") || !strings.Contains(err.Error(), "0 of the 20 requests it needs reached B") {
		t.Errorf("finalize before probation: %v", err)
	}
	tr := c.Traffic()
	for range 25 {
		tr.Observe("B", xks.ErrorName(""), time.Millisecond, false)
	}
	err = c.Finalize(ctx, FinalizeOptions{})
	if err == nil || !strings.Contains(err.Error(), "left") || !strings.Contains(err.Error(), "the 20 requests it needs reached B (25 so far)") {
		t.Errorf("finalize with the requests but not the time: %v", err)
	}

	c.shadow.count("match", &c.shadow.n.match)
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test"}))
	p, err := c.Plan(ctx)
	must(t, err)
	if len(p.Notes) == 0 || !strings.Contains(p.Notes[0], "B serves (state finalized") || !strings.Contains(p.Notes[0], `source = "B"`) {
		t.Errorf("plan after finalize: notes %q", p.Notes)
	}
	must(t, c.Rollback(ctx, "test"))
	if st := c.Status(); st.Shadow.Match != 1 {
		t.Fatalf("setup: shadow %+v", st.Shadow)
	}
	must(t, c.Start(ctx, StartOptions{}))
	if st := c.Status(); st.Shadow != (ShadowStats{}) {
		t.Errorf("a new migration shows the last one's shadow figures: %+v", st.Shadow)
	}
}
