package cutover

import (
	"errors"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// A plan is refused, naming the backend, while a side's KMIP access is broken (a plan that read
// the broken side would list every key as missing there); a start is refused while a side
// refuses the credential (the copy would fail key by key), and accepted while a side does not
// answer (the copy waits for it: TestSourceDownDuringCopy).
func TestPlanAndStartNeedBothSidesAccess(t *testing.T) {
	for _, tc := range []struct {
		name, broken string
		side         func(e *env) *failPath
	}{
		{"target", "B", func(e *env) *failPath { return &e.failB }},
		{"source", "A", func(e *env) *failPath { return &e.failA }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			seedMixed(t, e.A, 2)
			c := e.controller(t, nil)
			ctx := ctxT(t)
			fp := tc.side(e)

			fp.set("/me") // the server does not answer
			_, err := c.Plan(ctx)
			if !errors.Is(err, ErrBackendAccess) || !strings.Contains(err.Error(), "backend "+tc.broken) {
				t.Fatalf("plan with %s not answering: %v, want ErrBackendAccess naming backend %s", tc.broken, err, tc.broken)
			}

			fp.deny("/me") // the server refuses the credential
			_, err = c.Plan(ctx)
			if !errors.Is(err, ErrBackendAccess) || !strings.Contains(err.Error(), "does not accept this client's credential") {
				t.Fatalf("plan with %s refusing the credential: %v, want ErrBackendAccess saying so", tc.broken, err)
			}
			if err := c.Start(ctx, StartOptions{}); !errors.Is(err, ErrBackendAccess) {
				t.Fatalf("start with %s refusing the credential: %v, want ErrBackendAccess", tc.broken, err)
			}
			if st := c.Status().State; st != StateServing {
				t.Fatalf("state after the refused start: %s, want %s", st, StateServing)
			}

			fp.denied.Store(false)
			fp.set("")
			if _, err := c.Plan(ctx); err != nil {
				t.Fatalf("plan once both answer: %v", err)
			}
		})
	}
}
