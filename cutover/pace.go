package cutover

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// The pace is the one budget every piece of background work draws from: the copy, the
// verification, the catch-up, the backfill, the rights sync, the rollback's copy back and the
// markers' writes. Each backend call they make takes a token (the rate: background calls a
// second) and each key they work on holds a slot (the concurrency). With pace = "auto" the rate
// adapts every tick to live signals, like TCP's congestion control (AIMD) on a delay signal:
// it is cut back when live traffic shows the first sign of the migration's load (the requests'
// p99 or in-flight count above the baseline taken before the migration, a backend's own latency
// above its baseline, a backend timing out or failing) and grows back a little every tick while
// there is room. It never goes below a floor, so the migration finishes. In fleet mode the
// driver also backs off on what any member's traffic says (members publish it each second).
//
// Work is of three classes (the context says which): background (`cutover pause` stops it from
// taking up another key; the keys in progress finish),
// urgent (a switch, rollback or finalize the operator or the probation asked for: counted in the
// budget, never paused, it takes its tokens ahead of the background's) and live (the request
// path's own checks and copies: not paced at all).

// PaceConfig bounds the pace.
type PaceConfig struct {
	// Rate: 0 adapts to live signals ("auto"); above 0, a fixed number of background backend
	// calls a second.
	Rate float64
	// MinConcurrency and MaxConcurrency bound the keys worked on at once (defaults 1 and
	// DefaultConcurrency). The floor rate is paceFloorPerSlot calls a second per MinConcurrency.
	MinConcurrency, MaxConcurrency int
	// RequestBudget is the proxy's per-request budget (default 250 ms): live p99 above
	// paceBudgetShare of it is pressure whatever the baseline, and a CreateKey sent under a
	// previous route is over once it has passed (rollback.go).
	RequestBudget time.Duration
}

const (
	paceTick         = 500 * time.Millisecond
	paceSpan         = 4    // ticks a figure covers (2 s)
	paceFloorPerSlot = 10.0 // calls a second per MinConcurrency slot at the floor
	paceStart        = 50.0 // calls a second at the start of a migration (auto)
	paceGrow         = 1.05 // × per tick with room, plus paceGrowStep
	paceGrowStep     = 2.0
	paceCut          = 0.7 // × on pressure
	paceCutHard      = 0.5 // × on timeouts or errors
	paceBudgetShare  = 0.4 // live p99 above this share of the budget is pressure
	paceSlackShare   = 0.1 // and above twice the baseline plus this share of it
	paceMaxPerSlot   = 1000.0
)

type paceClass int

const (
	classBackground paceClass = iota
	classUrgent
	classLive
)

type paceClassKey struct{}

// withClass marks ctx's work as of class c.
func withClass(ctx context.Context, c paceClass) context.Context {
	return context.WithValue(ctx, paceClassKey{}, c)
}

func classOf(ctx context.Context) paceClass {
	c, _ := ctx.Value(paceClassKey{}).(paceClass)
	return c
}

// pace gates the background work and adapts its budget (the loop).
type pace struct {
	cfg   PaceConfig
	sig   signals
	lim   *rate.Limiter
	m     *paceMetrics
	keys  atomic.Uint64 // keys copied or verified in the background (keys/s)
	calls atomic.Uint64 // tokens taken since the last tick
	// peers are the other live members' reports (fleet mode; nil: one process).
	peers func() []MemberPace

	mu       sync.Mutex
	limit    int // slots
	inUse    int
	urgent   int  // slots urgent work holds: its own, up to max_concurrency
	waiting  int  // work waiting for a slot or a token
	paused   bool // `cutover pause`: background work waits
	wake     chan struct{}
	state    PaceStatus // what status shows (the loop updates it)
	reported MemberPace // this member's signals, for the heartbeat
}

func newPace(cfg PaceConfig, m *paceMetrics) *pace {
	p := &pace{cfg: cfg, m: m, wake: make(chan struct{}), limit: cfg.MinConcurrency}
	r := paceStart
	if cfg.Rate > 0 {
		r, p.limit = cfg.Rate, cfg.MaxConcurrency
	}
	r = max(r, p.floor())
	p.lim = rate.NewLimiter(rate.Limit(r), max(1, int(r/20)))
	p.state = PaceStatus{Mode: p.mode(), CallsPerSecond: round2(r), Concurrency: p.limit,
		MinConcurrency: cfg.MinConcurrency, MaxConcurrency: cfg.MaxConcurrency}
	return p
}

