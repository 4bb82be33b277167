package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// Fault scenarios of fleet mode. After each: every key on A is byte-identical on B, every
// recorded ciphertext decrypts through every replica, and no request failed (a replica's load
// is stopped before it goes down and started again once it is back).

// startMigration starts a migration through r and waits until the copy is under way.
func (f *fleetEnv) startMigration(t *testing.T, r *devstack.Replica, opts cutover.StartOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(r).Start(ctx, opts); err != nil {
		t.Fatalf("start through %s: %v", r.Name, err)
	}
}

// waitCopying waits until the driver has copied at least n keys (or moved past copying).
func (f *fleetEnv) waitCopying(t *testing.T, n int) cutover.Status {
	t.Helper()
	var s cutover.Status
	waitFor(t, waitLong, fmt.Sprintf("%d keys copied", n), func() bool {
		d := f.driver()
		if d == nil {
			return false
		}
		s = d.App.Cutover.Status()
		return s.State != cutover.StateServing && (s.Keys.Copied >= n || s.State != cutover.StateCopying)
	})
	t.Logf("driver %s: state %s, %d of %d keys copied", f.driver().Name, s.State, s.Keys.Copied, s.Keys.Total)
	return s
}

// finish waits for switched, lets probation pass, finalizes through r and checks the fleet.
func (f *fleetEnv) finish(t *testing.T, r *devstack.Replica, loads []*load) {
	t.Helper()
	st := f.waitAll(t, cutover.StateSwitched)
	f.waitAcked(t, st.Epoch)
	waitFor(t, waitLong, "probation passed", func() bool {
		d := f.driver()
		if d == nil {
			return false
		}
		s := d.App.Cutover.Status()
		return s.Probation != nil && s.Probation.Passed
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	// No CreateKey after the finalize (a key created then lives on B alone, by design): the
	// loads stop first, so that (c) can be checked both ways.
	stopLoads(t, "fleet", loads...)
	if _, err := f.admin(r).Finalize(ctx, cutover.FinalizeOptions{}); err != nil {
		t.Fatalf("finalize through %s: %v", r.Name, err)
	}
	f.waitAll(t, cutover.StateFinalized)
	checkBothWays(t, f)
	f.verifyFleet(t, loads...)
	checkInvariantD(t, f)
}

// stopReplica stops r's load (its report must be clean), then r.
func (f *fleetEnv) stopReplica(t *testing.T, r *devstack.Replica, l *load) {
	t.Helper()
	stopLoads(t, r.Name, l)
	if err := r.Stop(); err != nil {
		t.Fatalf("stopping %s: %v", r.Name, err)
	}
}

func TestFleetNonDriverRestartMidCopy(t *testing.T) {
	f := startFleet(t, 150, 3, nil)
	loads := f.loadAll(t, 8, "nd")
	f.startMigration(t, f.driver(), cutover.StartOptions{AutoSwitch: true})
	f.waitCopying(t, 10)
	nd := f.nonDriver(t)
	i := indexOf(f, nd)
	f.stopReplica(t, nd, loads[i])
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := nd.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := nd.App.Proxy.Route().Epoch, f.driver().App.Cutover.Status().Epoch; got == 0 || got > want {
		t.Fatalf("restarted %s serves epoch %d (driver at %d)", nd.Name, got, want)
	}
	loads = append(loads, f.loadOn(t, nd, 8, "nd-again-%d"))
	f.finish(t, f.driver(), loads)
}

func TestFleetDriverStoppedMidCopy(t *testing.T) {
	f := startFleet(t, 150, 3, nil)
	loads := f.loadAll(t, 8, "dm")
	first := f.driver()
	f.startMigration(t, f.nonDriver(t), cutover.StartOptions{AutoSwitch: true})
	f.waitCopying(t, 10)
	f.stopReplica(t, first, loads[indexOf(f, first)])
	waitFor(t, waitLong, "another driver", func() bool { d := f.driver(); return d != nil && d != first })
	t.Logf("driver %s took over from %s", f.driver().Name, first.Name)
	// The stopped member stays registered: the switch waits for it until it is forgotten.
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	waitFor(t, waitLong, "the switch waiting for the stopped driver", func() bool {
		s := f.driver().App.Cutover.Status()
		return s.State == cutover.StateVerified && s.Fleet != nil && strings.Contains(fmt.Sprint(s.Fleet.WaitingFor), first.Name)
	})
	if _, err := f.admin(f.driver()).Forget(ctx, first.Name); err != nil {
		t.Fatalf("forget %s: %v", first.Name, err)
	}
	var live []*load
	for i, l := range loads {
		if f.reps[i] != first {
			live = append(live, l)
		}
	}
	f.finish(t, f.driver(), live)
}

func TestFleetDriverStoppedAfterSwitch(t *testing.T) {
	f := startFleet(t, 40, 3, nil)
	loads := f.loadAll(t, 8, "ds")
	first := f.driver()
	f.startMigration(t, first, cutover.StartOptions{AutoSwitch: true})
	f.waitAll(t, cutover.StateSwitched)
	f.stopReplica(t, first, loads[indexOf(f, first)])
	waitFor(t, waitLong, "another driver", func() bool { d := f.driver(); return d != nil && d != first })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	// Restarted, the old driver applies the current epoch and acknowledges; finalize proceeds.
	if err := first.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	var live []*load
	for i, l := range loads {
		if f.reps[i] != first {
			live = append(live, l)
		}
	}
	live = append(live, f.loadOn(t, first, 8, "ds-again-%d"))
	f.finish(t, f.nonDriver(t), live)
}

func TestFleetJoinMidMigration(t *testing.T) {
	f := startFleet(t, 150, 2, nil)
	loads := f.loadAll(t, 8, "jn")
	f.startMigration(t, f.driver(), cutover.StartOptions{AutoSwitch: true})
	s := f.waitCopying(t, 10)
	r := f.add(t, "r3")
	// It serves the current epoch's route from its first request, never the configuration's.
	if got := r.App.Proxy.Route(); got.Epoch < s.Epoch {
		t.Fatalf("new member serves epoch %d, the fleet is at %d", got.Epoch, s.Epoch)
	}
	loads = append(loads, f.loadOn(t, r, 8, "jn-r3-%d"))
	f.finish(t, r, loads)
}

func TestFleetMemberCutOffDuringSwitch(t *testing.T) {
	f := startFleet(t, 40, 2, nil)
	r3, cut := f.addRelayed(t, "r3")
	f.waitMembers(t, 3)
	loads := f.loadAll(t, 8, "co")
	cut.set(true)
	waitFor(t, waitLong, "r3 seen expired", func() bool { return f.driver().App.Cutover.Traffic().FleetSize() == 2 })
	f.startMigration(t, f.driver(), cutover.StartOptions{AutoSwitch: true})
	// The switch waits for r3, which still serves the epoch it acknowledged (fail static).
	waitFor(t, waitLong, "the switch waiting for r3", func() bool {
		s := f.driver().App.Cutover.Status()
		return s.State == cutover.StateVerified && s.Fleet != nil && strings.Contains(fmt.Sprint(s.Fleet.WaitingFor), "r3")
	})
	if p := r3.App.Proxy.Route().Primary; p != "a" {
		t.Fatalf("r3 cut off serves %q", p)
	}
	// It says so once its pending heartbeat times out (fleet RequestTimeout).
	waitFor(t, waitLong, "r3 reporting the store unreachable", func() bool {
		st := r3.App.Cutover.Status()
		return st.Fleet != nil && !st.Fleet.StoreReachable
	})
	cut.set(false)
	f.finish(t, f.driver(), loads)
}

func TestFleetEtcdDownWhileSwitched(t *testing.T) {
	f := startFleet(t, 40, 3, nil)
	defer f.watchInvariants(t)()
	loads := f.loadAll(t, 8, "ed")
	f.startMigration(t, f.driver(), cutover.StartOptions{AutoSwitch: true})
	st := f.waitAll(t, cutover.StateSwitched)
	f.waitAcked(t, st.Epoch)
	// 30 s in production terms; here 6 s, three lease TTLs: every lease expires meanwhile.
	f.etcd.Stop()
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range f.running() {
			s := r.App.Cutover.Status()
			if s.State != cutover.StateSwitched || s.Epoch != st.Epoch || r.App.Proxy.Route().Primary != "b" {
				t.Fatalf("%s changed while etcd was down: state %s epoch %d", r.Name, s.State, s.Epoch)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range f.running() {
		if s := r.App.Cutover.Status(); s.Fleet == nil || s.Fleet.StoreReachable {
			t.Errorf("%s does not say the store is unreachable", r.Name)
		}
	}
	f.etcd.Restart()
	f.waitMembers(t, 3)
	f.finish(t, f.nonDriver(t), loads)
}

func TestFleetSameCreateKeyOnTwoReplicas(t *testing.T) {
	f := startFleet(t, 20, 3, nil)
	defer f.watchInvariants(t)()
	loads := f.loadAll(t, 8, "ck")
	f.startMigration(t, f.driver(), cutover.StartOptions{AutoSwitch: true})
	f.waitAll(t, cutover.StateSwitched)
	ids := []string{"twice-1", "twice-2", "twice-3"}
	for _, id := range ids {
		var wg sync.WaitGroup
		for _, r := range f.running()[:2] {
			wg.Go(func() { createKeyVia(t, f, r, id) })
		}
		wg.Wait()
	}
	for _, id := range ids {
		// Copied to A before the reply, or just after it by the backfill (once every replica
		// routes to B first): never two keys under one id.
		waitFor(t, waitLong, id+" on A and B", func() bool { _, ok := f.st.A.Object(id); return ok })
		if eq, err := f.st.A.KeyMaterialEqual(id, f.st.B); err != nil || !eq {
			t.Errorf("%s: on A and B with different material (or missing): equal=%v err=%v", id, eq, err)
		}
	}
	f.finish(t, f.driver(), loads)
}

// createKeyVia sends what AWS sends for a KMS CreateKey (GetKeyMetadata, kmsOperation
// CreateKey) through r, signed.
func createKeyVia(t *testing.T, f *fleetEnv, r *devstack.Replica, id string) {
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: f.st.Credential, Region: f.st.Region})
	if err != nil {
		t.Error(err)
		return
	}
	c, err := xks.NewClient(xks.ClientConfig{BaseURL: r.Endpoint + f.st.Prefix + "/kms/xks/v1", Signer: signer,
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: f.st.ClientTLS()}}, Timeout: clientTTL})
	if err != nil {
		t.Error(err)
		return
	}
	md := xks.RequestMetadata{AWSPrincipalArn: principal, KMSOperation: "CreateKey", KMSRequestID: "e2e-" + id + "-" + r.Name}
	if _, err := c.Metadata(context.Background(), id, md); err != nil {
		t.Errorf("CreateKey %s through %s: %v", id, r.Name, err)
	}
}

