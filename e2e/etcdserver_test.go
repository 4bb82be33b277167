package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/internal/etcdproc"
)

// TestRealEtcdServer runs the fleet store against a real etcd server process (Debian's
// etcd-server, 3.4 — an older server than the v3.7 client, as an operator's existing cluster
// may be) instead of the embedded one: fenced first header, election, batched key writes seen
// by another member, the watch, member records, then etcd killed with SIGKILL and restarted on
// the same data — writes fail while it is down, nothing is lost, and the watch carries on.
func TestRealEtcdServer(t *testing.T) {
	srv := etcdproc.Start(t)
	t.Logf("real etcd: %s at %s", srv.Version, srv.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	open := func(member string) *fleet.Etcd {
		s, err := fleet.Open(fleet.Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile, Member: member,
			KeyPrefix: "/xksproxy/e2e/", LeaseTTL: 2 * time.Second, RequestTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	hdr := func(epoch uint64, st cutover.State) *cutover.Header {
		return &cutover.Header{Version: 1, Epoch: epoch, State: st, Source: "a", Target: "b"}
	}
	a, b := open("replica-1"), open("replica-2")

	if snap, err := a.Load(ctx); err != nil || snap != nil {
		t.Fatalf("Load on an empty etcd = %v, %v", snap, err)
	}
	if err := a.Save(ctx, cutover.Change{Header: hdr(1, cutover.StateServing)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, cutover.Change{Header: hdr(1, cutover.StateServing)}); !errors.Is(err, cutover.ErrFenced) {
		t.Fatalf("a second first header: %v, want ErrFenced", err)
	}
	if _, err := a.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	if name, _, err := b.Driver(ctx); err != nil || name != "replica-1" {
		t.Fatalf("driver seen by replica-2: %q, %v", name, err)
	}
	keys := map[string]*cutover.KeyProgress{}
	for i := range 500 {
		keys[fmt.Sprintf("key-%04d", i)] = &cutover.KeyProgress{Phase: cutover.PhaseCopy, Result: cutover.ResultOK}
	}
	if err := a.Save(ctx, cutover.Change{PrevEpoch: 1, Header: hdr(2, cutover.StateCopying), ResetKeys: true, Keys: keys}); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctx, cutover.Change{PrevEpoch: 2, Header: hdr(3, cutover.StateVerifying)}); !errors.Is(err, cutover.ErrFenced) {
		t.Fatalf("a non-driver's transition: %v, want ErrFenced", err)
	}
	if snap, err := b.Load(ctx); err != nil || snap.Header.Epoch != 2 || len(snap.Keys) != 500 {
		t.Fatalf("replica-2 loads %+v, %v", snap, err)
	}

	events := make(chan cutover.WatchEvent, 64)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go b.Watch(wctx, func(ev cutover.WatchEvent) { events <- ev })
	waitEpoch := func(epoch uint64) {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Header != nil && ev.Header.Epoch == epoch {
					return
				}
			case <-ctx.Done():
				t.Fatalf("replica-2's watch never saw epoch %d", epoch)
			}
		}
	}
	if err := a.Save(ctx, cutover.Change{PrevEpoch: 2, Header: hdr(3, cutover.StateVerifying)}); err != nil {
		t.Fatal(err)
	}
	waitEpoch(3)
	for _, m := range []*fleet.Etcd{a, b} {
		if err := m.Publish(ctx, cutover.MemberRecord{AppliedEpoch: 3, Primary: "a", Heartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if ms, err := a.Members(ctx); err != nil || len(ms) != 2 || !ms[0].Live || !ms[1].Live {
		t.Fatalf("members %+v, %v", ms, err)
	}

	// etcd crashes: the store says unreachable and nothing is written.
	srv.Kill()
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	err := a.Save(sctx, cutover.Change{PrevEpoch: 3, Header: hdr(4, cutover.StateVerified)})
	scancel()
	if err == nil {
		t.Fatal("a write succeeded with etcd down")
	}
	if a.Reachable() {
		t.Error("Reachable() with etcd down")
	}
	srv.Restart()
	// The driver's session may not have survived the outage: campaign again (a no-op wait if
	// it did), then the next epoch reaches the other member through the same watch.
	if _, err := a.Campaign(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := a.Save(ctx, cutover.Change{PrevEpoch: 3, Header: hdr(4, cutover.StateVerified)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write after etcd came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitEpoch(4)
	if snap, err := b.Load(ctx); err != nil || snap.Header.Epoch != 4 || len(snap.Keys) != 500 {
		t.Fatalf("after the crash replica-2 loads %+v, %v", snap, err)
	}
	if !a.Reachable() {
		t.Error("Reachable() false with etcd back")
	}
}

// TestFleetOnRealEtcdServer: two replicas migrate as one with the real etcd server process as
// their store — started through the replica that does not drive, load through both, every phase
// change acknowledged by both, finalized, every key identical and every ciphertext readable.
func TestFleetOnRealEtcdServer(t *testing.T) {
	srv := etcdproc.Start(t)
	st, ids := startStack(t, 20, devstack.Config{
		Probation: testProbation(3 * time.Second),
		Fleet: &fleet.Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile, KeyPrefix: "/xksproxy/e2e-fleet/",
			LeaseTTL: fleetLease, MinLeaseTTL: time.Second, DialTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second},
	})
	f := &fleetEnv{st: st, ids: ids, reps: []*devstack.Replica{st.Main()}}
	f.add(t, "r2")
	f.waitMembers(t, 2)
	loads := f.loadAll(t, 10, "realetcd")
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	nd := f.nonDriver(t)
	if _, err := f.admin(nd).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatalf("start through %s: %v", nd.Name, err)
	}
	s := f.waitAll(t, cutover.StateSwitched)
	f.waitAcked(t, s.Epoch)
	waitFor(t, waitLong, "probation passed", func() bool {
		p := f.driver().App.Cutover.Status().Probation
		return p != nil && p.Passed
	})
	if _, err := f.admin(nd).Finalize(ctx, cutover.FinalizeOptions{}); err != nil {
		t.Fatalf("finalize through %s: %v", nd.Name, err)
	}
	s = f.waitAll(t, cutover.StateFinalized)
	f.waitAcked(t, s.Epoch)
	stopLoads(t, "fleet on real etcd", loads...)
	f.verifyFleet(t, loads...)
	checkInvariantD(t, f)
}
