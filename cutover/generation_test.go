package cutover

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// TestMigrationAcrossGenerations migrates 5.26 → the newer generation and back the other way:
// copy, verify, switch, a CreateKey on the target while switched, then a rollback that carries
// the new key back with the grants the source's generation needs.
func TestMigrationAcrossGenerations(t *testing.T) {
	for _, tc := range []struct{ a, b kmsemu.Generation }{
		{kmsemu.Cosmian526, kmsemu.CosmianXKSService},
		{kmsemu.CosmianXKSService, kmsemu.Cosmian526},
	} {
		t.Run(string(tc.a)+"→"+string(tc.b), func(t *testing.T) {
			e := newEnvGen(t, tc.a, tc.b, false)
			ids := seedMixed(t, e.A, 20)
			if tc.a != kmsemu.Cosmian526 {
				e.A.MigrateXKSAccess() // as at A's start-up
			}
			// A newer A's keys granted only to [aws-xks-service] reach a 5.26 B through a grant
			// to every user: the operator's consent (TestNewerToOlderGrantsEveryone: refused without).
			c := e.controller(t, func(cfg *Config) { cfg.GrantEveryoneForServiceKeys = tc.b == kmsemu.Cosmian526 })
			ctx := ctxT(t)
			must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
			st := mustWait(t, c, StateSwitched)
			if st.Keys.Verified != 20 || st.SharedStorage {
				t.Fatalf("keys %+v shared %v", st.Keys, st.SharedStorage)
			}
			e.checkCopies(t, ids)
			// AWS creates a key while B serves: B's own CreateKey grants what its generation
			// grants (5.26: the calling principal; newer: [aws-xks-service]).
			const creator = "arn:aws:iam::123456789012:role/creator"
			must(t, e.B.CreateKey("admin", "born-on-b", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
			bGrantee := creator
			if tc.b != kmsemu.Cosmian526 {
				bGrantee = cosmian.XKSServiceUser
			}
			must(t, e.B.GrantAccess("admin", "born-on-b", bGrantee, xksServiceOps...))
			c.Traffic().NoteCreateKey("born-on-b", "B")
			if tc.a == kmsemu.Cosmian526 && tc.b != kmsemu.Cosmian526 {
				// Granted on B only to [aws-xks-service]: a 5.26 A could express that only as a
				// grant to every user, which the operator has not consented to, and the proxy
				// never invents a principal (it knows who sent the CreateKey, not who may use the
				// key). The rollback refuses, naming the key, until the owner grants on B.
				err := c.Rollback(ctx, "operator")
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "born-on-b") {
					t.Fatalf("rollback with a key A cannot express: %v", err)
				}
				if ops := e.A.Access("born-on-b")[creator]; len(ops) != 0 {
					t.Fatalf("the creator was granted on A from nothing B holds: %v", ops)
				}
				must(t, e.B.GrantAccess("admin", "born-on-b", creator, xksServiceOps...))
			}
			must(t, c.Rollback(ctx, "operator"))
			if st := c.Status(); st.State != StateRolledBack {
				t.Fatalf("state %s", st.State)
			}
			if eq, err := e.B.KeyMaterialEqual("born-on-b", e.A); !eq || err != nil {
				t.Fatalf("not copied back: %v %v", eq, err)
			}
			grantee := creator
			if tc.a != kmsemu.Cosmian526 {
				grantee = cosmian.XKSServiceUser
			}
			if ops := e.A.Access("born-on-b")[grantee]; !slices.Equal(ops, []string{"decrypt", "encrypt", "getattributes"}) {
				t.Errorf("%s's grant on A after copy-back: %v (all: %v)", grantee, ops, e.A.Access("born-on-b"))
			}
		})
	}
}

// TestSharedStorage: A and B are two nodes over one database (here of different generations, as
// in a rolling upgrade). Nothing is copied, verification still runs, revoking source grants is
// refused, and no canary is left behind.
func TestSharedStorage(t *testing.T) {
	e := newEnvGen(t, kmsemu.Cosmian526, kmsemu.CosmianXKSService, true)
	ids := seedMixed(t, e.A, 10)
	grantsBefore := map[string]map[string][]string{}
	for _, id := range ids {
		grantsBefore[id] = e.A.Access(id)
	}
	c := e.controller(t, nil)
	ctx := ctxT(t)
	p, err := c.Plan(ctx)
	must(t, err)
	if !p.SharedStorage || p.Counts[ActionSkip] != 10 || len(p.Notes) == 0 || !strings.Contains(p.Notes[0], SharedStorageNote) {
		t.Fatalf("plan %+v", p)
	}
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	st := mustWait(t, c, StateSwitched)
	if !st.SharedStorage || st.Keys.Copied != 10 || st.Keys.Skipped != 10 || st.Keys.Verified != 10 || st.Keys.GrantsCopied != 0 {
		t.Fatalf("status shared=%v keys %+v", st.SharedStorage, st.Keys)
	}
	if err := c.Finalize(ctx, FinalizeOptions{RevokeSourceGrants: true, Force: true, Reason: "test: finalize before probation ends"}); !errors.Is(err, ErrSharedStorage) || !errors.Is(err, ErrRefused) {
		t.Fatalf("finalize --revoke-source-grants: %v, want a shared-storage refusal", err)
	}
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	for _, id := range ids {
		if got := e.A.Access(id); len(got) != len(grantsBefore[id]) {
			t.Errorf("%s: grants changed: %v → %v", id, grantsBefore[id], got)
		}
	}
	noCanary(t, e.A)
}

func noCanary(t *testing.T, servers ...*kmsemu.Server) {
	t.Helper()
	for _, s := range servers {
		for _, o := range s.Objects() {
			if strings.HasPrefix(o.UID, canaryPrefix) {
				t.Errorf("canary %s left behind", o.UID)
			}
		}
	}
}

// TestSeparateStorageNotShared: two servers with their own stores are not taken for one.
func TestSeparateStorageNotShared(t *testing.T) {
	e := newEnv(t, kmsemu.CosmianXKSService)
	seedMixed(t, e.A, 2)
	c := e.controller(t, nil)
	p, err := c.Plan(ctxT(t))
	must(t, err)
	if p.SharedStorage || p.Counts[ActionCopy] != 2 {
		t.Fatalf("plan %+v", p)
	}
	noCanary(t, e.A, e.B)
}

// TestCreateKeyRefusedIsConflict: the newer generation's CreateKey refusal reported by the proxy
// is a conflict named in status.
func TestCreateKeyRefusedIsConflict(t *testing.T) {
	e := newEnv(t, kmsemu.CosmianXKSService)
	seedMixed(t, e.A, 2)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateVerified)
	c.Traffic().NoteCreateKeyRefused("clash", "B", "Key clash already exists and is not an AWS XKS key; refusing to grant XKS access")
	st := c.Status()
	i := slices.IndexFunc(st.Failures, func(f KeyFailure) bool { return f.KeyID == "clash" })
	if i < 0 || st.Failures[i].Result != ResultConflict || !strings.Contains(st.Failures[i].Reason, "not an AWS XKS key") {
		t.Fatalf("failures %+v", st.Failures)
	}
}

