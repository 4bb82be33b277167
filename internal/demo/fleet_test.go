package demo

import (
	"bytes"
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
	rep, progress := runSmall(t, 4*time.Minute, Options{Replicas: 3, Keys: 12, RPS: 20, FleetLease: 10 * time.Second})
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