func (p *pace) mode() string {
	if p.cfg.Rate > 0 {
		return "fixed"
	}
	return "auto"
}

func (p *pace) floor() float64 { return paceFloorPerSlot * float64(p.cfg.MinConcurrency) }

func (p *pace) ceiling() float64 {
	if p.cfg.Rate > 0 {
		return p.cfg.Rate
	}
	return paceMaxPerSlot * float64(p.cfg.MaxConcurrency)
}

// broadcast wakes whoever waits for a slot or the end of a pause. The caller holds mu.
func (p *pace) broadcastLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// slot takes one of the slots (a key worked on) for ctx's class, waiting while they are all
// taken or, for background work, while paused. Live work takes none. Urgent work (a rollback,
// a switch's or a finalize's pass, a plan) has slots of its own, up to max_concurrency whatever
// the adaptive limit is: a rollback set off because the target fails must not queue behind the
// backfill holding the one slot the pressure left to the background.
func (p *pace) slot(ctx context.Context) (release func(), err error) {
	cls := classOf(ctx)
	if cls == classLive {
		return func() {}, nil
	}
	busy := func() bool { return p.inUse >= p.limit || (p.paused && cls == classBackground) }
	held := &p.inUse
	if cls == classUrgent {
		busy = func() bool { return p.urgent >= p.cfg.MaxConcurrency }
		held = &p.urgent
	}
	p.mu.Lock()
	counted := false
	for busy() {
		if !counted {
			p.waiting++
			counted = true
		}
		w := p.wake
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.waiting--
			p.mu.Unlock()
			return nil, ctx.Err()
		case <-w:
		}
		p.mu.Lock()
	}
	if counted {
		p.waiting--
	}
	*held++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			*held--
			p.broadcastLocked()
			p.mu.Unlock()
		})
	}, nil
}

// call takes a token for one backend call of ctx's class: background work waits for it, urgent
// work takes it at once (the background's next tokens come later), live work takes none. A
// pause does not stop a call: the key it belongs to finishes (slot stops the next one).
func (p *pace) call(ctx context.Context) error {
	switch classOf(ctx) {
	case classLive:
		return nil
	case classUrgent:
		p.calls.Add(1)
		p.lim.Reserve()
		return nil
	}
	p.mu.Lock()
	p.waiting++
	p.mu.Unlock()
	err := p.lim.Wait(ctx)
	p.mu.Lock()
	p.waiting--
	p.mu.Unlock()
	if err != nil {
		return ctx.Err()
	}
	p.calls.Add(1)
	return nil
}

// unpaused waits while the pace is paused.
func (p *pace) unpaused(ctx context.Context) error {
	for {
		p.mu.Lock()
		paused, w := p.paused, p.wake
		p.mu.Unlock()
		if !paused {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
		}
	}
}

// setPaused pauses or resumes the background work.
func (p *pace) setPaused(paused bool) {
	p.mu.Lock()
	if p.paused != paused {
		p.paused = paused
		p.broadcastLocked()
	}
	p.mu.Unlock()
	p.m.paused.Set(b2f(paused))
}

// observeCall records one background call to side s: its time, and whether it failed in a way
// that says the backend is overloaded or out of reach.
func (p *pace) observeCall(s side, d time.Duration, transient bool) {
	p.sig.bg[s-sideSource].add(d, transient)
}

// keyDone counts a key copied or verified in the background.
func (p *pace) keyDone() { p.keys.Add(1) }

// governor is the loop's own state: the last ticks, the baseline, the smoothed figures.
type governor struct {
	ticks     []tick
	base      baseline
	bgLat     time.Duration // smoothed background call latency
	keysRate  float64       // smoothed keys a second
	lastKeys  uint64
	rate      float64
	active    bool // a migration ran at the last tick
	slowStart bool // double each tick with room until the first pressure
}

