package e2e

import (
	"context"
	"strings"
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
			// which needs the operator's consent (README: "Cosmian generations"). From 5.26 to
			// a newer B no consent is needed: keys AWS creates while switched are minted on A,
			// whose grant to their creator the copy carries (cutover.MintOn).
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
			// Keys created after the switch: on B (newer → 5.26), or minted on A and copied to B
			// (5.26 → newer).
			created := func() []string {
				var ids []string
				for _, o := range st.B.Objects() {
					if strings.HasPrefix(o.UID, "e2e-gen-") {
						if _, ok := st.A.Object(o.UID); ok || tc.a == kmsemu.CosmianXKSService {
							ids = append(ids, o.UID)
						}
					}
				}
				return ids
			}
			waitFor(t, waitLong, "keys created after the switch", func() bool { return len(created()) >= 2 })
			if tc.a == kmsemu.Cosmian526 && len(ctrl.Status().CreatedOnTarget) > 0 {
				t.Errorf("keys minted on the newer B while switched: %v", ctrl.Status().CreatedOnTarget)
			}
			if err := ctrl.Rollback(ctx, "generation test"); err != nil {
				t.Fatalf("rollback: %v", err)
			}
			for _, id := range created() {
				if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
					t.Errorf("key %s created after the switch is not the same on A and B (equal=%v, err=%v)", id, eq, err)
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
