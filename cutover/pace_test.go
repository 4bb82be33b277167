package cutover

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

func testPace(t *testing.T, cfg PaceConfig) *pace {
	t.Helper()
	if err := cfg.checkAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	m, err := newPaceMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return newPace(cfg, m)
}

// liveTick is a tick of live traffic: n requests, a fraction of them at slow, the rest at fast, and
// the source's attempts at src each.
func liveTick(n int, fast, slow time.Duration, slowShare float64, src time.Duration) tick {
	var t tick
	ns := int(float64(n) * slowShare)
	t.req[latBucket(fast)] = uint32(n - ns)
	t.req[latBucket(slow)] += uint32(ns)
	t.reqN, t.inflight = uint64(n), uint64(2*n)
	t.live[0] = sideSample{n: uint64(n), micros: uint64(n) * uint64(src/time.Microsecond)}
	t.bg[0] = sideSample{n: 40, micros: 40 * 2000}
	t.bg[1] = sideSample{n: 40, micros: 40 * 2000}
	return t
}

// drive runs ticks through the governor, with background work waiting for the pace (it is the
// limit) unless idle; it returns the rate after each tick.
func drive(p *pace, g *governor, active bool, ticks ...tick) []float64 {
	var out []float64
	for _, tk := range ticks {
		p.mu.Lock()
		p.waiting = 1
		p.mu.Unlock()
		p.step(g, tk, active)
		out = append(out, g.rate)
	}
	return out
}

func repeat(t tick, n int) []tick {
	out := make([]tick, n)
	for i := range out {
		out[i] = t
	}
	return out
}

// The pace adapts: a baseline from the traffic before the migration, slow start while there is
// room, a cut as soon as the p99 passes twice the baseline, additive growth after, a harder cut
// when a backend times out, never below the floor, and a member's pressure counts as the
// driver's own.
func TestPaceAdaptsToLiveSignals(t *testing.T) {
	p := testPace(t, PaceConfig{MaxConcurrency: 16})
	g := &governor{rate: paceStart, bgLat: 2 * time.Millisecond, slowStart: true}
	calm := liveTick(400, 3*time.Millisecond, 8*time.Millisecond, 0.005, 2*time.Millisecond)
	drive(p, g, false, repeat(calm, 40)...) // before the migration: the baseline
	if base := time.Duration(median(g.base.p99)); base <= 0 || base > 5*time.Millisecond {
		t.Fatalf("baseline p99 %v", base)
	}
	if st := p.status(); st.LimitedBy != "no migration" {
		t.Errorf("idle: limited by %q", st.LimitedBy)
	}

	rates := drive(p, g, true, repeat(calm, 5)...)
	for i := 1; i < len(rates); i++ {
		if rates[i] != 2*rates[i-1] {
			t.Fatalf("slow start: rates %v, want doubling while there is room", rates)
		}
	}
	if st := p.status(); !strings.HasPrefix(st.LimitedBy, "growing") || st.Concurrency <= 1 {
		t.Errorf("with room: %+v", st)
	}

	before := g.rate
	hot := liveTick(400, 3*time.Millisecond, 40*time.Millisecond, 0.05, 2*time.Millisecond)
	after := drive(p, g, true, hot)[0]
	if after != before*paceCut {
		t.Errorf("p99 over twice the baseline: rate %v → %v, want × %v", before, after, paceCut)
	}
	if st := p.status(); !strings.HasPrefix(st.LimitedBy, "p99") {
		t.Errorf("limited by %q, want the p99", st.LimitedBy)
	}
	rates = drive(p, g, true, repeat(calm, paceSpan+2)...) // the hot tick leaves the figures
	last := rates[len(rates)-1]
	if prev := rates[len(rates)-2]; last != prev*paceGrow+paceGrowStep {
		t.Errorf("after a cut: %v → %v, want additive growth, not slow start", prev, last)
	}

	timeouts := calm
	timeouts.live[0].fails = 3
	before = g.rate
	if after := drive(p, g, true, timeouts)[0]; after != before*paceCutHard {
		t.Errorf("source timing out: rate %v → %v, want × %v", before, after, paceCutHard)
	}
	if st := p.status(); !strings.Contains(st.LimitedBy, "the source timing out") {
		t.Errorf("limited by %q", st.LimitedBy)
	}
	rates = drive(p, g, true, repeat(timeouts, 40)...)
	if floor := p.floor(); rates[len(rates)-1] != floor {
		t.Errorf("under lasting pressure the rate is %v, want the floor %v", rates[len(rates)-1], floor)
	}
	if st := p.status(); !strings.HasSuffix(st.LimitedBy, "(at the floor)") || st.Concurrency != 1 {
		t.Errorf("at the floor: %+v", st)
	}

	// Fleet: another member's traffic says back off.
	drive(p, g, true, repeat(calm, paceSpan+4)...)
	p.peers = func() []MemberPace { return []MemberPace{{Member: "r2", Pressure: "p99 30ms, baseline 4ms"}} }
	before = g.rate
	if after := drive(p, g, true, calm)[0]; after != max(p.floor(), before*paceCut) {
		t.Errorf("a member's pressure: rate %v → %v", before, after)
	}
	if st := p.status(); st.LimitedBy != "member r2: p99 30ms, baseline 4ms" {
		t.Errorf("limited by %q", st.LimitedBy)
	}
	if r := p.report(); r.Pressure != "" {
		t.Errorf("this member publishes %q: another's pressure is not its own", r.Pressure)
	}
}

