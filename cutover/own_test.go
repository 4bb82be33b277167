package cutover

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// ownLikeIDs are customer keys with the names the proxy's own objects have (or had in earlier
// releases): they are keys like any other.
var ownLikeIDs = []string{LegacyMarkerID, "xksproxy-storage-canary-0123abcd", legacyHealthKeyID,
	markerIDPrefix + "0123456789abcdef0123456789abcdef"}

// A customer key named like one of the proxy's own objects is planned (and said to be), copied,
// verified and served like any other, with every selection mode; none is replaced or left out.
func TestCustomerKeysNamedLikeOwnObjects(t *testing.T) {
	for _, mode := range []SelectMode{SelectTag, SelectOwned} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			ids := seedMixed(t, e.A, 3)
			ctx := ctxT(t)
			before := map[string]*cosmian.EncryptResult{}
			for _, id := range ownLikeIDs {
				must(t, e.A.CreateKey("admin", id, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
				must(t, e.A.GrantAccess("admin", id, "arn:aws:iam::123456789012:user/Alice", xksServiceOps...))
				r, err := e.cA.Encrypt(ctx, id, []byte("customer data"), nil)
				must(t, err)
				before[id] = r
			}
			c := e.controller(t, func(cfg *Config) { cfg.Select = Selection{Mode: mode} })
			p, err := c.Plan(ctx)
			must(t, err)
			for _, id := range ownLikeIDs {
				i := slices.IndexFunc(p.Keys, func(k PlanKey) bool { return k.KeyID == id })
				if i < 0 {
					t.Errorf("%s is not in the plan", id)
					continue
				}
				if k := p.Keys[i]; k.Action != ActionCopy || !strings.Contains(k.Reason, "migrated like any other") {
					t.Errorf("plan for %s: %+v", id, k)
				}
			}
			must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
			mustWait(t, c, StateSwitched)
			must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test"}))
			e.checkCopies(t, append(ids, ownLikeIDs...))
			for _, id := range ownLikeIDs {
				// Never replaced on A either: what was encrypted before still decrypts on both.
				for name, cl := range map[string]*cosmian.Client{"A": e.cA, "B": e.cB} {
					r := before[id]
					if pt, err := cl.Decrypt(ctx, id, r.Ciphertext, r.IV, r.Tag, nil); err != nil || string(pt) != "customer data" {
						t.Errorf("%s on %s: data encrypted before the migration: %q %v", id, name, pt, err)
					}
				}
				if c.Traffic().Reserved(id) {
					t.Errorf("the customer key %s is reserved", id)
				}
			}
			if st := c.Status(); st.Keys.Total != len(ids)+len(ownLikeIDs) {
				t.Errorf("status counts %d keys, want %d (the marker is no key)", st.Keys.Total, len(ids)+len(ownLikeIDs))
			}
		})
	}
}

// The proxy's own objects are named by the key store's random identity and refused to callers;
// a canary is reserved only while it lives.
func TestReservedIDs(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	c := e.controller(t, nil)
	ks := c.Traffic().keyStore()
	if !c.Traffic().Reserved(markerID(ks)) {
		t.Errorf("this key store's marker %s is not reserved", markerID(ks))
	}
	for _, id := range append(slices.Clone(ownLikeIDs), "key-000", "xksproxy-", markerIDPrefix) {
		if c.Traffic().Reserved(id) {
			t.Errorf("%s is reserved", id)
		}
	}
	shared, err := c.probe.detectShared(ctxT(t))
	must(t, err)
	if shared {
		t.Fatal("two separate servers detected as shared")
	}
	if len(c.probe.canaries) != 0 {
		t.Errorf("canaries still reserved after the detection: %v", c.probe.canaries)
	}
	for _, o := range e.A.Objects() {
		if strings.HasPrefix(o.UID, canaryPrefix) {
			t.Errorf("canary %s left on A", o.UID)
		}
	}
}

