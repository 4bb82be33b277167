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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		Keys: 30, RPS: 80, Warmup: time.Second, Shadow: 500 * time.Millisecond,
		Probation: 2 * time.Second, Tail: 500 * time.Millisecond, Progress: &progress,
		// The race detector slows every component several times over; AWS's 250 ms budget is
		// what the real demo and the benchmarks use.
		Timeout: 5 * time.Second, Budget: 4 * time.Second, BackendTimeout: 2 * time.Second,
		ProbationMaxP99: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Log(text.String())
	if !rep.OK() {
		t.Fatalf("demo failed:\n%s", text.String())
	}
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