func indexOf(f *fleetEnv, r *devstack.Replica) int {
	for i, x := range f.reps {
		if x == r {
			return i
		}
	}
	return -1
}

// cutProxy forwards TCP to target until cut: then every connection is closed and new ones are
// refused, as when a network partition isolates one replica from etcd.
type cutProxy struct {
	addr   string
	target string
	ln     net.Listener
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.set(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(u, c); u.Close() }()
	_, _ = io.Copy(c, u)
	c.Close()
}

func (p *cutProxy) set(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// addRelayed adds a replica that reaches etcd through a relay the test can cut.
func (f *fleetEnv) addRelayed(t *testing.T, name string) (*devstack.Replica, *cutProxy) {
	t.Helper()
	cut := newCutProxy(t, strings.TrimPrefix(f.etcd.Endpoint, "https://"))
	r, err := f.st.AddReplicaWith(context.Background(), name, func(c *app.Config) {
		fc := *c.Fleet
		fc.Endpoints = []string{"https://" + cut.addr}
		c.Fleet = &fc
	})
	if err != nil {
		t.Fatal(err)
	}
	f.reps = append(f.reps, r)
	return r, cut
}

// withLease makes the fleet's lease ttl long enough to observe a crashed member's lease alive.
func withLease(ttl time.Duration) func(*devstack.Config) {
	return func(c *devstack.Config) {
		fc := *c.Fleet
		fc.LeaseTTL = ttl
		c.Fleet = &fc
	}
}

// The driver crashes right after the switch (link to etcd cut, then stopped: its lease lives
// on, as after kill -9). No other replica drives while that lease lives — two drivers never
// coexist —, another is elected once it runs out, and with the crashed one back the
// migration is finalized through the new driver.
func TestFleetDriverCrashedAfterSwitch(t *testing.T) {
	const lease = 10 * time.Second
	f := startFleet(t, 40, 1, withLease(lease))
	r2, cut := f.addRelayed(t, "r2")
	f.waitMembers(t, 2)
	// r1 steps down (a clean stop) so that the relayed r2 drives, then comes back.
	r1 := f.reps[0]
	if err := r1.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "r2 driving", func() bool { return r2.App.Cutover.IsDriver() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := r1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitMembers(t, 2)
	loads := f.loadAll(t, 8, "dc")
	f.startMigration(t, r2, cutover.StartOptions{AutoSwitch: true})
	st := f.waitAll(t, cutover.StateSwitched)
	f.waitAcked(t, st.Epoch)
	stopLoads(t, r2.Name, loads[1])
	crashed := time.Now()
	cut.set(true)
	stopped := make(chan error, 1)
	go func() { stopped <- r2.Stop() }()
	// The lease was last renewed at most a third of its ttl before the cut (etcd renews at
	// ttl/3), so it lives at least two thirds of it past the crash.
	for time.Since(crashed) < lease/2 {
		if r1.App.Cutover.IsDriver() {
			t.Fatalf("r1 drives %v after the crash, while r2's lease (%v) still lives", time.Since(crashed), lease)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-stopped; err != nil {
		// Cut off, its last journal flush cannot reach etcd: what a crash loses, and the
		// new driver resumes from what is stored.
		t.Logf("stopping r2 (cut off): %v", err)
	}
	waitFor(t, waitLong, "r1 driving", func() bool { return r1.App.Cutover.IsDriver() })
	t.Logf("r1 elected %v after the crash (lease %v)", time.Since(crashed).Round(100*time.Millisecond), lease)
	// Back (the relay mended), r2 applies the epoch the new driver is at and acknowledges it,
	// and the finalize through r1 proceeds.
	cut.set(false)
	if err := r2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	f.finish(t, r1, []*load{loads[0], f.loadOn(t, r2, 8, "dc-again-%d")})
}

// A member that crashes (its link to etcd cut, then stopped: it cannot revoke its lease, as
// after kill -9) stays live until its lease runs out, then expired but registered: the switch
// waits for it all along, cutover forget is refused while the lease lives and accepted after,
// and then the migration goes on to the end.
func TestFleetMemberCrashedDuringCopy(t *testing.T) {
	const lease = 10 * time.Second
	f := startFleet(t, 40, 2, withLease(lease))
	r3, cut := f.addRelayed(t, "r3")
	f.waitMembers(t, 3)
	loads := f.loadAll(t, 8, "cr")
	drv := f.driver()
	if drv == r3 {
		t.Fatal("r3 was elected driver; this test crashes a member that is not")
	}
	f.startMigration(t, drv, cutover.StartOptions{AutoSwitch: true})
	f.waitCopying(t, 5)
	stopLoads(t, r3.Name, loads[2])
	crashed := time.Now()
	cut.set(true) // from here r3 can neither renew nor revoke its lease
	stopped := make(chan error, 1)
	go func() { stopped <- r3.Stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	// Its lease outlives it: still a live member, so it cannot be forgotten.
	n := drv.App.Cutover.Traffic().FleetSize()
	_, ferr := f.admin(drv).Forget(ctx, "r3")
	if time.Since(crashed) < lease/2 {
		if n != 3 {
			t.Errorf("right after the crash the fleet counts %d live members, want 3 (r3's lease lives on)", n)
		}
		if ferr == nil || !strings.Contains(ferr.Error(), "alive") {
			t.Errorf("forget r3 while its lease lives: %v, want a refusal naming it alive", ferr)
		}
	} else {
		t.Logf("the checks took %v; those while r3's lease lives are skipped", time.Since(crashed))
	}
	if err := <-stopped; err != nil {
		t.Logf("stopping r3 (cut off): %v", err) // its last writes cannot reach etcd
	}
	// The switch waits for it, before and after its lease runs out.
	waitFor(t, waitLong, "the switch waiting for r3", func() bool {
		s := drv.App.Cutover.Status()
		return s.State == cutover.StateVerified && s.Fleet != nil && strings.Contains(fmt.Sprint(s.Fleet.WaitingFor), "r3")
	})
	waitFor(t, waitLong, "r3 expired", func() bool { return drv.App.Cutover.Traffic().FleetSize() == 2 })
	if s := drv.App.Cutover.Status(); s.State != cutover.StateVerified {
		t.Fatalf("with r3 expired but registered the migration moved to %s", s.State)
	}
	if _, err := f.admin(drv).Forget(ctx, "r3"); err != nil {
		t.Fatalf("forget r3 after its lease ran out: %v", err)
	}
	f.reps = f.reps[:2]
	f.finish(t, drv, loads[:2])
}