// TestNewerToOlderGrantsEveryone: a key the newer generation serves to any signed XKS request
// (granted only to [aws-xks-service]) could stay usable on a 5.26 target only through a grant to
// every user, a right its owner never gave: without the operator's consent the key fails to copy
// and is named; with it, "*" is granted. A key that also names its principals keeps exactly
// those; a migration into a newer target grants "*" to nobody.
func TestNewerToOlderGrantsEveryone(t *testing.T) {
	const alice = "arn:aws:iam::123456789012:user/Alice"
	for _, tc := range []struct {
		name    string
		a, b    kmsemu.Generation
		consent bool
		alice   bool // the source also grants Alice
		fail    bool // the copy is refused, naming the reason
		star    bool // B ends with a grant to "*"
	}{
		{"newer→5.26 without consent", kmsemu.CosmianXKSService, kmsemu.Cosmian526, false, false, true, false},
		{"newer→5.26 with consent", kmsemu.CosmianXKSService, kmsemu.Cosmian526, true, false, false, true},
		{"newer→5.26 with named principals", kmsemu.CosmianXKSService, kmsemu.Cosmian526, false, true, false, false},
		{"5.26→newer", kmsemu.Cosmian526, kmsemu.CosmianXKSService, false, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvGen(t, tc.a, tc.b, false)
			must(t, e.A.CreateKey("admin", "k", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
			if tc.a != kmsemu.Cosmian526 {
				e.A.MigrateXKSAccess()
			}
			if tc.alice {
				must(t, e.A.GrantAccess("admin", "k", alice, "encrypt", "decrypt", "getattributes"))
			}
			c := e.controller(t, func(cfg *Config) { cfg.GrantEveryoneForServiceKeys = tc.consent })
			must(t, c.Start(ctxT(t), StartOptions{}))
			if tc.fail {
				st := mustWait(t, c, StateCopyFailed)
				i := slices.IndexFunc(st.Failures, func(f KeyFailure) bool { return f.KeyID == "k" })
				if i < 0 || !strings.Contains(st.Failures[i].Reason, "grant_everyone_for_service_keys") {
					t.Fatalf("failures %+v", st.Failures)
				}
			} else {
				mustWait(t, c, StateVerified)
			}
			got := e.B.Access("k")["*"]
			if tc.star != slices.Equal(got, []string{"decrypt", "encrypt", "getattributes"}) {
				t.Fatalf("grant to * on B: %v (all %v)", got, e.B.Access("k"))
			}
			if tc.alice && len(e.B.Access("k")[alice]) == 0 {
				t.Fatalf("Alice's grant not copied: %v", e.B.Access("k"))
			}
		})
	}
}

func TestGenerationOf(t *testing.T) {
	for _, tc := range []struct {
		v   string
		gen string
		ok  bool
	}{
		{"5.26.0 (OpenSSL 3.6.0 1 Oct 2025-non-FIPS)", ACLARN, true},
		{`"5.17.3"`, ACLARN, true},
		{"5.27.0", ACLARN, true},
		{"5.27.1 (OpenSSL 3.6.0)", ACLService, true},
		{"5.28.0", ACLService, true},
		{"6.0.0-rc1", ACLService, true},
		{"", "", false},
		{"unknown", "", false},
		{"5", "", false},
	} {
		gen, ok := generationOf(tc.v)
		if gen != tc.gen || ok != tc.ok {
			t.Errorf("generationOf(%q) = %q %v, want %q %v", tc.v, gen, ok, tc.gen, tc.ok)
		}
	}
}

// A backend whose generation the configuration leaves open is read from its release.
func TestGenerationsDetected(t *testing.T) {
	e := newEnvGen(t, kmsemu.Cosmian526, kmsemu.Cosmian528, false)
	c := e.controller(t, func(cfg *Config) { cfg.Source.ACL, cfg.Target.ACL = ACLBoth, ACLBoth })
	if c.sides.src.acl != ACLARN || c.sides.tgt.acl != ACLService {
		t.Errorf("detected %s → %s, want %s → %s", c.sides.src.acl, c.sides.tgt.acl, ACLARN, ACLService)
	}
	if !c.sides.mintOnSource() {
		t.Error("from 5.26 to 5.28 new keys are not minted on the source while switched")
	}
}
