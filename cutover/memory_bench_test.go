package cutover

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkLedgerMemory reports what a replica holds in memory per key of a migration: the
// journal's key records (verified), the tally, and a created-key note for one key in 20 (a busy
// key store's CreateKeys meanwhile), as live heap after a GC. The demo's resident-set figures
// cover every replica, both emulators and the load generator together; this is one replica's
// share of the keys.
//
//	go test -run '^$' -bench BenchmarkLedgerMemory -benchtime 1x ./cutover/
func BenchmarkLedgerMemory(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				l := newLedger(nil, nil, nil, nil, nil, 0)
				l.j = &journal{Keys: map[string]*KeyProgress{}}
				for i := range n {
					id := fmt.Sprintf("aws-xks-key-%08d", i)
					l.mu.Lock()
					l.putKeyLocked(id, &KeyProgress{Phase: PhaseVerify, Result: ResultOK})
					if i%20 == 0 {
						l.addCreatedLocked(CreatedKey{ID: id})
					}
					l.mu.Unlock()
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "B/key")
				runtime.KeepAlive(l)
			}
		})
	}
}
