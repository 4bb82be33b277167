package demo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/devstack"
)

// ReplicaStats is what one replica served, as the load balancer's client saw it.
type ReplicaStats struct {
	Requests int64 `json:"requests"`
	Failed   int64 `json:"failed"`
}

// runFleet is the demo with several replicas behind one (client-side) load balancer: an
// embedded etcd, N proxies over real TLS, the AWS-like load spread round-robin over them, the
// migration driven through the elected driver, a non-driver killed and restarted during the
// copy, the driver killed after the switch so that another one finalizes.
func runFleet(ctx context.Context, o Options) (*Report, error) {
	tl := newTimeline(o.Progress)
	say := tl.say
	etcd, err := startEtcd()
	if err != nil {
		return nil, err
	}
	defer etcd.Close()
	keys, traffic := keySet(o.Keys)
	st, err := devstack.Start(ctx, devstack.Config{
		Listen: o.Listen, Keys: keys, Logger: o.Logger, Version: "xksproxy demo",
		Budget: o.Budget, BackendTimeout: o.BackendTimeout,
		Probation: cutover.ProbationConfig{Duration: o.Probation, MaxP99: o.ProbationMaxP99},
		Fleet: &fleet.Config{Endpoints: []string{etcd.URL}, LeaseTTL: o.FleetLease, MinLeaseTTL: time.Second,
			DialTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second},
	})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	f := &fleetRun{st: st, reps: []*devstack.Replica{st.Main()}}
	f.setUp(st.Main(), true)
	for i := 2; i <= o.Replicas; i++ {
		r, err := st.AddReplica(ctx, fmt.Sprintf("r%d", i))
		if err != nil {
			return nil, err
		}
		f.reps = append(f.reps, r)
		f.setUp(r, true)
	}
	if err := f.waitFor(ctx, time.Minute, "every replica registered and ready, a driver elected", func() bool {
		_, ok := f.driver()
		return ok && f.allReady(o.Replicas)
	}); err != nil {
		return nil, err
	}
	say("A holds %d keys (%d take traffic); B is empty. %d proxies (fleet over embedded etcd at %s): %s",
		len(keys), len(traffic), o.Replicas, etcd.URL, strings.Join(f.endpoints(), " "))

	eps := f.endpoints()
	lcfg := loadgen.Config{
		Endpoint: eps[0], Endpoints: eps[1:], Prefix: st.Prefix, Region: st.Region, Credential: st.Credential,
		TLS: st.ClientTLS(), Keys: traffic, Rate: o.RPS, Workers: 256, Conns: max(4, 16/o.Replicas), // 16 connections in all, as with one proxy
		// HTTP/2: a replica shutting down says which streams it did not take (GOAWAY), and
		// those are sent again on another connection, as AWS's client does.
		HTTP2:      true,
		Principals: []string{trafficPrincipal}, CreateKeyPrefix: "demo-new-%d", Record: true,
		Timeout: o.Timeout, Logger: o.Logger, OnFailure: tl.onFailure,
	}
	tr, err := startTraffic(ctx, o.Logger, lcfg)
	if err != nil {
		return nil, err
	}
	defer tr.stopAll()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	go func() { f.watchDriver(wctx); close(watchDone) }()

	rep := &Report{Replicas: o.Replicas}
	fail := func(format string, args ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...)) }
	sleep(ctx, o.Warmup)
	drv, _ := f.driver()
	say("traffic at %.0f req/s round-robin over %d replicas; starting the migration A → B through %s, the driver (shadow %s, probation %s)",
		o.RPS, o.Replicas, drv.name, o.Shadow, o.Probation)
	smp := startSampler(tl, func() (cutover.Status, bool) {
		if d, ok := f.driver(); ok {
			return d.ctrl.Status(), true
		}
		return cutover.Status{}, false
	})
	rssStart, revStart := rssBytes(), etcd.e.Server.KV().Rev()
	cutStart := time.Now()
	tl.started(cutStart)
	var switchedAt, finalizedAt time.Time
	final := drv
	if drv, err = f.drive(ctx, func(c *cutover.Controller) error {
		return c.Start(ctx, cutover.StartOptions{Shadow: o.Shadow, AutoSwitch: true})
	}); err != nil {
		fail("start: %v", err)
	} else {
		f.killDuringCopy(ctx, say, fail)
		s, err := f.waitState(ctx, switchDeadline(o.Keys), cutover.StateSwitched, cutover.StateCopyFailed, cutover.StateVerifyFailed, cutover.StateRolledBack)
		switchedAt = time.Now()
		switch {
		case err != nil:
			fail("waiting for the switch: %v", err)
		case s.State != cutover.StateSwitched:
			fail("migration stopped in state %s: %s", s.State, s.LastError)
		default:
			if d, ok := f.driver(); ok {
				drv = d
			}
			say("switched to B after %.2fs; killing the driver %s", switchedAt.Sub(cutStart).Seconds(), drv.name)
			final = f.replaceDriver(ctx, drv, say, fail)
			switch s := waitProbation(ctx, o.Probation, func() cutover.Status {
				if d, ok := f.driver(); ok {
					final = d
				}
				return final.ctrl.Status()
			}); {
			case s.State != cutover.StateSwitched:
				fail("probation ended in state %s: %s", s.State, s.Reason)
			default:
				if final, err = f.drive(ctx, func(c *cutover.Controller) error { return c.Finalize(ctx, cutover.FinalizeOptions{}) }); err != nil {
					fail("finalize: %v", err)
				} else {
					finalizedAt = time.Now()
					say("finalized through %s, the new driver: B serves alone", final.name)
				}
			}
		}
	}
	sleep(ctx, o.Tail)
	lrep, err := tr.finish()
	if err != nil {
		return nil, err
	}
	stopWatch()
	<-watchDone
	end := finalizedAt
	if end.IsZero() {
		end = time.Now()
	}
	// The re-decryption is a check, not AWS-like load: sent over HTTP/1.1 with 16 connections as
	// with one proxy, not as a burst of every stream HTTP/2 allows.
	vcfg := lcfg
	vcfg.HTTP2, vcfg.Workers, vcfg.Record, vcfg.Rate = false, 16, false, 0
	rd, err := loadgen.New(vcfg)
	if err != nil {
		return nil, err
	}
	smp.finish()
	revs := etcd.e.Server.KV().Rev() - revStart
	rep.measure(ctx, st, final.ctrl.Status(), tr.lg, rd, lrep, tr.hp, cutStart, switchedAt, end)
	smp.fill(rep, rssStart)
	tl.fill(rep)
	if rep.KeysTotal > 0 {
		rep.EtcdWritesPerKey = round(float64(revs) / float64(rep.KeysTotal))
	}
	for _, m := range f.running() {
		c := m.ctrl.Status().CreateKeyChecks
		rep.CreateKeyChecks.Records += c.Records
		rep.CreateKeyChecks.Backend += c.Backend
		rep.CreateKeyChecks.Failed += c.Failed
	}
	rep.DriverChanges = f.driverChanges()
	rep.MembersAcked = f.membersAcked(ctx, final)
	rep.PerReplica = map[string]ReplicaStats{}
	for _, r := range f.reps {
		s := lrep.ByEndpoint[r.Endpoint]
		rep.PerReplica[r.Name] = ReplicaStats{Requests: s.Requests, Failed: s.Failed}
	}
	if rep.DriverChanges < 1 {
		fail("the driver never changed")
	}
	if rep.MembersAcked != rep.Replicas {
		fail("%d of %d members acknowledged the final epoch", rep.MembersAcked, rep.Replicas)
	}
	return rep, nil
}

