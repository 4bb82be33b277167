package cutover

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestFileJournalIncremental(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/cutover.json"
	h := func(epoch uint64, st State) *Header {
		return &Header{Version: journalVersion, Epoch: epoch, State: st, Source: "a", Target: "b"}
	}
	f := newFileStorage(path)
	if s, err := f.Load(ctx); err != nil || s != nil {
		t.Fatalf("empty: %v %v", s, err)
	}
	must(t, f.Save(ctx, Change{Header: h(1, StateServing)}))
	must(t, f.Save(ctx, Change{PrevEpoch: 1, Header: h(2, StateCopying), ResetKeys: true}))
	for i := range 10 {
		must(t, f.Save(ctx, Change{PrevEpoch: 2, Keys: map[string]*KeyProgress{
			fmt.Sprintf("k%d", i): {Phase: PhaseCopy, Result: ResultOK}}}))
	}
	must(t, f.Save(ctx, Change{PrevEpoch: 2, Keys: map[string]*KeyProgress{"k3": nil},
		Created: []CreatedKey{{ID: "new", By: "arn:aws:iam::1:role/x"}}}))
	f.close()
	// A write after the controller stopped (an operator call still in flight) is refused, never
	// a file reopened behind the stopped controller.
	if err := f.Save(ctx, Change{PrevEpoch: 2, Header: h(3, StateVerifying)}); err == nil {
		t.Error("a write after close was taken")
	}
	data, err := os.ReadFile(path)
	must(t, err)
	if n := strings.Count(string(data), "\n"); n != 12 {
		t.Fatalf("want a snapshot and 11 appended lines, got %d lines", n)
	}

	// The note's By, as earlier releases wrote it, loads and is dropped: a caller's principal is
	// never a source of rights.
	t.Run("reload applies the appended changes", func(t *testing.T) {
		s, err := newFileStorage(path).Load(ctx)
		must(t, err)
		if s.Header.Epoch != 2 || len(s.Keys) != 9 || s.Keys["k3"] != nil || len(s.Created) != 1 || s.Created[0].By != "" {
			t.Fatalf("loaded %+v, %d keys, created %+v", s.Header, len(s.Keys), s.Created)
		}
	})
	t.Run("a torn last append is dropped", func(t *testing.T) {
		torn := path + ".torn"
		must(t, os.WriteFile(torn, append(append([]byte{}, data...), []byte(`{"change":{"keys":{"k9":{"pha`)...), 0o600))
		s, err := newFileStorage(torn).Load(ctx)
		must(t, err)
		if len(s.Keys) != 9 {
			t.Fatalf("%d keys", len(s.Keys))
		}
	})
	t.Run("garbage in the middle is corruption", func(t *testing.T) {
		bad := path + ".bad"
		must(t, os.WriteFile(bad, append(append([]byte{}, data...), []byte("{\"nope\":1}\n{\"change\":{}}\n")...), 0o600))
		if _, err := newFileStorage(bad).Load(ctx); err == nil || !strings.Contains(err.Error(), "appended change") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("rewritten once the appended part outgrows the snapshot", func(t *testing.T) {
		g := newFileStorage(path)
		g.minCompact = 16 << 10
		_, err := g.Load(ctx)
		must(t, err)
		for i := range 2000 {
			must(t, g.Save(ctx, Change{PrevEpoch: 2, Keys: map[string]*KeyProgress{
				fmt.Sprintf("key-%06d", i%500): {Phase: PhaseVerify, Result: ResultOK}}}))
		}
		g.close()
		st, err := os.Stat(path)
		must(t, err)
		if st.Size() > 6*g.minCompact {
			t.Fatalf("journal grew to %d bytes", st.Size())
		}
		s, err := newFileStorage(path).Load(ctx)
		must(t, err)
		if len(s.Keys) != 509 {
			t.Fatalf("%d keys", len(s.Keys))
		}
	})
}