// A transition is recorded on the backends before the journal: with neither backend able to
// record it, it is not taken (state, journal and route unchanged); with one, it is.
func TestTransitionRecordedOnTheBackendsFirst(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 2)
	c := e.controller(t, func(cfg *Config) { cfg.MarkerTimeout = 300 * time.Millisecond })
	markerOn(t, e.A, "A", 1)
	markerOn(t, e.B, "B", 1)
	journal, err := os.ReadFile(e.journal)
	must(t, err)
	routes := len(e.router.routes)
	e.failA.set("/kmip")
	e.failB.set("/kmip")
	err = c.Start(ctxT(t), StartOptions{})
	if err == nil || !strings.Contains(err.Error(), "recording epoch 2 on the backends failed") {
		t.Fatalf("start with neither backend recording: %v", err)
	}
	if st := c.Status(); st.State != StateServing || st.Epoch != 1 {
		t.Errorf("state %s epoch %d after a transition the backends did not record", st.State, st.Epoch)
	}
	if now, _ := os.ReadFile(e.journal); string(now) != string(journal) {
		t.Errorf("the journal changed")
	}
	if len(e.router.routes) != routes {
		t.Errorf("the route changed")
	}
	e.failB.set("") // B answers, A does not: enough
	must(t, c.Start(ctxT(t), StartOptions{}))
	if m := markerOn(t, e.B, "B", 2); m.Epoch < 2 {
		t.Errorf("marker on B: %+v", m)
	}
	e.failA.set("")
	mustWait(t, c, StateVerified)
	// A gets the newest record in the background.
	markerOn(t, e.A, "A", c.Status().Epoch)
}

// editJournal appends a header change to the journal file, as someone with write access to it
// could.
func editJournal(t *testing.T, path string, edit func(h *Header)) {
	t.Helper()
	f := newFileStorage(path)
	snap, err := f.Load(context.Background())
	must(t, err)
	h := snap.Header
	edit(&h)
	must(t, f.Save(context.Background(), Change{PrevEpoch: snap.Header.Epoch, Header: &h}))
	f.close()
}

// A journal is served only when the backends' markers agree with it.
func TestJournalTheBackendsContradict(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(h *Header)
		want error
		text string
	}{
		{"epoch ahead of the backends", func(h *Header) { h.Epoch += 2; h.State = StateRolledBack },
			ErrMarkerContradicts, "never went through"},
		{"same epoch, another route", func(h *Header) { h.State = StateRollingBack },
			ErrMarkerContradicts, "records epoch"},
		{"another key store", func(h *Header) { h.KeyStore = "0123456789abcdef0123456789abcdef" },
			ErrMarkerContradicts, "record only other key stores"},
		{"one epoch ahead, confirmed on the backends", func(h *Header) { h.Epoch += 1 }, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			seedMixed(t, e.A, 3)
			epoch := migrateTo(t, e, StateSwitched)
			markerOn(t, e.A, "A", epoch)
			markerOn(t, e.B, "B", epoch)
			if tc.want == nil {
				// A header one epoch past a confirmed marker is no crash window: refused too.
				editJournal(t, e.journal, func(h *Header) { h.Epoch++; h.State = StateFinalized })
				_, _, err := open(e.config(nil))
				if !errors.Is(err, ErrMarkerContradicts) {
					t.Fatalf("New with a journal one epoch past the backends: %v", err)
				}
				return
			}
			editJournal(t, e.journal, tc.edit)
			_, _, err := open(e.config(nil))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) || !strings.Contains(err.Error(), "refusing to serve it") {
				t.Fatalf("New: %v, want %v (%q)", err, tc.want, tc.text)
			}
		})
	}
}