// fleetRun tracks the replicas of one run and the driver changes seen. Only the demo's own
// goroutine stops and starts replicas; the driver watcher reads the running ones from up.
type fleetRun struct {
	st   *devstack.Stack
	reps []*devstack.Replica

	mu      sync.Mutex
	up      []member // running replicas
	drivers []string // successive driver names, as observed
}

// member is a running replica as the watcher may read it.
type member struct {
	name string
	ctrl *cutover.Controller
}

// setUp records r as running (with its current App) or stopped.
func (f *fleetRun) setUp(r *devstack.Replica, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = slices.DeleteFunc(f.up, func(m member) bool { return m.name == r.Name })
	if up {
		f.up = append(f.up, member{name: r.Name, ctrl: r.App.Cutover})
	}
}

// stop and restart stop and start a replica, keeping up current.
func (f *fleetRun) stop(r *devstack.Replica) error {
	f.setUp(r, false)
	return r.Stop()
}

func (f *fleetRun) restart(ctx context.Context, r *devstack.Replica) error {
	if err := r.Restart(ctx); err != nil {
		return err
	}
	f.setUp(r, true)
	return nil
}

func (f *fleetRun) replica(name string) *devstack.Replica {
	for _, r := range f.reps {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func (f *fleetRun) endpoints() []string {
	out := make([]string, len(f.reps))
	for i, r := range f.reps {
		out[i] = r.Endpoint
	}
	return out
}

func (f *fleetRun) running() []member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.up)
}

// driver is the running replica that drives the migration (ok false: none right now).
func (f *fleetRun) driver() (m member, ok bool) {
	for _, m := range f.running() {
		if m.ctrl.IsDriver() {
			return m, true
		}
	}
	return member{}, false
}

func (f *fleetRun) nonDriver() (member, bool) {
	for _, m := range f.running() {
		if !m.ctrl.IsDriver() {
			return m, true
		}
	}
	return member{}, false
}

func (f *fleetRun) allReady(n int) bool {
	run := f.running()
	if len(run) != n {
		return false
	}
	for _, m := range run {
		if !m.ctrl.Traffic().Ready() || m.ctrl.Traffic().FleetSize() != n {
			return false
		}
	}
	return true
}

// waitFor polls cond every 50 ms until it holds, ctx ends or d passes.
func (f *fleetRun) waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// switchDeadline is how long the demo waits for the switch: five minutes, or 20 ms a key for
// more than 15 000 keys (100 000 keys: 33 minutes), well beyond what the copy takes.
func switchDeadline(keys int) time.Duration {
	return max(5*time.Minute, time.Duration(keys)*20*time.Millisecond)
}

