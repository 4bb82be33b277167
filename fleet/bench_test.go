package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/etcdtest"
)

// BenchmarkEtcdJournalMigration is cutover's BenchmarkJournalMigration on the etcd store
// (embedded etcd over TLS on loopback, no fsync): every key's copy and verification saved by
// the driver in fenced batches of 100 changed keys. ns/key must stay flat from 1 000 to
// 100 000 keys.
//
//	go test -run '^$' -bench BenchmarkEtcdJournalMigration -benchtime 1x ./fleet/
func BenchmarkEtcdJournalMigration(b *testing.B) {
	srv := etcdtest.Start(b)
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("etcd/keys=%d", n), func(b *testing.B) {
			for i := range b.N {
				ctx := context.Background()
				st, err := Open(Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile, Member: "bench",
					KeyPrefix: fmt.Sprintf("/bench/%d/%d/", n, i), LeaseTTL: 10 * time.Second, RequestTimeout: 30 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := st.Campaign(ctx); err != nil {
					b.Fatal(err)
				}
				runJournal(b, st, n)
				// Reading it all back is part of a driver take-over.
				t0 := time.Now()
				snap, err := st.Load(ctx)
				if err != nil || len(snap.Keys) != n {
					b.Fatalf("load: %d keys, %v", len(snap.Keys), err)
				}
				b.ReportMetric(time.Since(t0).Seconds(), "s/load")
				st.Close()
			}
		})
	}
}

func runJournal(b *testing.B, st cutover.Storage, n int) {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("aws-xks-key-%08d", i)
	}
	h := &cutover.Header{Version: 1, Epoch: 1, State: cutover.StateServing, Source: "a", Target: "b"}
	start := time.Now()
	if err := st.Save(ctx, cutover.Change{Header: h}); err != nil {
		b.Fatal(err)
	}
	epoch := uint64(1)
	next := func(s cutover.State, reset bool) {
		hh := *h
		hh.Epoch, hh.State = epoch+1, s
		if err := st.Save(ctx, cutover.Change{PrevEpoch: epoch, Header: &hh, ResetKeys: reset}); err != nil {
			b.Fatal(err)
		}
		epoch++
	}
	next(cutover.StateCopying, true)
	for _, phase := range []cutover.Phase{cutover.PhaseCopy, cutover.PhaseVerify} {
		for i := 0; i < n; i += 100 {
			ch := cutover.Change{PrevEpoch: epoch, Keys: map[string]*cutover.KeyProgress{}}
			for _, id := range ids[i:min(i+100, n)] {
				ch.Keys[id] = &cutover.KeyProgress{Phase: phase, Result: cutover.ResultOK}
			}
			if err := st.Save(ctx, ch); err != nil {
				b.Fatal(err)
			}
		}
		if phase == cutover.PhaseCopy {
			next(cutover.StateVerifying, false)
		} else {
			next(cutover.StateVerified, false)
		}
	}
	el := time.Since(start)
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/key")
	b.ReportMetric(el.Seconds(), "s/migration")
}
