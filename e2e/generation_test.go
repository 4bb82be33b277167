package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
)

// TestGenerations migrates through the proxy between the emulated Cosmian generations, 5.26 →
// the newer XKS generation and the reverse, under load with CreateKey traffic: switch, keys
// created on B while it serves, an operator rollback that carries them back to A, then a second
// migration that finalizes. No request fails and both ends hold the same keys.
func TestGenerations(t *testing.T) {
	for _, tc := range []struct{ a, b kmsemu.Generation }{
		{kmsemu.Cosmian526, kmsemu.CosmianXKSService},
		{kmsemu.CosmianXKSService, kmsemu.Cosmian526},
	} {
		t.Run(string(tc.a)+"→"+string(tc.b), func(t *testing.T) {
			// Keys AWS created on a newer A before the migration are granted only to
			// [aws-xks-service]: a 5.26 B can serve them only through a grant to every user,
			// which needs the operator's consent (README: "Cosmian generations").
			st, keys := startStack(t, 20, devstack.Config{Probation: testProbation(60 * time.Second), CosmianA: tc.a, CosmianB: tc.b,
				GrantEveryoneForServiceKeys: tc.b == kmsemu.Cosmian526})
			ctrl := st.App.Cutover
			ctx := context.Background()
			l := startLoad(t, st, keys, loadOpts{rate: 60, createKey: "e2e-gen-%d",
				mix: loadgen.Mix{Encrypt: 0.45, Decrypt: 0.45, CreateKey: 0.1}})
			time.Sleep(300 * time.Millisecond)
			if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
				t.Fatalf("start: %v", err)
			}
			waitState(t, st, cutover.StateSwitched, stuck...)
			waitFor(t, waitLong, "keys created on B after the switch", func() bool {
				n := 0
				for _, id := range ctrl.Status().CreatedOnTarget {
					if _, ok := st.B.Object(id); ok {
						n++
					}
				}
				return n >= 2
			})
			if err := ctrl.Rollback(ctx, "generation test"); err != nil {
				t.Fatalf("rollback: %v", err)
			}
			for _, id := range ctrl.Status().CreatedOnTarget {
				if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
					t.Errorf("key %s created on B not carried back to A (equal=%v, err=%v)", id, eq, err)
				}
			}
			if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
				t.Fatalf("second start: %v", err)
			}
			waitState(t, st, cutover.StateSwitched, stuck...)
			l.lg.Stop() // no CreateKey may land on B between Finalize's listing and the comparison
			if err := ctrl.Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}); err != nil {
				t.Fatalf("finalize: %v", err)
			}
			noFailures(t, "traffic", l.stop())
			checkIdentical(t, st)
			redecryptAll(t, l)
		})
	}
}