// waitState waits until the driver (whichever it is) reports one of states, for at most d.
func (f *fleetRun) waitState(ctx context.Context, d time.Duration, states ...cutover.State) (cutover.Status, error) {
	var last cutover.Status
	err := f.waitFor(ctx, d, fmt.Sprintf("state %v", states), func() bool {
		d, ok := f.driver()
		if !ok {
			return false
		}
		last = d.ctrl.Status()
		return slices.Contains(states, last.State)
	})
	return last, err
}

// drive runs an operator action on the driver, as `xksproxy cutover` does through any
// replica's admin API: if the driver changed meanwhile, the action is refused and sent again
// to the new one. It returns the replica that took it.
func (f *fleetRun) drive(ctx context.Context, action func(*cutover.Controller) error) (member, error) {
	var d member
	var err error
	werr := f.waitFor(ctx, time.Minute, "a driver that takes the action", func() bool {
		var ok bool
		if d, ok = f.driver(); !ok {
			return false
		}
		err = action(d.ctrl)
		return !errors.Is(err, cutover.ErrNotDriver) && !errors.Is(err, cutover.ErrFenced)
	})
	if err == nil {
		err = werr
	}
	return d, err
}

// killDuringCopy stops a non-driver replica while the keys are copied and starts it again on
// the same address: it rejoins the fleet and applies the current epoch before it serves.
func (f *fleetRun) killDuringCopy(ctx context.Context, say func(string, ...any), fail func(string, ...any)) {
	m, ok := f.nonDriver()
	if !ok {
		fail("no non-driver replica to kill")
		return
	}
	r := f.replica(m.name)
	var st cutover.Status
	_ = f.waitFor(ctx, time.Minute, "the first keys copied", func() bool {
		if d, ok := f.driver(); ok {
			st = d.ctrl.Status()
		}
		return st.Keys.Copied > 0 || (st.State != cutover.StateCopying && st.State != "")
	})
	say("killing %s, not the driver, during the copy (state %s, %d of %d keys copied)", r.Name, st.State, st.Keys.Copied, st.Keys.Total)
	if err := f.stop(r); err != nil {
		fail("stopping %s: %v", r.Name, err)
	}
	if err := f.restart(ctx, r); err != nil {
		fail("restarting %s: %v", r.Name, err)
		return
	}
	if err := f.waitFor(ctx, time.Minute, r.Name+" ready again", r.App.Cutover.Traffic().Ready); err != nil {
		fail("%v", err)
		return
	}
	say("%s restarted and ready (applied epoch %d)", r.Name, r.App.Cutover.Status().Epoch)
}

// replaceDriver kills the driver, waits until another replica is elected, then starts the old
// one again (so that it acknowledges the next epochs: a phase change waits for every registered
// member). It returns the new driver.
func (f *fleetRun) replaceDriver(ctx context.Context, m member, say func(string, ...any), fail func(string, ...any)) member {
	old := f.replica(m.name)
	if err := f.stop(old); err != nil {
		fail("stopping the driver %s: %v", old.Name, err)
	}
	var nd member
	if err := f.waitFor(ctx, time.Minute, "a new driver", func() bool { var ok bool; nd, ok = f.driver(); return ok }); err != nil {
		fail("%v", err)
		return m
	}
	say("%s elected driver; restarting %s", nd.name, old.Name)
	if err := f.restart(ctx, old); err != nil {
		fail("restarting %s: %v", old.Name, err)
	} else if err := f.waitFor(ctx, time.Minute, old.Name+" ready again", old.App.Cutover.Traffic().Ready); err != nil {
		fail("%v", err)
	}
	return nd
}

// watchDriver records every change of driver any running replica reports, until ctx ends.
func (f *fleetRun) watchDriver(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if d, ok := f.driver(); ok {
			f.mu.Lock()
			if n := len(f.drivers); n == 0 || f.drivers[n-1] != d.name {
				f.drivers = append(f.drivers, d.name)
			}
			f.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *fleetRun) driverChanges() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return max(0, len(f.drivers)-1)
}

// membersAcked counts the live members that acknowledged the driver's current epoch, waiting
// (a little) for the heartbeats that carry the last acknowledgements.
func (f *fleetRun) membersAcked(ctx context.Context, drv member) int {
	count := func() int {
		s := drv.ctrl.Status()
		if s.Fleet == nil {
			return 0
		}
		n := 0
		for _, m := range s.Fleet.Members {
			if m.Live && m.AppliedEpoch == s.Epoch {
				n++
			}
		}
		return n
	}
	_ = f.waitFor(ctx, 30*time.Second, "every member's acknowledgement", func() bool { return count() == len(f.reps) })
	return count()
}

// perReplicaText renders the per-replica counts for a person, sorted by name.
func (r *Report) perReplicaText() string {
	names := make([]string, 0, len(r.PerReplica))
	for n := range r.PerReplica {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		s := r.PerReplica[n]
		fmt.Fprintf(&b, "%s %d (%d failed)", n, s.Requests, s.Failed)
	}
	return b.String()
}
