package cutover

import (
	"errors"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// A plan or a start is refused, naming the backend, while a side's KMIP access is broken:
// a plan that read the broken side would list every key as missing there, and a start would
// only fail later, key by key.
func TestPlanAndStartNeedBothSidesAccess(t *testing.T) {
	for _, tc := range []struct {
		name, broken string
		fail         func(e *env, path string)
	}{
		{"target", "B", func(e *env, p string) { e.failB.set(p) }},
		{"source", "A", func(e *env, p string) { e.failA.set(p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			seedMixed(t, e.A, 2)
			c := e.controller(t, nil)
			ctx := ctxT(t)
			tc.fail(e, "/me")
			_, err := c.Plan(ctx)
			if !errors.Is(err, ErrBackendAccess) || !strings.Contains(err.Error(), "backend "+tc.broken) {
				t.Fatalf("plan with %s's /me failing: %v, want ErrBackendAccess naming backend %s", tc.broken, err, tc.broken)
			}
			err = c.Start(ctx, StartOptions{})
			if !errors.Is(err, ErrBackendAccess) {
				t.Fatalf("start with %s's /me failing: %v, want ErrBackendAccess", tc.broken, err)
			}
			if st := c.Status().State; st != StateServing {
				t.Fatalf("state after the refused start: %s, want %s", st, StateServing)
			}
			tc.fail(e, "")
			if _, err := c.Plan(ctx); err != nil {
				t.Fatalf("plan once both answer: %v", err)
			}
		})
	}
}
