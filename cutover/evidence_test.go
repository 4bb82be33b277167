package cutover

import (
	"errors"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// TestProbationNeedsEvidence: with no traffic, probation does not pass when its duration is
// over (status says why), finalize is refused without force and a reason, and probation passes
// once the target has served MinRequests.
func TestProbationNeedsEvidence(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 2)
	minReq := 5
	c := e.controller(t, func(cfg *Config) {
		cfg.Probation = ProbationConfig{Duration: 100 * time.Millisecond, MinRequests: &minReq, MaxP99: time.Minute}
	})
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	waitCond(t, "probation to say it waits for requests", func() bool {
		p := c.Status().Probation
		return p != nil && p.Waiting != ""
	})
	if p := c.Status().Probation; p.Passed {
		t.Fatalf("probation passed with no request: %+v", p)
	}
	if err := c.Finalize(ctx, FinalizeOptions{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("finalize without passed probation: %v", err)
	}
	if err := c.Finalize(ctx, FinalizeOptions{Force: true}); !errors.Is(err, ErrRefused) {
		t.Fatalf("finalize with force but no reason: %v", err)
	}
	for range minReq {
		c.Traffic().Observe("B", "", time.Millisecond, false)
	}
	waitCond(t, "probation to pass", func() bool { p := c.Status().Probation; return p != nil && p.Passed })
	must(t, c.Finalize(ctx, FinalizeOptions{}))
}

func TestCountsAsFailure(t *testing.T) {
	for _, tc := range []struct {
		name xks.ErrorName
		want bool
	}{
		{"", false}, {xks.ValidationException, false}, {xks.AuthenticationFailedException, false},
		// A split key shows as InvalidCiphertext on the target: it must count.
		{xks.InvalidCiphertextException, true},
		{xks.KeyNotFoundException, true}, {xks.InternalException, true}, {xks.InvalidKeyUsageException, true},
	} {
		t.Run(string(tc.name), func(t *testing.T) {
			if got := countsAsFailure(tc.name); got != tc.want {
				t.Errorf("countsAsFailure(%q) = %v", tc.name, got)
			}
		})
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