// loop adapts the pace every tick until ctx ends: active says whether a migration is in
// progress (the baseline is taken only while none is), paused whether the journal says so.
func (p *pace) loop(ctx context.Context, active, paused func() bool) {
	t := time.NewTicker(paceTick)
	defer t.Stop()
	g := &governor{rate: float64(p.lim.Limit()), bgLat: 5 * time.Millisecond, slowStart: true}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.setPaused(paused())
		p.step(g, p.sig.take(), active())
	}
}

// step is one tick of the governor.
func (p *pace) step(g *governor, tk tick, active bool) {
	g.ticks = append(g.ticks, tk)
	if len(g.ticks) > paceSpan {
		g.ticks = g.ticks[1:]
	}
	f := sum(g.ticks)
	if active && !g.active {
		g.base.bgMin = [2]time.Duration{} // a new migration: its own lowest background latency
		g.rate = max(p.floor(), min(paceStart, p.ceiling()))
		g.slowStart = true
		if p.cfg.Rate > 0 {
			g.rate = p.cfg.Rate
		}
	}
	g.active = active
	if !active {
		g.base.note(f)
	} else {
		g.base.noteBackground(f)
	}
	if f.busy {
		n := f.bg[0].n + f.bg[1].n
		m := time.Duration((f.bg[0].micros+f.bg[1].micros)/n) * time.Microsecond
		g.bgLat = (4*g.bgLat + m) / 5
	}
	keys := p.keys.Load()
	g.keysRate = 0.9*g.keysRate + 0.1*float64(keys-g.lastKeys)/paceTick.Seconds()
	g.lastKeys = keys
	calls := p.calls.Swap(0)

	pressure, hard := p.pressure(&g.base, f)
	local := pressure
	if pressure == "" && p.peers != nil {
		for _, q := range p.peers() {
			if q.Pressure != "" {
				pressure, hard = "member "+q.Member+": "+q.Pressure, q.Hard
				break
			}
		}
	}
	p.mu.Lock()
	waiting, full, paused := p.waiting > 0, p.inUse >= p.limit, p.paused
	p.mu.Unlock()
	bound := waiting || float64(calls) >= 0.8*g.rate*paceTick.Seconds()
	limited := "the work: nothing waits for the pace"
	switch {
	case paused:
		limited = "paused (xksproxy cutover resume)"
	case p.cfg.Rate > 0:
		limited = fmt.Sprintf("fixed rate (pace = %g)", p.cfg.Rate)
		if pressure != "" {
			limited += "; " + pressure
		}
	case pressure != "":
		cut := paceCut
		if hard {
			cut = paceCutHard
		}
		g.rate = max(p.floor(), g.rate*cut)
		g.slowStart = false
		limited = pressure
		if g.rate == p.floor() {
			limited += " (at the floor)"
		}
		p.m.backoffs.WithLabelValues(category(pressure)).Inc()
	case bound && full && p.limitFor(g) >= p.cfg.MaxConcurrency:
		limited = fmt.Sprintf("max_concurrency (%d)", p.cfg.MaxConcurrency)
	case bound:
		if g.slowStart {
			g.rate = min(p.ceiling(), 2*g.rate) // TCP's slow start, until the first pressure
		} else {
			g.rate = min(p.ceiling(), g.rate*paceGrow+paceGrowStep)
		}
		limited = "growing: live traffic shows room"
	}
	if !active && !paused {
		limited = "no migration"
		if p.cfg.Rate == 0 {
			g.rate = max(p.floor(), min(paceStart, p.ceiling()))
		}
	}
	p.lim.SetLimit(rate.Limit(g.rate))
	p.lim.SetBurst(max(1, int(g.rate/20)))
	limit := p.limitFor(g)
	p.mu.Lock()
	if limit > p.limit {
		p.broadcastLocked()
	}
	p.limit = limit
	p.state = PaceStatus{Mode: p.mode(), Paused: paused, CallsPerSecond: round2(g.rate), Concurrency: limit,
		InUse: p.inUse, MinConcurrency: p.cfg.MinConcurrency, MaxConcurrency: p.cfg.MaxConcurrency,
		LimitedBy: limited, Limit: category(limited), KeysPerSecond: round2(g.keysRate), P99: f.p99, BaselineP99: time.Duration(median(g.base.p99))}
	if math.IsNaN(median(g.base.p99)) {
		p.state.BaselineP99 = 0
	}
	p.reported = MemberPace{Pressure: local, Hard: hard && local != "", P99: f.p99, BaselineP99: p.state.BaselineP99}
	p.mu.Unlock()
	p.m.set(&p.state, category(limited))
}

