package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/xks"
)

// Callers who do not play fair. Each test is one sequence an attacker (a signed XKS caller with a
// principal of its own, or someone who can write the fleet's etcd prefix) tried, and the rule it
// must not break: no principal ever gains, on either backend, a right the keys' owner did not
// give there or on the other side.

const (
	victim    = "arn:aws:iam::111122223333:user/p2-victim"
	attacker  = "arn:aws:iam::111122223333:user/p1-attacker"
	bystander = "arn:aws:iam::111122223333:user/p3-bystander"
)

// arnsOn is principalsOn without the reserved service identity of the newer Cosmian releases.
func arnsOn(srv *kmsemu.Server, id string) []string {
	return slices.DeleteFunc(principalsOn(srv, id), func(u string) bool { return u == cosmian.XKSServiceUser })
}

// principalsOn lists the users other than the owner holding any right on id on srv, sorted.
func principalsOn(srv *kmsemu.Server, id string) []string {
	var out []string
	for u, ops := range srv.Access(id) {
		if len(ops) > 0 {
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// A CreateKey for an existing key gives its caller nothing, also once the migration is over: a
// CreateKey sent after finalize for the victim's key must not make the attacker a grantee when
// the operator rolls back (Cosmian 5.26 on both sides, an explicit key list, so that keys noted
// after finalize are remembered for a rollback).
func TestCreateKeyAfterFinalizeEarnsNoGrantOnRollback(t *testing.T) {
	for _, gen := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.Cosmian528} {
		t.Run(string(gen), func(t *testing.T) { createKeyAfterFinalize(t, gen) })
	}
}

func createKeyAfterFinalize(t *testing.T, genB kmsemu.Generation) {
	const id = "victim-key"
	st, keys := startStack(t, 2, devstack.Config{
		CosmianA: kmsemu.Cosmian526, CosmianB: genB,
		Keys:      []devstack.Key{{ID: id, Usage: devstack.UsageEncryptDecrypt, Grants: []string{victim}}},
		Select:    cutover.Selection{Mode: cutover.SelectList, Keys: []string{id, "e2e-key-000", "e2e-key-001"}},
		Probation: testProbation(time.Second),
	})
	if len(keys) != 2 {
		t.Fatalf("keys %v", keys)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	asVictim, asAttacker := newXKSAs(t, st, victim), newXKSAs(t, st, attacker)
	ct, err := asVictim.encrypt(ctx, id)
	if err != nil {
		t.Fatalf("victim encrypting with its key: %v", err)
	}
	if err := st.App.Cutover.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	waitState(t, st, cutover.StateSwitched, stuck...)
	if err := st.App.Cutover.Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := asAttacker.createKey(ctx, id); err != nil {
		t.Fatalf("attacker's CreateKey for the victim's key: %v", err)
	}
	// A restart between the CreateKey and the rollback: nothing the process remembered of it
	// may come back as a right.
	if err := st.RestartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	asVictim, asAttacker = newXKSAs(t, st, victim), newXKSAs(t, st, attacker)
	if err := st.App.Cutover.Rollback(ctx, "test: back to A"); err != nil {
		t.Fatal(err)
	}
	waitState(t, st, cutover.StateRolledBack)
	for name, srv := range map[string]*kmsemu.Server{"A": st.A, "B": st.B} {
		if got := arnsOn(srv, id); !slices.Equal(got, []string{victim}) {
			t.Errorf("%s grants %v on the victim's key, want only the victim", name, got)
		}
	}
	refusedAs(t, "attacker decrypting the victim's data after the rollback", asAttacker.decrypt(ctx, id, ct),
		xks.KeyNotFoundException, xks.InvalidKeyUsageException, xks.AccessDeniedException)
	if err := asVictim.decrypt(ctx, id, ct); err != nil {
		t.Errorf("victim decrypting its data after the rollback: %v", err)
	}
}

// Two callers send CreateKey for one new id at the same moment: the backend mints it once and
// grants the caller whose request minted it (Cosmian 5.26). Whatever order the proxy hears the two
// answers in, the copy on the other side grants exactly what the minting side grants.
func TestConcurrentCreateKeysCopyOnlyTheMintersGrant(t *testing.T) {
	st, _ := startStack(t, 2, devstack.Config{
		CosmianA: kmsemu.Cosmian526, CosmianB: kmsemu.Cosmian526,
		Probation: testProbation(10 * time.Minute),
	})
	ctrl := st.App.Cutover
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	waitState(t, st, cutover.StateSwitched, stuck...)
	one, three := newXKSAs(t, st, attacker), newXKSAs(t, st, bystander)
	const pairs = 60
	var ids []string
	for i := range pairs {
		id := fmt.Sprintf("race-%02d", i)
		ids = append(ids, id)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, x := range []*xksAs{one, three} {
			wg.Go(func() { errs[j] = x.createKey(ctx, id) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("CreateKey %s: %v", id, err)
			}
		}
	}
	for _, id := range ids {
		waitFor(t, waitLong, id+" copied to A with its grants", func() bool {
			return !ctrl.Traffic().GrantsPending(id, "a") && len(principalsOn(st.A, id)) > 0
		})
		onB, onA := principalsOn(st.B, id), principalsOn(st.A, id)
		if len(onB) != 1 {
			t.Errorf("%s: B grants %v, want the one minter", id, onB)
			continue
		}
		if !slices.Equal(onA, onB) {
			t.Errorf("%s: A grants %v, B (where it was minted) grants %v", id, onA, onB)
		}
	}
}

// etcdClient connects to the fleet's etcd as anyone with access to its key prefix could.
func etcdClient(t *testing.T, f *fleetEnv) *clientv3.Client {
	t.Helper()
	pem, err := os.ReadFile(f.etcd.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{f.etcd.Endpoint}, DialTimeout: 5 * time.Second,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// A created-key record in etcd names a key, nothing more: one forged by someone who can write the
// prefix, naming the attacker as the key's creator, grants the attacker nothing on either side,
// before or after a rollback.
func TestForgedCreatedRecordGrantsNothing(t *testing.T) {
	f := startFleet(t, 2, 2, func(c *devstack.Config) {
		c.CosmianA, c.CosmianB = kmsemu.Cosmian526, kmsemu.Cosmian526
		c.Probation = testProbation(10 * time.Minute)
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, cutover.StateSwitched)
	// The victim's key, made on B (which serves) by its owner, granted to the victim only.
	const id = "made-on-b"
	if err := f.st.B.CreateKey("admin", id, kmsemu.KeyOptions{UsageMask: cosmian.UsageXKS, Tags: []string{cosmian.XKSTag}}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.B.GrantAccess("admin", id, victim, cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes); err != nil {
		t.Fatal(err)
	}
	ct, err := newXKSAsAt(t, f.st, f.reps[0].Endpoint, victim).encrypt(ctx, id)
	if err != nil {
		t.Fatalf("victim encrypting through the proxy: %v", err)
	}
	rec, _ := json.Marshal(map[string]any{"id": id, "on_target": true, "by": attacker})
	if _, err := etcdClient(t, f).Put(ctx, "/xksproxy/created/"+id, string(rec)); err != nil {
		t.Fatal(err)
	}
	// The record does tell the driver which key to look at: the backfill copies it to A.
	waitFor(t, waitLong, id+" copied back to A", func() bool {
		_, ok := f.st.A.Object(id)
		return ok && !f.driver().App.Cutover.Traffic().GrantsPending(id, "a")
	})
	if got := principalsOn(f.st.A, id); !slices.Equal(got, []string{victim}) {
		t.Errorf("A grants %v on the victim's key, want only the victim", got)
	}
	rb, err := f.admin(f.driver()).Rollback(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	// The reply shows the fleet at the epoch the rollback took, not as the last heartbeat read it.
	for _, m := range rb.Fleet.Members {
		if m.Live && (m.AppliedEpoch != rb.Epoch || m.Primary != "a") {
			t.Errorf("rollback reply: member %s at epoch %d serving %s, the rollback's epoch is %d", m.Name, m.AppliedEpoch, m.Primary, rb.Epoch)
		}
	}
	f.waitAll(t, cutover.StateRolledBack)
	for _, r := range f.running() {
		err := newXKSAsAt(t, f.st, r.Endpoint, attacker).decrypt(ctx, id, ct)
		refusedAs(t, r.Name+": attacker decrypting the victim's data after the rollback", err,
			xks.KeyNotFoundException, xks.InvalidKeyUsageException, xks.AccessDeniedException)
		if err := newXKSAsAt(t, f.st, r.Endpoint, victim).decrypt(ctx, id, ct); err != nil {
			t.Errorf("%s: victim decrypting its data after the rollback: %v", r.Name, err)
		}
	}
}

// The fleet's store and every replica's local copy are gone (a wiped etcd prefix, pods
// re-created on empty disks) after a migration finalized on B: a replica must not start again at
// epoch 1 serving A, where a new CreateKey would mint a second key under an id B holds. The
// backends' markers say what happened; the replica refuses and says how to go on.
func TestFleetStoreWipedAfterFinalize(t *testing.T) {
	f := startFleet(t, 3, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, cutover.StateSwitched)
	if _, err := f.admin(f.driver()).Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, cutover.StateFinalized)
	for _, r := range f.running() {
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := etcdClient(t, f).Delete(ctx, "/xksproxy/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	// A new replica: a new, empty local copy.
	_, err := f.st.AddReplica(ctx, "r9")
	if err == nil || !errors.Is(err, cutover.ErrMarkerAhead) || !strings.Contains(err.Error(), `source = "b"`) {
		t.Fatalf("a replica on a wiped store after a finalize on B: %v", err)
	}
}

// Someone who can write the fleet's etcd prefix writes a header the backends never recorded: a
// later epoch that routes back to A. No replica applies it: each checks the backends' markers
// before it applies an epoch, and keeps serving the last one they confirmed.
func TestFleetForgedHeaderNotApplied(t *testing.T) {
	f := startFleet(t, 3, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	st := f.waitAll(t, cutover.StateSwitched)
	cli := etcdClient(t, f)
	r, err := cli.Get(ctx, "/xksproxy/header")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("reading the stored header: %v", err)
	}
	var h cutover.Header
	if err := json.Unmarshal(r.Kvs[0].Value, &h); err != nil {
		t.Fatal(err)
	}
	for i, forge := range []func(h *cutover.Header){
		func(h *cutover.Header) { h.Epoch, h.State = st.Epoch+1, cutover.StateRolledBack },               // never recorded
		func(h *cutover.Header) { h.State = cutover.StateRolledBack },                                    // same epoch, another route
		func(h *cutover.Header) { h.Epoch, h.KeyStore = st.Epoch+1, "00000000000000000000000000000000" }, // another key store
	} {
		fh := h
		forge(&fh)
		v, _ := json.Marshal(fh)
		if _, err := cli.Txn(ctx).Then(clientv3.OpPut("/xksproxy/header", string(v)),
			clientv3.OpPut("/xksproxy/epoch", fmt.Sprint(fh.Epoch))).Commit(); err != nil {
			t.Fatal(err)
		}
		// Three heartbeats: a member retries a header it could not confirm on each.
		time.Sleep(3 * time.Second)
		for _, rep := range f.running() {
			if got := rep.App.Proxy.Route(); got.Primary != "b" || got.Fallback != "a" || got.Epoch != st.Epoch {
				t.Errorf("forgery %d: %s routes %+v, want epoch %d b with fallback a", i, rep.Name, got, st.Epoch)
			}
			if s := rep.App.Cutover.Status(); s.State != cutover.StateSwitched {
				t.Errorf("forgery %d: %s is in state %s", i, rep.Name, s.State)
			}
			if v, ok := metricValue(t, rep.MetricsURL, "xks_fleet_epochs_refused_total"); !ok || v < 1 {
				t.Errorf("forgery %d: %s counted %v refused epochs", i, rep.Name, v)
			}
		}
	}
	// Served as before, through every replica.
	for _, rep := range f.running() {
		if _, err := newXKSAsAt(t, f.st, rep.Endpoint, principal).encrypt(ctx, f.ids[0]); err != nil {
			t.Errorf("%s: encrypt after the forgeries: %v", rep.Name, err)
		}
	}
}

// Callers name the proxy's own objects: the ids earlier releases used for the cutover marker and
// the health-check key, one shaped like a shared-storage canary, and the health-check keys the
// proxy really uses. The first three are customer keys like any other (created, migrated, never
// replaced, their data decrypting after finalize); the last is refused as if it did not exist and
// counted against no backend; no probation, shadow or switch decision moves. Both generations.
func TestCallerNamesOwnObjects(t *testing.T) {
	for _, gen := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.CosmianXKSService} {
		t.Run(string(gen), func(t *testing.T) {
			st, _ := startStack(t, 3, devstack.Config{CosmianA: gen, CosmianB: gen,
				Probation: testProbation(time.Second)})
			ctrl := st.App.Cutover
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			as := newXKSAs(t, st, attacker)
			named := []string{"xksproxy-cutover-marker", "xksproxy-health-check", "xksproxy-storage-canary-deadbeef"}
			cts := map[string]*xks.EncryptResponse{}
			for _, id := range named {
				if err := as.createKey(ctx, id); err != nil {
					t.Fatalf("CreateKey %s: %v", id, err)
				}
				ct, err := as.encrypt(ctx, id)
				if err != nil {
					t.Fatalf("encrypt with %s: %v", id, err)
				}
				cts[id] = ct
			}
			for _, hk := range st.App.Proxy.HealthKeyIDs() {
				_, err := as.encrypt(ctx, hk)
				refusedAs(t, "encrypt with the proxy's health-check key", err, xks.KeyNotFoundException)
				refusedAs(t, "CreateKey for the proxy's health-check key", as.createKey(ctx, hk), xks.KeyNotFoundException)
			}
			if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
				t.Fatal(err)
			}
			waitState(t, st, cutover.StateSwitched, stuck...)
			// A CreateKey for the old marker id while switched moves nothing either.
			if err := as.createKey(ctx, "xksproxy-cutover-marker"); err != nil {
				t.Fatalf("repeated CreateKey: %v", err)
			}
			if err := ctrl.Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
			for _, id := range named {
				if err := as.decrypt(ctx, id, cts[id]); err != nil {
					t.Errorf("decrypting %s's data after finalize: %v", id, err)
				}
				if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
					t.Errorf("%s: B's key is not A's (equal=%v, err=%v)", id, eq, err)
				}
			}
			s := ctrl.Status()
			if s.Probation != nil && s.Probation.Errors > 0 {
				t.Errorf("probation counted %d errors", s.Probation.Errors)
			}
			h, err := as.c.Health(ctx, xks.RequestMetadata{KMSRequestID: "h", KMSOperation: "KmsHealthCheck"})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range h.EkmFleetDetails {
				if d.HealthStatus == xks.HealthUnavailable {
					t.Errorf("backend %s is %s", d.ID, d.HealthStatus)
				}
			}
		})
	}
}

// A key Cosmian 5.28 will not export, in a fleet of three replicas with unmovable =
// "keep-on-source": the migration finalizes with every other key on B and that key still served
// by A, through every replica, before and after a restart of the whole fleet.
func TestFleetUnexportableKeyKeptOnSource(t *testing.T) {
	const locked = "locked-key"
	f := startFleet(t, 4, 3, func(c *devstack.Config) {
		c.CosmianA, c.CosmianB = kmsemu.Cosmian528, kmsemu.Cosmian528
		c.Keys = append(c.Keys, devstack.Key{ID: locked, Usage: devstack.UsageEncryptDecrypt, Grants: []string{principal}, Unexportable: true})
		c.Select.Unmovable = cutover.UnmovableKeep
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	cts := map[string]*xks.EncryptResponse{}
	for _, r := range f.running() {
		ct, err := newXKSAsAt(t, f.st, r.Endpoint, principal).encrypt(ctx, locked)
		if err != nil {
			t.Fatalf("%s: encrypt with the unexportable key: %v", r.Name, err)
		}
		cts[r.Name] = ct
	}
	p, err := f.admin(f.driver()).Plan(ctx, cutover.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(p.Keys, func(k cutover.PlanKey) bool { return k.KeyID == locked }); i < 0 || p.Keys[i].Action != cutover.ActionUnmovable {
		t.Fatalf("plan: %+v", p.Keys)
	}
	if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	f.waitAll(t, cutover.StateSwitched)
	if _, err := f.admin(f.driver()).Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	st := f.waitAll(t, cutover.StateFinalized)
	if len(st.Kept) != 1 || st.Kept[0].ID != locked || st.Kept[0].On != "a" {
		t.Fatalf("kept %+v", st.Kept)
	}
	if _, ok := f.st.B.Object(locked); ok {
		t.Fatal("the unexportable key is on B")
	}
	check := func(when string) {
		for _, r := range f.running() {
			x := newXKSAsAt(t, f.st, r.Endpoint, principal)
			for name, ct := range cts {
				if err := x.decrypt(ctx, locked, ct); err != nil {
					t.Errorf("%s: %s: decrypting what %s encrypted with the kept key: %v", when, r.Name, name, err)
				}
			}
			if _, err := x.encrypt(ctx, f.ids[0]); err != nil {
				t.Errorf("%s: %s: a migrated key: %v", when, r.Name, err)
			}
		}
	}
	check("after finalize")
	for _, r := range f.running() {
		if err := r.Restart(ctx); err != nil {
			t.Fatalf("restarting %s: %v", r.Name, err)
		}
	}
	f.waitMembers(t, 3)
	check("after a restart of every replica")
}

// Two callers race a CreateKey for each of many new ids through two replicas, while B serves:
// whichever minted it holds the rights on both backends, the other none, through a finalize, a
// restart of every replica and a rollback — with B on 5.26 (minted on B) and on 5.28 (minted on
// A: a 5.26 source cannot express B's [aws-xks-service] grant).
func TestFleetRacedCreateKeysThroughFinalizeRestartRollback(t *testing.T) {
	for _, gen := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.Cosmian528} {
		t.Run(string(gen), func(t *testing.T) {
			f := startFleet(t, 2, 2, func(c *devstack.Config) {
				c.CosmianA, c.CosmianB = kmsemu.Cosmian526, gen
				c.Probation = testProbation(10 * time.Minute)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 3*waitLong)
			defer cancel()
			if _, err := f.admin(f.driver()).Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
				t.Fatal(err)
			}
			f.waitAll(t, cutover.StateSwitched)
			reps := f.running()
			one, three := newXKSAsAt(t, f.st, reps[0].Endpoint, attacker), newXKSAsAt(t, f.st, reps[1].Endpoint, bystander)
			var ids []string
			for i := range 20 {
				id := fmt.Sprintf("fleet-race-%02d", i)
				ids = append(ids, id)
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for j, x := range []*xksAs{one, three} {
					wg.Go(func() { errs[j] = x.createKey(ctx, id) })
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatalf("CreateKey %s: %v", id, err)
					}
				}
			}
			check := func(when string) {
				t.Helper()
				for _, id := range ids {
					var union []string
					var lists [][]string
					for _, srv := range []*kmsemu.Server{f.st.A, f.st.B} {
						if _, ok := srv.Object(id); !ok {
							continue
						}
						ps := arnsOn(srv, id)
						lists = append(lists, ps)
						for _, p := range ps {
							if !slices.Contains(union, p) {
								union = append(union, p)
							}
						}
					}
					if len(union) > 1 {
						t.Errorf("%s: %s: both racers hold rights: %v", when, id, union)
					}
					if len(lists) == 2 && !slices.Equal(lists[0], lists[1]) {
						t.Errorf("%s: %s: A grants %v, B %v", when, id, lists[0], lists[1])
					}
				}
			}
			for _, id := range ids {
				waitFor(t, waitLong, id+" on both sides with its grants", func() bool {
					_, a := f.st.A.Object(id)
					_, b := f.st.B.Object(id)
					return a && b && !f.driver().App.Cutover.Traffic().GrantsPending(id, "a") && !f.driver().App.Cutover.Traffic().GrantsPending(id, "b")
				})
			}
			check("switched")
			if _, err := f.admin(f.driver()).Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
			f.waitAll(t, cutover.StateFinalized)
			for _, r := range f.running() {
				if err := r.Restart(ctx); err != nil {
					t.Fatalf("restarting %s: %v", r.Name, err)
				}
			}
			f.waitMembers(t, 2)
			if _, err := f.admin(f.driver()).Rollback(ctx, "test"); err != nil {
				t.Fatal(err)
			}
			f.waitAll(t, cutover.StateRolledBack)
			check("rolled back")
			// Through A (5.26), the racer that did not mint a key cannot use it.
			for _, id := range ids {
				minter, other := one, three
				if slices.Contains(arnsOn(f.st.A, id), bystander) {
					minter, other = three, one
				}
				ct, err := minter.encrypt(ctx, id)
				if err != nil {
					t.Errorf("%s: the minter encrypting after the rollback: %v", id, err)
					continue
				}
				refusedAs(t, id+": the other racer decrypting through A", other.decrypt(ctx, id, ct),
					xks.KeyNotFoundException, xks.InvalidKeyUsageException, xks.AccessDeniedException)
			}
		})
	}
}
