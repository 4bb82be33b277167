package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// BenchmarkCreateKey is a CreateKey of a new id through the proxy on loopback (signed, TLS,
// the emulators behind), with no migration and while switched: the figures are each CreateKey's
// own time, p50 and p99 (ms), one at a time. While switched a CreateKey asks both sides whether
// they hold the id (at once) and mints on the target; on probation it copies the key to the
// source before the reply (the source is the fallback for the target's failures), once
// probation passed the copy is the backfill's.
//
//	go test -run '^$' -bench BenchmarkCreateKey -benchtime 400x ./e2e/
func BenchmarkCreateKey(b *testing.B) {
	for _, name := range []string{"plain", "switched-on-probation", "switched-probation-passed"} {
		switched, passed := name != "plain", name == "switched-probation-passed"
		b.Run(name, func(b *testing.B) {
			probation := cutover.ProbationConfig{Duration: time.Hour, MaxP99: 5 * time.Second}
			if passed {
				probation = cutover.ProbationConfig{Duration: 500 * time.Millisecond, MaxP99: 5 * time.Second, MinRequests: new(1)}
			}
			var keys []devstack.Key
			for i := range 20 {
				keys = append(keys, devstack.Key{ID: fmt.Sprintf("bench-key-%02d", i), Grants: []string{principal}})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			// One generation on both sides: from 5.26 to a newer B, keys are minted on A while
			// switched (cutover.MintOn) and always copied before the reply.
			st, err := devstack.Start(ctx, devstack.Config{Listen: "127.0.0.1:0", Keys: keys, JournalPath: b.TempDir() + "/j.json",
				CosmianA: kmsemu.Cosmian528, CosmianB: kmsemu.Cosmian528,
				Logger: slog.New(slog.DiscardHandler), Probation: probation})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if switched {
				ctrl := st.App.Cutover
				if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true, NoShadow: true}); err != nil {
					b.Fatal(err)
				}
				if s, err := ctrl.Wait(ctx, cutover.StateSwitched, cutover.StateCopyFailed, cutover.StateVerifyFailed); err != nil || s.State != cutover.StateSwitched {
					b.Fatalf("not switched: %v %s", err, s.State)
				}
			}
			signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: st.Credential, Region: st.Region})
			if err != nil {
				b.Fatal(err)
			}
			c, err := xks.NewClient(xks.ClientConfig{BaseURL: st.Endpoint + st.Prefix + xks.APIPathSuffix, Signer: signer,
				HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: st.ClientTLS()}}, Timeout: 5 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			md := xks.RequestMetadata{AWSPrincipalArn: principal, KMSOperation: "CreateKey", KMSRequestID: "bench"}
			for i := range 20 { // warm the connections
				if _, err := c.Metadata(ctx, fmt.Sprintf("warm-%s-%d", name, i), md); err != nil {
					b.Fatal(err)
				}
			}
			if passed {
				for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
					if p := st.App.Cutover.Status().Probation; p != nil && p.Passed {
						break
					}
					if time.Now().After(deadline) {
						b.Fatal("probation did not pass")
					}
					if _, err := c.Metadata(ctx, "bench-key-00", xks.RequestMetadata{AWSPrincipalArn: principal, KMSOperation: "DescribeKey", KMSRequestID: "bench"}); err != nil {
						b.Fatal(err)
					}
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				if _, err := c.Metadata(ctx, fmt.Sprintf("new-%s-%d", name, i), md); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			pct := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