// limitFor is the concurrency the rate needs: enough slots to make rate calls a second at the
// background's latency (twice over, for the calls between them), within the bounds.
func (p *pace) limitFor(g *governor) int {
	if p.cfg.Rate > 0 {
		return p.cfg.MaxConcurrency
	}
	n := int(math.Ceil(g.rate * g.bgLat.Seconds() * 2))
	return min(max(n, p.cfg.MinConcurrency), p.cfg.MaxConcurrency)
}

// pressure says whether f shows the migration's load on live traffic or the backends, and
// whether it is hard (timeouts, errors): "" when there is room.
func (p *pace) pressure(b *baseline, f figures) (reason string, hard bool) {
	names := [2]string{"the source", "the target"}
	for s := range 2 {
		if f.live[s].fails > 0 {
			return fmt.Sprintf("%s timing out or failing (%d of %d live attempts)", names[s], f.live[s].fails, f.live[s].n), true
		}
		if f.bg[s].fails > 0 {
			return fmt.Sprintf("%s timing out or failing (%d of %d background calls)", names[s], f.bg[s].fails, f.bg[s].n), true
		}
	}
	budget := time.Duration(paceBudgetShare * float64(p.cfg.RequestBudget))
	if f.enough {
		base := time.Duration(median(b.p99))
		if f.p99 > budget {
			return fmt.Sprintf("p99 %s above %.0f%% of the request budget", f.p99.Round(100*time.Microsecond), 100*paceBudgetShare), false
		}
		// The slack: 2 ms against 1.7 ms is twice the baseline, and nothing AWS's clients
		// notice within their 250 ms; a tenth of the budget above the baseline is.
		if len(b.p99) > 0 && f.p99 > max(2*base, base+time.Duration(paceSlackShare*float64(p.cfg.RequestBudget))) {
			return fmt.Sprintf("p99 %s, baseline %s", f.p99.Round(100*time.Microsecond), base.Round(100*time.Microsecond)), false
		}
		if bi := median(b.inflight); len(b.inflight) > 0 && f.inflight > max(3*bi, bi+16) {
			return fmt.Sprintf("%.1f requests in flight, baseline %.1f", f.inflight, bi), false
		}
	}
	for s := range 2 {
		if base := time.Duration(median(b.live[s])); len(b.live[s]) > 0 && f.liveN[s] >= minAttempts {
			if m := f.live[s].mean(); m > max(2*base, base+5*time.Millisecond) {
				return fmt.Sprintf("%s answering live traffic in %s, baseline %s", names[s], m.Round(100*time.Microsecond), base.Round(100*time.Microsecond)), false
			}
		}
		if base := b.bgMin[s]; base > 0 && f.bgN[s] >= minCalls {
			if m := f.bg[s].mean(); m > max(3*base, base+20*time.Millisecond) {
				return fmt.Sprintf("%s answering the migration's calls in %s, at best %s", names[s], m.Round(100*time.Microsecond), base.Round(100*time.Microsecond)), false
			}
		}
	}
	return "", false
}

// category is a reason's metric label.
func category(reason string) string {
	for _, c := range []struct{ prefix, label string }{
		{"paused", "paused"}, {"fixed", "fixed"}, {"member", "member"}, {"p99", "p99"},
		{"max_concurrency", "max_concurrency"}, {"growing", "growing"}, {"the work", "work"}, {"no migration", "idle"},
	} {
		if strings.HasPrefix(reason, c.prefix) {
			return c.label
		}
	}
	switch {
	case strings.Contains(reason, "in flight"):
		return "in_flight"
	case strings.Contains(reason, "timing out"):
		return "errors"
	case strings.Contains(reason, "answering"):
		return "latency"
	}
	return "other"
}

