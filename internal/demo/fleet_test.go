package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestDemoReplicas runs the fleet story small: three proxies over an embedded etcd, load
// round-robin over them, a non-driver killed and restarted during the copy, the driver killed
// after the switch and another one finalizing. Every check of the one-proxy demo must hold,
// plus a driver change and every member's acknowledgement of the final epoch.
func TestDemoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a full fleet migration under load")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		Replicas: 3, Keys: 12, RPS: 20, Warmup: time.Second, Shadow: 500 * time.Millisecond,
		Probation: 2 * time.Second, Tail: 500 * time.Millisecond, Progress: &progress,
		// Generous for the race detector on a shared machine (the CLI keeps AWS's 250 ms).
		Timeout: 5 * time.Second, Budget: 4 * time.Second, BackendTimeout: 2 * time.Second,
		ProbationMaxP99: 10 * time.Second, FleetLease: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log(progress.String())
	t.Log(text.String())
	if !rep.OK() {
		t.Fatalf("demo failed:\n%s", text.String())
	}
	if rep.Replicas != 3 || rep.DriverChanges < 1 || rep.MembersAcked != 3 || len(rep.PerReplica) != 3 {
		t.Fatalf("fleet figures %+v", rep)
	}
	var sum int64
	for name, s := range rep.PerReplica {
		if s.Requests == 0 || s.Failed != 0 {
			t.Errorf("replica %s: %+v", name, s)
		}
		sum += s.Requests
	}
	if sum != rep.RequestsTotal-rep.Errors["dropped_client_overload"] {
		t.Errorf("replicas served %d of %d requests", sum, rep.RequestsTotal)
	}
	for _, want := range []string{"killing r2, not the driver, during the copy", "elected driver", "finalized through"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"replicas", "driver_changes", "members_acked", "per_replica", "requests_failed"} {
		if !bytes.Contains(b, []byte(`"`+field+`":`)) {
			t.Errorf("JSON lacks %q: %s", field, b)
		}
	}
}
