package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/internal/etcdproc"
)

// TestFleetStartsBeforeEtcd: a fleet starts in any order. Three replicas start while etcd (a real
// etcd process) is down and holds no journal yet: none is ready. Once etcd answers, all three
// become ready (one of them writes the store's first journal), one drives, each sees the others.
// Then etcd is killed and started again (quorum lost and regained): they stay ready, a driver
// is elected again and a migration runs to its switch.
func TestFleetStartsBeforeEtcd(t *testing.T) {
	srv := etcdproc.Start(t)
	srv.Kill() // an empty etcd that is not up yet: its ports and data directory are known
	cfg := devstack.Config{
		Probation: testProbation(3 * time.Second),
		Fleet: &fleet.Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile,
			LeaseTTL: fleetLease, MinLeaseTTL: time.Second, DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second},
	}
	st, ids := startStack(t, 6, cfg)
	f := &fleetEnv{st: st, ids: ids, reps: []*devstack.Replica{st.Main()}}
	for i := 2; i <= 3; i++ {
		f.add(t, fmt.Sprintf("r%d", i))
	}
	ready := func() (n int) {
		for _, r := range f.running() {
			if r.App.Cutover.Traffic().Ready() {
				n++
			}
		}
		return n
	}
	if n := ready(); n != 0 {
		t.Fatalf("%d replicas ready before etcd answered, with no journal anywhere", n)
	}

	up := time.Now()
	srv.Restart()
	waitFor(t, waitLong, "every replica ready once etcd answers", func() bool { return ready() == 3 })
	t.Logf("all 3 replicas ready %v after etcd answered", time.Since(up).Round(10*time.Millisecond))
	f.waitMembers(t, 3)
	t.Logf("3 members and a driver %v after etcd answered", time.Since(up).Round(10*time.Millisecond))

	srv.Kill()
	time.Sleep(2 * fleetLease) // leases expire meanwhile: the driver loses its lead
	if n := ready(); n != 3 {
		t.Errorf("%d of 3 replicas ready while etcd is down: a replica that applied an epoch serves it", n)
	}
	back := time.Now()
	srv.Restart()
	f.waitMembers(t, 3)
	t.Logf("3 members and a driver %v after etcd came back", time.Since(back).Round(10*time.Millisecond))

	d := f.driver()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(d).Start(ctx, cutover.StartOptions{NoShadow: true, AutoSwitch: true}); err != nil {
		t.Fatalf("start on the driver %s: %v", d.Name, err)
	}
	f.waitAll(t, cutover.StateSwitched)
}
