package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
)

// TestFleetMigration: three replicas migrate as one. The migration is started and finalized
// through a replica that does not drive (the admin API forwards to the driver); traffic goes
// through every replica the whole time; every phase change waits for every member.
func TestFleetMigration(t *testing.T) {
	f := startFleet(t, 30, 3, nil)
	defer f.watchInvariants(t)()
	loads := f.loadAll(t, 10, "fleet")
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	nd := f.nonDriver(t)
	if _, err := f.admin(nd).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatalf("start through %s: %v", nd.Name, err)
	}
	st := f.waitAll(t, cutover.StateSwitched)
	t.Logf("switched after %s", time.Since(begin))
	f.waitAcked(t, st.Epoch)
	// Status through any replica is the driver's.
	if s, err := f.admin(nd).Status(ctx); err != nil || s.State != cutover.StateSwitched || s.Fleet == nil || !s.Fleet.Driving {
		t.Fatalf("status through %s: %+v, %v", nd.Name, s, err)
	}
	waitFor(t, waitLong, "probation passed", func() bool {
		s := f.driver().App.Cutover.Status()
		return s.Probation != nil && s.Probation.Passed
	})
	stopLoads(t, "fleet", loads...) // no CreateKey after the finalize: (c) is checked both ways
	if _, err := f.admin(nd).Finalize(ctx, cutover.FinalizeOptions{}); err != nil {
		t.Fatalf("finalize through %s: %v", nd.Name, err)
	}
	f.waitAll(t, cutover.StateFinalized)
	t.Logf("finalized after %s", time.Since(begin))
	// A forget of a live member is refused.
	var ae *adminapi.Error
	if _, err := f.admin(nd).Forget(ctx, nd.Name); !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("forget of a live member: %v", err)
	}
	checkBothWays(t, f)
	f.verifyFleet(t, loads...)
	checkInvariantD(t, f)
}

// waitAcked waits until the driver's status lists every member live with epoch acknowledged
// and the route of that epoch.
func (f *fleetEnv) waitAcked(t *testing.T, epoch uint64) {
	t.Helper()
	var fs *cutover.FleetStatus
	waitFor(t, waitLong, "every member acknowledged the epoch in the driver's status", func() bool {
		d := f.driver()
		if d == nil {
			return false
		}
		s := d.App.Cutover.Status()
		fs = s.Fleet
		if fs == nil || len(fs.Members) != len(f.running()) {
			return false
		}
		for _, m := range fs.Members {
			if !m.Live || m.AppliedEpoch != epoch || m.Primary != s.Primary || m.Fallback != s.Fallback {
				return false
			}
		}
		return true
	})
	t.Logf("fleet at epoch %d: %+v", epoch, fs.Members)
}

// checkInvariantD: no replica serves a route older than one it acknowledged.
func checkInvariantD(t *testing.T, f *fleetEnv) {
	t.Helper()
	for _, r := range f.running() {
		s := r.App.Cutover.Status()
		route := r.App.Proxy.Route()
		if s.Fleet == nil || route.Epoch < s.Fleet.AppliedEpoch {
			t.Errorf("%s serves epoch %d but acknowledged %d", r.Name, route.Epoch, s.Fleet.AppliedEpoch)
		}
	}
}
