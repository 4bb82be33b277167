package cutover

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// BenchmarkCopyVerify1000 copies and verifies 1000 keys between two
// in-process emulators over loopback TLS (target: ≤ 10 s per migration).
func BenchmarkCopyVerify1000(b *testing.B) {
	const n = 1000
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newEnv(b, kmsemu.CosmianXKSService)
		for k := range n {
			uid := fmt.Sprintf("bench-%04d", k)
			if err := e.A.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}); err != nil {
				b.Fatal(err)
			}
			if err := e.A.GrantAccess("admin", uid, "arn:aws:iam::123456789012:role/app", "encrypt", "decrypt", "getattributes"); err != nil {
				b.Fatal(err)
			}
		}
		c := e.controller(b, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		b.StartTimer()
		start := time.Now()
		if err := c.Start(ctx, StartOptions{}); err != nil {
			b.Fatal(err)
		}
		st, err := c.Wait(ctx, StateVerified, StateCopyFailed, StateVerifyFailed)
		elapsed := time.Since(start)
		b.StopTimer()
		cancel()
		e.stop(c)
		if err != nil || st.State != StateVerified || st.Keys.Verified != n {
			b.Fatalf("state %s, %+v, %v, %s", st.State, st.Keys, err, st.LastError)
		}
		total += elapsed
	}
	secs := total.Seconds() / float64(b.N)
	b.ReportMetric(secs, "s/migration")
	b.ReportMetric(n/secs, "keys/s")
}
