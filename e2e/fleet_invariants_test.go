package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// Invariants of fleet mode, asserted while the scenarios run:
//   (a) no key id exists on only one backend while any replica may route it to the other;
//   (b) no id ever has different material on A and B;
//   (c) a key created through any replica is on both sides before finalize;
//   (d) no replica serves a route older than one it acknowledged.

// watchInvariants samples the backends and the replicas every 250 ms until the returned stop
// is called. (a) is checked while every running replica routes to both sides (switched): an id
// on one side only in two samples a second apart is a violation (a new key is copied before
// its CreateKey's reply, or by the backfill right after it, well within that). (b) and (d) are checked at every sample. Only for
// scenarios that start and stop no replica while it watches (it reads them unlocked).
func (f *fleetEnv) watchInvariants(t *testing.T) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		oneSided := map[string]time.Time{}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			reps := f.running()
			both := len(reps) > 0
			for _, r := range reps {
				route := r.App.Proxy.Route()
				if s := r.App.Cutover.Status(); s.Fleet != nil && route.Epoch < s.Fleet.AppliedEpoch {
					t.Errorf("invariant (d): %s serves epoch %d after acknowledging %d", r.Name, route.Epoch, s.Fleet.AppliedEpoch)
				}
				if route.Fallback == "" || r.App.Cutover.Status().State != cutover.StateSwitched {
					both = false
				}
			}
			onA, onB := set(migratable(f.st, f.st.A)), set(migratable(f.st, f.st.B))
			now := time.Now()
			seen := map[string]bool{}
			for id := range onA {
				if onB[id] {
					if eq, err := f.st.A.KeyMaterialEqual(id, f.st.B); err == nil && !eq {
						t.Errorf("invariant (b): %s has different material on A and B", id)
					}
					continue
				}
				seen[id] = true
			}
			for id := range onB {
				if !onA[id] {
					seen[id] = true
				}
			}
			for id := range oneSided {
				if !seen[id] || !both {
					delete(oneSided, id)
				}
			}
			if !both {
				continue
			}
			for id := range seen {
				first, ok := oneSided[id]
				switch {
				case !ok:
					oneSided[id] = now
				case now.Sub(first) >= time.Second:
					t.Errorf("invariant (a): %s on one backend only for %s while every replica routes to both", id, now.Sub(first).Round(time.Millisecond))
					delete(oneSided, id)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func set(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// checkBothWays asserts (b) and (c) after a finalize with no CreateKey after it: every key on
// either side is on the other with the same material.
func checkBothWays(t *testing.T, f *fleetEnv) {
	t.Helper()
	checkIdentical(t, f.st)
	for _, id := range migratable(f.st, f.st.B) {
		if eq, err := f.st.B.KeyMaterialEqual(id, f.st.A); err != nil || !eq {
			t.Errorf("invariant (c): key %s on B is not on A with the same material (equal=%v, err=%v)", id, eq, err)
		}
	}
}
