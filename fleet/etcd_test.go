package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/etcdtest"
)

func open(t *testing.T, srv *etcdtest.Server, member string) *Etcd {
	t.Helper()
	s, err := Open(Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile, Member: member,
		LeaseTTL: time.Second, MinLeaseTTL: time.Second, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func hdr(epoch uint64, st cutover.State) *cutover.Header {
	return &cutover.Header{Version: 1, Epoch: epoch, State: st, Source: "a", Target: "b"}
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no endpoints", Config{}, "endpoint"},
		{"bad member", Config{Endpoints: []string{"x"}, Member: "a/b"}, "member"},
		{"relative prefix", Config{Endpoints: []string{"x"}, Member: "m", KeyPrefix: "x"}, "prefix"},
		{"short ttl", Config{Endpoints: []string{"x"}, Member: "m", LeaseTTL: time.Second}, "minimum"},
		{"half pair", Config{Endpoints: []string{"x"}, Member: "m", CertFile: "c"}, "key_file"},
		{"half auth", Config{Endpoints: []string{"x"}, Member: "m", Username: "u"}, "password"},
		{"ok", Config{Endpoints: []string{"x"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.CheckAndSetDefaults()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.cfg.KeyPrefix != DefaultKeyPrefix || tc.cfg.LeaseTTL != DefaultLeaseTTL || tc.cfg.Member == "" {
					t.Fatalf("defaults not filled: %+v", tc.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want mention of %q", err, tc.err)
			}
		})
	}
}

func TestEtcdStore(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := open(t, srv, "a"), open(t, srv, "b")

	t.Run("first header created once, then fenced", func(t *testing.T) {
		if snap, err := a.Load(ctx); err != nil || snap != nil {
			t.Fatalf("Load on empty store = %v, %v", snap, err)
		}
		if err := a.Save(ctx, cutover.Change{Header: hdr(1, cutover.StateServing)}); err != nil {
			t.Fatal(err)
		}
		if err := b.Save(ctx, cutover.Change{Header: hdr(1, cutover.StateServing)}); !errors.Is(err, cutover.ErrFenced) {
			t.Fatalf("second initial header: %v, want ErrFenced", err)
		}
		if err := b.Save(ctx, cutover.Change{PrevEpoch: 1, Header: hdr(2, cutover.StateCopying)}); !errors.Is(err, cutover.ErrFenced) {
			t.Fatalf("non-driver transition: %v, want ErrFenced", err)
		}
	})

	leadA, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("driver writes 300 keys in batches", func(t *testing.T) {
		keys := map[string]*cutover.KeyProgress{}
		for i := range 300 {
			keys[fmt.Sprintf("k%04d", i)] = &cutover.KeyProgress{Phase: cutover.PhaseCopy, Result: cutover.ResultOK}
		}
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 1, Header: hdr(2, cutover.StateCopying), ResetKeys: true, Keys: keys,
			Created: []cutover.CreatedKey{{ID: "new-1", OnTarget: true}}}); err != nil {
			t.Fatal(err)
		}
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 1, Keys: keys}); !errors.Is(err, cutover.ErrFenced) {
			t.Fatalf("stale epoch: %v, want ErrFenced", err)
		}
		snap, err := b.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Header.Epoch != 2 || len(snap.Keys) != 300 || len(snap.Created) != 1 || !snap.Created[0].OnTarget {
			t.Fatalf("loaded epoch %d, %d keys, created %+v", snap.Header.Epoch, len(snap.Keys), snap.Created)
		}
	})

	t.Run("watch sees headers, notes and key records after the load", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		got := make(chan cutover.WatchEvent, 10)
		go b.Watch(wctx, func(ev cutover.WatchEvent) { got <- ev })
		defer wcancel()
		if err := b.Save(ctx, cutover.Change{Created: []cutover.CreatedKey{{ID: "new-2", OnTarget: true}}}); err != nil {
			t.Fatal(err)
		}
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 2, Header: hdr(3, cutover.StateVerifying)}); err != nil {
			t.Fatal(err)
		}
		// A key record written and then deleted by the driver reaches every member.
		kp := &cutover.KeyProgress{Phase: cutover.PhaseCopy, Result: cutover.ResultOK}
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 3, Keys: map[string]*cutover.KeyProgress{"k-9": kp}}); err != nil {
			t.Fatal(err)
		}
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 3, Keys: map[string]*cutover.KeyProgress{"k-9": nil}}); err != nil {
			t.Fatal(err)
		}
		var sawNote, sawHeader, sawKey, sawKeyDeleted bool
		for !sawNote || !sawHeader || !sawKeyDeleted {
			select {
			case ev := <-got:
				sawNote = sawNote || (ev.Created != nil && ev.Created.ID == "new-2" && ev.Created.OnTarget)
				sawHeader = sawHeader || (ev.Header != nil && ev.Header.Epoch == 3)
				if k := ev.Key; k != nil && k.ID == "k-9" {
					if k.Progress != nil {
						sawKey = *k.Progress == *kp
					} else {
						sawKeyDeleted = sawKey // in order: the record, then its deletion
					}
				}
			case <-ctx.Done():
				t.Fatal("watch events not seen")
			}
		}
	})

	t.Run("members, acks and forget", func(t *testing.T) {
		if err := a.Publish(ctx, cutover.MemberRecord{AppliedEpoch: 3, Primary: "a", Heartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, cutover.MemberRecord{AppliedEpoch: 2, Primary: "a", Heartbeat: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ms, err := a.Members(ctx)
		if err != nil || len(ms) != 2 || !ms[0].Live || !ms[1].Live || ms[0].AppliedEpoch != 3 || ms[1].AppliedEpoch != 2 {
			t.Fatalf("members = %+v, %v", ms, err)
		}
		if err := a.Forget(ctx, "b"); !errors.Is(err, cutover.ErrMemberAlive) {
			t.Fatalf("forget a live member: %v", err)
		}
		if err := a.Forget(ctx, "zz"); !errors.Is(err, cutover.ErrUnknownMember) {
			t.Fatalf("forget an unknown member: %v", err)
		}
		b.Close() // revokes its lease: expired at once, still registered
		ms, err = a.Members(ctx)
		if err != nil || len(ms) != 2 || ms[1].Name != "b" || ms[1].Live || ms[1].AppliedEpoch != 2 {
			t.Fatalf("after b left: %+v, %v", ms, err)
		}
		if err := a.Forget(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if ms, _ := a.Members(ctx); len(ms) != 1 {
			t.Fatalf("after forget: %+v", ms)
		}
	})

	t.Run("a deposed driver cannot write", func(t *testing.T) {
		if name, _, err := a.Driver(ctx); err != nil || name != "a" {
			t.Fatalf("driver = %q, %v", name, err)
		}
		c := open(t, srv, "c")
		elected := make(chan error, 1)
		go func() { _, err := c.Campaign(ctx); elected <- err }()
		// a's session ends (as when its lease expires): c is elected, a's writes are fenced.
		a.mu.Lock()
		s := a.sess
		a.mu.Unlock()
		if _, err := a.cli.Revoke(ctx, s.Lease()); err != nil {
			t.Fatal(err)
		}
		if err := <-elected; err != nil {
			t.Fatal(err)
		}
		<-leadA.Done()
		if err := a.Save(ctx, cutover.Change{PrevEpoch: 3, Header: hdr(4, cutover.StateVerified)}); !errors.Is(err, cutover.ErrFenced) {
			t.Fatalf("deposed driver wrote: %v", err)
		}
		if err := c.Save(ctx, cutover.Change{PrevEpoch: 3, Header: hdr(4, cutover.StateVerified)}); err != nil {
			t.Fatal(err)
		}
	})
}
