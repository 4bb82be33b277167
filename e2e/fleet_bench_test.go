package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// TestFleetMigration10k is the fleet's performance figure, not a pass/fail timing: 10 000 keys
// migrated with three replicas against the emulators (signed load through every replica), from
// start to every member on the switched, then the finalized epoch. It runs only when asked
// (several minutes under -race):
//
//	XKS_FLEET_10K=1 go test -run TestFleetMigration10k -v -timeout 30m ./e2e/
func TestFleetMigration10k(t *testing.T) {
	if os.Getenv("XKS_FLEET_10K") == "" {
		t.Skip("set XKS_FLEET_10K=1 to run the 10 000-key fleet migration")
	}
	seed := time.Now()
	f := startFleet(t, 10000, 3, nil)
	t.Logf("10000 keys seeded on A and 3 replicas up in %s", time.Since(seed).Round(time.Millisecond))
	loads := f.loadAll(t, 5, "bench")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	begin := time.Now()
	if _, err := f.admin(f.nonDriver(t)).Start(ctx, cutover.StartOptions{AutoSwitch: true, AutoFinalize: true}); err != nil {
		t.Fatal(err)
	}
	f.waitAllWithin(t, cutover.StateSwitched, 30*time.Minute)
	switched := time.Since(begin)
	f.waitAllWithin(t, cutover.StateFinalized, 30*time.Minute)
	t.Logf("10000 keys, 3 replicas: every member switched after %s, finalized after %s",
		switched.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	stopLoads(t, "bench", loads...)
	checkIdentical(t, f.st)
}