// status is the pace as status shows it.
func (p *pace) status() PaceStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state
	st.InUse, st.Paused = p.inUse, p.paused
	return st
}

// report is this member's signals, for its heartbeat.
func (p *pace) report() MemberPace {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reported
}

// PaceStatus is the pace as `cutover status` shows it.
type PaceStatus struct {
	Mode           string  `json:"mode"` // auto | fixed
	Paused         bool    `json:"paused"`
	CallsPerSecond float64 `json:"calls_per_second"` // the background's budget now
	Concurrency    int     `json:"concurrency"`      // keys worked on at once, at most, now
	InUse          int     `json:"in_use"`
	MinConcurrency int     `json:"min_concurrency"`
	MaxConcurrency int     `json:"max_concurrency"`
	// LimitedBy says what holds the pace where it is: a live signal, the floor, the bounds, a
	// pause, or the work itself.
	LimitedBy string `json:"limited_by"`
	// Limit is LimitedBy's category, the label of xks_cutover_pace_limited (for scripts).
	Limit         string        `json:"limit"`
	KeysPerSecond float64       `json:"keys_per_second"`
	TimeLeft      time.Duration `json:"time_left_ns,omitempty"` // copying or verifying: at the current keys a second
	P99           time.Duration `json:"p99_ns,omitempty"`       // live requests' p99 over the last 2 s (this replica)
	BaselineP99   time.Duration `json:"baseline_p99_ns,omitempty"`
}

// MemberPace is what a member publishes of its live traffic for the driver's pace.
type MemberPace struct {
	Member      string        `json:"-"`
	Pressure    string        `json:"pressure,omitempty"` // why this member's traffic says back off ("": room)
	Hard        bool          `json:"hard,omitempty"`
	P99         time.Duration `json:"p99_ns,omitempty"`
	BaselineP99 time.Duration `json:"baseline_p99_ns,omitempty"`
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// paceMetrics export the pace.
type paceMetrics struct {
	rate     prometheus.Gauge
	conc     prometheus.Gauge
	paused   prometheus.Gauge
	left     prometheus.Gauge
	keys     prometheus.Gauge
	limited  *prometheus.GaugeVec
	backoffs *prometheus.CounterVec
	mu       sync.Mutex
	last     string
}

func newPaceMetrics(reg prometheus.Registerer) (*paceMetrics, error) {
	m := &paceMetrics{
		rate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_pace_calls_per_second",
			Help: "The migration's background budget now: backend calls a second for the copy, verification, catch-up, backfill, rights sync, copy back and markers."}),
		conc: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_pace_concurrency",
			Help: "Keys the migration's background work may work on at once now (between min_concurrency and max_concurrency)."}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_paused",
			Help: "1 while the migration's background work is paused (xksproxy cutover pause)."}),
		left: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_time_left_seconds",
			Help: "While copying or verifying: the keys left at the current keys a second (0 when it cannot tell)."}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_cutover_keys_per_second",
			Help: "Keys copied or verified a second by the background work (smoothed)."}),
		limited: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_cutover_pace_limited",
			Help: "1 for what holds the pace now: p99, in_flight, latency, errors, member (another replica's traffic), max_concurrency, growing, work (nothing waits), fixed, paused, idle."}, []string{"by"}),
		backoffs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_cutover_pace_backoffs_total",
			Help: "Ticks on which the pace cut the background budget, by the signal that made it."}, []string{"by"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, c := range []*prometheus.Gauge{&m.rate, &m.conc, &m.paused, &m.left, &m.keys} {
		if *c, err = register(reg, *c); err != nil {
			return nil, err
		}
	}
	if m.limited, err = register(reg, m.limited); err != nil {
		return nil, err
	}
	if m.backoffs, err = register(reg, m.backoffs); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *paceMetrics) set(st *PaceStatus, by string) {
	m.rate.Set(st.CallsPerSecond)
	m.conc.Set(float64(st.Concurrency))
	m.keys.Set(st.KeysPerSecond)
	m.mu.Lock()
	if m.last != by {
		if m.last != "" {
			m.limited.WithLabelValues(m.last).Set(0)
		}
		m.last = by
	}
	m.mu.Unlock()
	m.limited.WithLabelValues(by).Set(1)
}