// The process stopped between recording a transition on the backends and journaling it: the
// pending marker one epoch ahead is accepted, the journal's route served, and the next
// transition takes that epoch. A confirmed marker there means the journal is older: refused.
func TestPendingMarkerAhead(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	epoch := migrateTo(t, e, StateSwitched)
	markerOn(t, e.B, "B", epoch)
	snap, err := newFileStorage(e.journal).Load(context.Background())
	must(t, err)
	next := markerOf(journalFrom(snap))
	next.Epoch, next.State, next.Fallback, next.Pending = epoch+1, StateFinalized, "", true
	c0 := &markerBook{timeout: time.Second}
	must(t, c0.writeMarker(ctxT(t), &backend{name: "B", k: e.cB}, next))

	c := e.controller(t, nil)
	if ep, p, f := journalRoute(c); ep != epoch || p != "B" || f != "A" {
		t.Fatalf("route %d %s/%s, want the journal's epoch %d B with fallback A", ep, p, f, epoch)
	}
	must(t, c.Finalize(ctxT(t), FinalizeOptions{Force: true, Reason: "test"}))
	if st := c.Status(); st.Epoch != epoch+1 || st.State != StateFinalized {
		t.Fatalf("after finalize: epoch %d state %s", st.Epoch, st.State)
	}
	must(t, e.stop(c))

	// Confirmed this time, with the journal one epoch behind: an old journal.
	next.Epoch, next.Pending = epoch+2, false
	next.State, next.Fallback = StateRollingBack, "B"
	must(t, c0.writeMarker(ctxT(t), &backend{name: "B", k: e.cB}, next))
	if _, _, err := open(e.config(nil)); !errors.Is(err, ErrMarkerAhead) {
		t.Fatalf("New with a confirmed marker ahead: %v", err)
	}
}

// A journal and markers of an earlier release (no key store identity, a marker under the fixed
// id) are upgraded at start: the journal gets an identity, the backends its marker, and the old
// marker is removed so that its id is free for a customer key.
func TestLegacyMarkerUpgrade(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	epoch := migrateTo(t, e, StateSwitched)
	markerOn(t, e.A, "A", epoch)
	// Make it what an earlier release left: no identity in the journal, the fixed-id markers.
	editJournal(t, e.journal, func(h *Header) { h.KeyStore = "" })
	snap, err := newFileStorage(e.journal).Load(context.Background())
	must(t, err)
	legacy := markerOf(journalFrom(snap))
	legacy.KeyStore = ""
	for _, b := range []struct {
		s  *kmsemu.Server
		cl *cosmian.Client
	}{{e.A, e.cA}, {e.B, e.cB}} {
		for _, o := range b.s.Objects() {
			if IsOwnObject(o.Tags) {
				must(t, b.cl.Destroy(ctxT(t), o.UID, true))
			}
		}
		_, err := b.cl.Import(ctxT(t), cosmian.ImportRequest{UID: LegacyMarkerID, Material: make([]byte, 32),
			Attributes: cosmian.KeyAttributes{Tags: legacy.tags()}})
		must(t, err)
	}
	c := e.controller(t, nil)
	ks := c.Traffic().keyStore()
	if ks == "" {
		t.Fatal("no key store identity after the upgrade")
	}
	if ep, p, _ := journalRoute(c); ep != epoch || p != "B" {
		t.Errorf("route after the upgrade: epoch %d %s", ep, p)
	}
	for _, b := range []struct {
		s    *kmsemu.Server
		name string
	}{{e.A, "A"}, {e.B, "B"}} {
		if _, ok := b.s.Object(LegacyMarkerID); ok {
			t.Errorf("the earlier release's marker is still on %s", b.name)
		}
		if m := markerOn(t, b.s, b.name, epoch); m.KeyStore != ks {
			t.Errorf("marker on %s: %+v", b.name, m)
		}
	}
	must(t, e.stop(c))
	again, err := newFileStorage(e.journal).Load(context.Background())
	must(t, err)
	if again.Header.KeyStore != ks {
		t.Errorf("journal key store %q, want %q", again.Header.KeyStore, ks)
	}
}