// A fixed pace does not move, whatever the signals say (status still names them).
func TestPaceFixed(t *testing.T) {
	p := testPace(t, PaceConfig{Rate: 300, MaxConcurrency: 4})
	g := &governor{rate: 300, bgLat: 2 * time.Millisecond}
	calm := liveTick(400, 3*time.Millisecond, 8*time.Millisecond, 0.005, 2*time.Millisecond)
	drive(p, g, false, repeat(calm, 20)...)
	hot := calm
	hot.live[0].fails = 5
	rates := drive(p, g, true, append(repeat(calm, 5), hot)...)
	for _, r := range rates {
		if r != 300 {
			t.Fatalf("fixed pace moved: %v", rates)
		}
	}
	if st := p.status(); st.Mode != "fixed" || st.Concurrency != 4 || !strings.Contains(st.LimitedBy, "timing out") {
		t.Errorf("status %+v", st)
	}
}

// The gate: at most the limit of slots; background work takes up no key while paused (its calls
// in progress go on), urgent work does; live work takes nothing.
func TestPaceGate(t *testing.T) {
	p := testPace(t, PaceConfig{Rate: MaxPaceRate, MinConcurrency: 2, MaxConcurrency: 2})
	ctx := context.Background()
	r1, err := p.slot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := p.slot(ctx)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := p.slot(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third slot of two: %v", err)
	}
	cancel()
	got := make(chan error, 1)
	go func() { _, err := p.slot(ctx); got <- err }()
	r1()
	if err := <-got; err != nil {
		t.Fatalf("a slot freed did not go to the waiter: %v", err)
	}
	// Urgent work has slots of its own: a rollback does not queue behind background work
	// holding every slot the pressure left.
	uctx, ucancel := context.WithTimeout(withClass(ctx, classUrgent), 50*time.Millisecond)
	u1, err := p.slot(uctx)
	if err != nil {
		t.Fatalf("urgent work waited for the background's slots: %v", err)
	}
	u2, _ := p.slot(uctx)
	if _, err := p.slot(uctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third urgent slot of max_concurrency 2: %v", err)
	}
	ucancel()
	u1()
	u2()
	r2()
	live, _ := p.slot(withClass(ctx, classLive))
	live()

	p.setPaused(true)
	bg := make(chan error, 1)
	go func() {
		release, err := p.slot(ctx)
		if err == nil {
			release()
		}
		bg <- err
	}()
	select {
	case err := <-bg:
		t.Fatalf("background work took up a key during a pause: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	urgent, err := p.slot(withClass(ctx, classUrgent))
	if err != nil {
		t.Fatalf("urgent work waited for the pause: %v", err)
	}
	urgent()
	if err := p.call(ctx); err != nil {
		t.Fatalf("a call of a key in progress waited for the pause: %v", err)
	}
	p.setPaused(false)
	if err := <-bg; err != nil {
		t.Fatalf("resume did not let the background work go: %v", err)
	}
}

// pause stops the copy where it is (the keys in flight finish), survives a restart (it is in
// the journal), and resume lets the copy finish; switch and rollback are not paused.
func TestPauseResume(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 30)
	slow := func(cfg *Config) { cfg.Pace.MaxConcurrency = 2 }
	c := e.controller(t, slow)
	ctx := ctxT(t)
	if err := c.SetPaused(ctx, true); !errors.Is(err, ErrWrongState) {
		t.Fatalf("pause with no migration: %v", err)
	}
	e.B.SetFaults(kmsemu.Faults{Latency: 20 * time.Millisecond, KMIPOnly: true})
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	waitCond(t, "some keys copied", func() bool { return c.Status().Keys.Copied >= 2 })
	must(t, c.SetPaused(ctx, true))
	waitCond(t, "the keys in flight done", func() bool { return c.Status().Pace.InUse == 0 })
	copied := c.Status().Keys.Copied
	time.Sleep(300 * time.Millisecond)
	if st := c.Status(); st.Keys.Copied != copied || !st.Pace.Paused || st.State != StateCopying {
		t.Fatalf("paused: %d copied (had %d), pace %+v, state %s", st.Keys.Copied, copied, st.Pace, st.State)
	}
	must(t, e.stop(c)) // the pause is in the journal
	c2 := e.loaded(t, slow)
	e.run(t, c2)
	time.Sleep(300 * time.Millisecond)
	if st := c2.Status(); !st.Pace.Paused || st.Keys.Copied != copied {
		t.Fatalf("after a restart: paused %v, %d copied (had %d)", st.Pace.Paused, st.Keys.Copied, copied)
	}
	e.B.SetFaults(kmsemu.Faults{})
	must(t, c2.SetPaused(ctx, false))
	mustWait(t, c2, StateSwitched)
	e.checkCopies(t, ids)
	must(t, c2.SetPaused(ctx, true))
	must(t, c2.Rollback(ctx, "paused rollbacks still run"))
	if st := c2.Status(); st.State != StateRolledBack {
		t.Fatalf("rollback while paused: %s", st.State)
	}
}

// In fleet mode a key made on the target while switched is copied after the reply only once
// this member and every registered one (an expired one too: it would come back on its epoch)
// applied the switched epoch: until then some replica may route to the source alone.
func TestSettledNeedsEveryMember(t *testing.T) {
	m := &member{view: roster{self: "r1"}}
	set := func(ms ...MemberInfo) { m.view.members.Store(&ms) }
	rec := func(name string, epoch uint64, live bool) MemberInfo {
		return MemberInfo{MemberRecord: MemberRecord{Name: name, AppliedEpoch: epoch}, Live: live}
	}
	m.epochs.epoch.Store(5)
	for _, tc := range []struct {
		name    string
		members []MemberInfo
		want    bool
	}{
		{"not read yet", nil, false},
		{"one behind", []MemberInfo{rec("r1", 5, true), rec("r2", 4, true)}, false},
		{"an expired one behind", []MemberInfo{rec("r1", 5, true), rec("r2", 5, true), rec("r3", 4, false)}, false},
		{"all there", []MemberInfo{rec("r1", 5, true), rec("r2", 6, true), rec("r3", 5, false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.members == nil {
				m.view.members.Store(nil)
			} else {
				set(tc.members...)
			}
			if got := m.settled(5); got != tc.want {
				t.Errorf("settled = %v, want %v", got, tc.want)
			}
		})
	}
	set(rec("r1", 5, true), rec("r2", 5, true))
	m.epochs.epoch.Store(4)
	if m.settled(5) {
		t.Error("settled while this member itself has not applied the epoch")
	}
}

// What live traffic would not notice does not cut the pace: a p99 of a few requests (their
// slowest), or one above twice a small baseline but within a tenth of the budget of it. Past that
// slack it does.
func TestPaceIgnoresNoise(t *testing.T) {
	for _, tc := range []struct {
		name string
		hot  tick
		cut  bool
	}{
		// 30 requests in a tick, 120 over the figure's 2 s: one a tick at 60 ms is the p99.
		{"light traffic, a slow one a tick", liveTick(30, 2*time.Millisecond, 60*time.Millisecond, 0.04, 2*time.Millisecond), true},
		// 20 requests a tick (80 in the figure): too few for a p99, whatever their slowest.
		{"too few for a p99", liveTick(20, 2*time.Millisecond, 200*time.Millisecond, 0.05, 2*time.Millisecond), false},
		{"twice the baseline, within the slack", liveTick(400, 2*time.Millisecond, 15*time.Millisecond, 0.05, 2*time.Millisecond), false},
		{"past the slack", liveTick(400, 2*time.Millisecond, 40*time.Millisecond, 0.05, 2*time.Millisecond), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPace(t, PaceConfig{MaxConcurrency: 16})
			g := &governor{rate: paceStart, bgLat: 2 * time.Millisecond}
			calm := liveTick(400, 2*time.Millisecond, 2*time.Millisecond, 0, 2*time.Millisecond)
			drive(p, g, false, repeat(calm, 40)...)
			drive(p, g, true, repeat(calm, 3)...)
			before := g.rate
			rates := drive(p, g, true, repeat(tc.hot, paceSpan)...)
			cut := false
			for _, r := range rates {
				cut = cut || r < before
				before = r
			}
			if cut != tc.cut {
				t.Fatalf("rates %v (limited by %q): cut %v, want %v", rates, p.status().LimitedBy, cut, tc.cut)
			}
		})
	}
}
