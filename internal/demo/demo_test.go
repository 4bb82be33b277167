package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestDemoSmall runs the whole story on a small scale: every check the demo makes (no failed
// request, every key verified and byte-identical on B, every pre-switch ciphertext decrypts,
// finalized on B) must hold, and every figure the README documents must be in the JSON.
func TestDemoSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a full migration under load")
	}
	rep, progress := runSmall(t, 3*time.Minute, Options{Keys: 30, RPS: 80})
	if rep.KeysTotal < 30 || rep.RequestsTotal == 0 || rep.Redecrypted == 0 || rep.ServingBackend != "b" {
		t.Fatalf("implausible report %+v", rep)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"keys_total", "keys_copied", "keys_verified", "grants_copied",
		"requests_total", "requests_failed", "requests_over_250ms", "p50_ms", "p99_ms",
		"p99_during_cutover_ms", "cutover_seconds", "disconnected_seconds", "fallbacks"} {
		if !bytes.Contains(b, []byte(`"`+field+`":`)) {
			t.Errorf("JSON lacks %q: %s", field, b)
		}
	}
	if !strings.Contains(progress.String(), "finalized") {
		t.Errorf("progress did not report the finalize:\n%s", progress.String())
	}
}

// runSmall runs the demo with o on a short schedule and fails the test unless it passed; it
// returns the report and the progress lines.
func runSmall(t *testing.T, limit time.Duration, o Options) (*Report, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var progress bytes.Buffer
	o.Warmup, o.Shadow, o.Probation, o.Tail, o.Progress = time.Second, 500*time.Millisecond, 2*time.Second, 500*time.Millisecond, &progress
	// The race detector slows every component several times over; AWS's 250 ms budget is what
	// the real demo and the benchmarks use.
	o.Timeout, o.Budget, o.BackendTimeout, o.ProbationMaxP99 = 5*time.Second, 4*time.Second, 2*time.Second, 10*time.Second
	rep, err := Run(ctx, o)
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
	return rep, &progress
}

func TestReportVerdict(t *testing.T) {
	good := Report{KeysTotal: 3, KeysVerified: 3, KeysOnA: 4, KeysIdentical: 4, FinalState: "finalized"}
	tests := []struct {
		name string
		mut  func(*Report)
		ok   bool
	}{
		{"all good", func(*Report) {}, true},
		{"a failed request", func(r *Report) { r.RequestsFailed = 1 }, false},
		{"a key not verified", func(r *Report) { r.KeysVerified = 2 }, false},
		{"a key differs on B", func(r *Report) { r.KeysIdentical = 3 }, false},
		{"an old ciphertext fails", func(r *Report) { r.RedecryptFailed = 1 }, false},
		{"not finalized", func(r *Report) { r.FinalState = "rolled_back" }, false},
		{"a failure noted", func(r *Report) { r.Failures = []string{"x"} }, false},
		{"fleet: all good", func(r *Report) { r.Replicas, r.DriverChanges, r.MembersAcked = 3, 1, 3 }, true},
		{"fleet: the driver never changed", func(r *Report) { r.Replicas, r.DriverChanges, r.MembersAcked = 3, 0, 3 }, false},
		{"fleet: a member did not acknowledge", func(r *Report) { r.Replicas, r.DriverChanges, r.MembersAcked = 3, 1, 2 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mut(&r)
			if r.OK() != tc.ok {
				t.Fatalf("OK() = %v, want %v", r.OK(), tc.ok)
			}
		})
	}
}
