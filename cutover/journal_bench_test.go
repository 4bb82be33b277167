package cutover

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkJournalMigration writes the journal of a whole migration of n keys as the controller
// does: every key's copy and then its verification recorded, saved in batches of 100 changed
// keys (a 200 ms flush), with the transitions in between. ns/key must stay flat from 1 000 to
// 100 000 keys (the journal used to rewrite the whole key map on every flush: quadratic).
//
//	go test -run '^$' -bench BenchmarkJournalMigration -benchtime 1x ./cutover/
func BenchmarkJournalMigration(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprintf("file/keys=%d", n), func(b *testing.B) {
			for range b.N {
				st := newFileStorage(b.TempDir() + "/cutover.json")
				runJournal(b, st, n)
				st.close()
			}
		})
	}
}

// runJournal drives st through a migration of n keys and reports ns/key.
func runJournal(b *testing.B, st Storage, n int) {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("aws-xks-key-%08d", i)
	}
	h := &Header{Version: journalVersion, Epoch: 1, State: StateServing, Source: "a", Target: "b"}
	start := time.Now()
	if err := st.Save(ctx, Change{Header: h}); err != nil {
		b.Fatal(err)
	}
	epoch := uint64(1)
	next := func(s State, reset bool) {
		hh := *h
		hh.Epoch, hh.State = epoch+1, s
		if err := st.Save(ctx, Change{PrevEpoch: epoch, Header: &hh, ResetKeys: reset}); err != nil {
			b.Fatal(err)
		}
		epoch++
	}
	next(StateCopying, true)
	for _, phase := range []Phase{PhaseCopy, PhaseVerify} {
		for i := 0; i < n; i += 100 {
			ch := Change{PrevEpoch: epoch, Keys: map[string]*KeyProgress{}}
			for _, id := range ids[i:min(i+100, n)] {
				ch.Keys[id] = &KeyProgress{Phase: phase, Result: ResultOK}
			}
			if err := st.Save(ctx, ch); err != nil {
				b.Fatal(err)
			}
		}
		next(map[Phase]State{PhaseCopy: StateVerifying, PhaseVerify: StateVerified}[phase], false)
	}
	el := time.Since(start)
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/key")
	b.ReportMetric(el.Seconds(), "s/migration")
}

// rewriteStorage is the former journal for comparison: the whole journal rewritten on every
// save.
type rewriteStorage struct {
	journalFile
	j *journal
}

func (r *rewriteStorage) Load(context.Context) (*Snapshot, error) { return nil, nil }
func (r *rewriteStorage) Where() string                           { return r.path }
func (r *rewriteStorage) Save(_ context.Context, ch Change) error {
	if r.j == nil {
		r.j = &journal{Keys: map[string]*KeyProgress{}}
	}
	r.j.apply(&changeRecord{Header: ch.Header, ResetKeys: ch.ResetKeys, Keys: ch.Keys, Created: ch.Created})
	_, err := r.write(r.j)
	return err
}

// BenchmarkJournalMigrationRewrite is the same migration on the former whole-file journal
// (quadratic: 100 000 keys is left out, it would take hours).
func BenchmarkJournalMigrationRewrite(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("rewrite/keys=%d", n), func(b *testing.B) {
			for range b.N {
				runJournal(b, &rewriteStorage{journalFile: journalFile{path: b.TempDir() + "/cutover.json"}}, n)
			}
		})
	}
}
