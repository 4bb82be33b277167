package cutover

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

func TestHappyPath(t *testing.T) {
	for _, acl := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.CosmianXKSService} {
		t.Run(string(acl), func(t *testing.T) {
			e := newEnv(t, acl)
			ids := seedMixed(t, e.A, 50)
			c := e.controller(t, func(cfg *Config) { cfg.Probation.Duration = 100 * time.Millisecond })
			ctx := ctxT(t)

			p, err := c.Plan(ctx)
			must(t, err)
			if len(p.Keys) != 50 || p.Counts[ActionCopy] != 50 {
				t.Fatalf("plan: %d keys, counts %v", len(p.Keys), p.Counts)
			}
			must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
			if err := c.Start(ctx, StartOptions{}); !errors.Is(err, ErrRunning) {
				t.Errorf("second Start: %v, want ErrRunning", err)
			}
			st := mustWait(t, c, StateSwitched)
			if st.Keys.Verified != 50 || st.Keys.Copied != 50 {
				t.Errorf("keys: %+v", st.Keys)
			}
			if r := e.router.last(); r.primary != "B" || r.fallback != "A" || r.epoch != st.Epoch {
				t.Errorf("route after switch %+v (status epoch %d)", r, st.Epoch)
			}
			e.checkCopies(t, ids)
			// Wait for the probation to pass, then finalize.
			deadline := time.Now().Add(20 * time.Second)
			for !c.Status().Probation.Passed && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
			st = c.Status()
			if st.State != StateFinalized {
				t.Fatalf("state %s", st.State)
			}
			if r := e.router.last(); r.primary != "B" || r.fallback != "" || r.epoch != st.Epoch {
				t.Errorf("route after finalize %+v", r)
			}
			e.checkCopies(t, ids)
			// Verification left no grant for anyone else than the replicated ones.
			for _, uid := range ids {
				for u := range e.A.Access(uid) {
					if strings.HasPrefix(u, "[") {
						t.Errorf("%s: grant to %s appeared on A", uid, u)
					}
				}
			}
			// Nothing secret in the journal.
			data, err := os.ReadFile(e.journal)
			must(t, err)
			fi, err := os.Stat(e.journal)
			must(t, err)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("journal mode %v", fi.Mode().Perm())
			}
			for _, uid := range ids {
				k, err := e.cA.Export(ctx, uid, true)
				must(t, err)
				for _, enc := range []string{hex.EncodeToString(k.Material), strings.ToUpper(hex.EncodeToString(k.Material))} {
					if bytes.Contains(data, []byte(enc)) {
						t.Fatalf("journal contains key material of %s", uid)
					}
				}
				if bytes.Contains(data, k.Material) {
					t.Fatalf("journal contains raw key material of %s", uid)
				}
				k.Wipe()
			}
			// A restarted controller serves what the journal says.
			e.stop(c)
			c2 := e.controller(t, nil)
			if ep, p, f := journalRoute(c2); p != "B" || f != "" || ep != st.Epoch {
				t.Errorf("InitialRoute after restart: %d %s %s", ep, p, f)
			}
		})
	}
}

func TestPerKeyFailures(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 4)
	tag := []string{cosmian.XKSTag}
	same := bytes.Repeat([]byte{7}, 32)
	must(t, e.A.CreateKey("admin", "same", kmsemu.KeyOptions{Tags: tag, Material: same}))
	must(t, e.B.CreateKey("admin", "same", kmsemu.KeyOptions{Tags: tag, Material: same}))
	must(t, e.A.CreateKey("admin", "conflict", kmsemu.KeyOptions{Tags: tag, Material: bytes.Repeat([]byte{1}, 32)}))
	must(t, e.B.CreateKey("admin", "conflict", kmsemu.KeyOptions{Tags: tag, Material: bytes.Repeat([]byte{2}, 32)}))
	must(t, e.A.CreateKey("admin", "sensitive", kmsemu.KeyOptions{Tags: tag, Sensitive: true}))
	must(t, e.A.CreateKey("admin", "wrapped", kmsemu.KeyOptions{Tags: tag, Wrapped: true}))
	must(t, e.A.CreateKey("alice", "notowned", kmsemu.KeyOptions{Tags: tag}))
	must(t, e.A.GrantAccess("alice", "notowned", "admin", "getattributes"))
	c := e.controller(t, nil)
	ctx := ctxT(t)

	p, err := c.Plan(ctx)
	must(t, err)
	want := map[string]string{"same": ActionSkip, "conflict": ActionConflict, "sensitive": ActionUnmovable, "notowned": ActionError, "key-000": ActionCopy}
	for _, k := range p.Keys {
		if w, ok := want[k.KeyID]; ok && k.Action != w {
			t.Errorf("plan %s: %s (%s), want %s", k.KeyID, k.Action, k.Reason, w)
		}
	}
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	st := mustWait(t, c, StateCopyFailed)
	reasons := map[string]string{}
	for _, f := range st.Failures {
		reasons[f.KeyID] = f.Result + ": " + f.Reason
	}
	for id, sub := range map[string]string{
		"conflict":  "conflict: a different key",
		"sensitive": "sensitive key: its material cannot be exported; blocks the switch",
		"notowned":  "does not own",
	} {
		if !strings.Contains(reasons[id], sub) {
			t.Errorf("%s: reason %q, want it to contain %q", id, reasons[id], sub)
		}
	}
	if _, bad := reasons["wrapped"]; bad {
		// The emulator unwraps with its own KEK (NotWrapped works), so this key copies.
		t.Logf("wrapped: %s", reasons["wrapped"])
	}
	if _, bad := reasons["same"]; bad || st.Keys.Skipped < 1 {
		t.Errorf("identical key: %q, skipped %d", reasons["same"], st.Keys.Skipped)
	}
	if e.router.everPrimary("B") {
		t.Error("switched despite failures")
	}
	// B's conflicting key was never overwritten.
	if eq, _ := e.A.KeyMaterialEqual("conflict", e.B); eq {
		t.Error("conflicting key overwritten")
	}
	if err := c.Switch(ctx); !errors.Is(err, ErrWrongState) {
		t.Errorf("Switch in copy_failed: %v", err)
	}
	must(t, c.Rollback(ctx, "operator gives up"))
	if r := e.router.last(); r.primary != "A" {
		t.Errorf("route %+v", r)
	}
}

func TestSwitchTargetDown(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 10)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateVerified)
	e.B.SetFaults(kmsemu.Faults{Down: true})
	err := c.Switch(ctx)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Switch with B down: %v", err)
	}
	if st := c.Status(); st.State != StateVerified || !strings.Contains(st.LastError, "not switching") {
		t.Errorf("status %s %q", st.State, st.LastError)
	}
	if e.router.everPrimary("B") {
		t.Fatal("route moved to a down target")
	}
	e.B.SetFaults(kmsemu.Faults{})
	must(t, c.Switch(ctx))
	if r := e.router.last(); r.primary != "B" || r.fallback != "A" {
		t.Errorf("route %+v", r)
	}
	e.checkCopies(t, ids)
}

func TestProbationAutoRollback(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 10)
	c := e.controller(t, func(cfg *Config) { cfg.Probation.Duration = time.Minute })
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	e.B.SetFaults(kmsemu.Faults{ErrorRate: 1, XKSOnly: true})
	// Observations for another backend or client errors do not count.
	for range 100 {
		c.Traffic().Observe("A", xks.InternalException, time.Millisecond, true)
		c.Traffic().Observe("B", xks.InvalidCiphertextException, time.Millisecond, false)
	}
	for range 30 {
		c.Traffic().Observe("B", xks.InternalException, 3*time.Millisecond, false)
	}
	st := mustWait(t, c, StateRolledBack)
	// rolled_back is announced after the second copy-back pass, with the route on A alone.
	if !strings.Contains(st.Reason, "error rate") {
		t.Errorf("reason %q", st.Reason)
	}
	if st.Fallbacks != 100 {
		t.Errorf("fallbacks %d", st.Fallbacks)
	}
	if r := e.router.last(); r.primary != "A" || r.fallback != "" {
		t.Errorf("route %+v", r)
	}
	e.checkCopies(t, ids)
}

func TestProbationP99Rollback(t *testing.T) {
	_, c, _ := switchedEnv(t)
	for range 50 {
		c.Traffic().Observe("B", "", time.Second, false)
	}
	st := mustWait(t, c, StateRolledBack)
	// rolled_back is announced after the second copy-back pass, with the route on A alone.
	if !strings.Contains(st.Reason, "p99") {
		t.Errorf("reason %q", st.Reason)
	}
}

func TestSourceDownDuringCopy(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 20)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	e.A.SetFaults(kmsemu.Faults{Down: true})
	must(t, c.Start(ctx, StartOptions{}))
	time.Sleep(300 * time.Millisecond)
	if st := c.Status(); st.State != StateCopying {
		t.Fatalf("state %s while A is down", st.State)
	}
	e.A.SetFaults(kmsemu.Faults{})
	mustWait(t, c, StateVerified)
	e.checkCopies(t, ids)
	if e.router.everPrimary("B") {
		t.Error("route changed")
	}
}

func TestRestartMidCopy(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 40)
	slow := func(cfg *Config) { cfg.Pace.MaxConcurrency = 1 }
	c1 := e.controller(t, slow)
	ctx := ctxT(t)
	e.A.SetFaults(kmsemu.Faults{Latency: 2 * time.Millisecond})
	must(t, c1.Start(ctx, StartOptions{}))
	for c1.Status().Keys.Copied < 10 {
		time.Sleep(5 * time.Millisecond)
	}
	must(t, e.stop(c1)) // the process goes away mid-copy
	done := c1.Status().Keys.Copied
	if done >= 40 {
		t.Skip("copy finished before the restart")
	}
	e.A.SetFaults(kmsemu.Faults{})
	c2 := e.loaded(t, slow)
	if st := c2.Status(); st.State != StateCopying || st.Keys.Copied < done {
		t.Fatalf("after restart: %s, %d copied (had %d)", st.State, st.Keys.Copied, done)
	}
	e.run(t, c2) // resumes
	st := mustWait(t, c2, StateVerified)
	// Keys done before the restart were not copied again; at most the one
	// in flight is found already on B.
	if st.Keys.Skipped > 1 {
		t.Errorf("%d keys re-examined as existing", st.Keys.Skipped)
	}
	e.checkCopies(t, ids)
}

// The process goes away after importing keys on B but before writing their grants (every grant
// fails as a lost connection would). The restarted controller finds them on B without any of A's
// rights: it must take them as identical (not a conflict), write A's grants and verify them, and
// leave no principal a right on B it lacks on A.
func TestRestartBetweenImportAndGrants(t *testing.T) {
	for _, gen := range []kmsemu.Generation{kmsemu.Cosmian526, kmsemu.CosmianXKSService} {
		t.Run(string(gen), func(t *testing.T) {
			e := newEnv(t, gen)
			ids := seedMixed(t, e.A, 20)
			ctx := ctxT(t)
			e.failB.set("access/grant")
			// One copy in flight per key: each gets as far as its grants and retries them.
			wide := func(cfg *Config) { cfg.Pace.MaxConcurrency = len(ids) }
			c1 := e.controller(t, wide)
			must(t, c1.Start(ctx, StartOptions{}))
			imported := func() int {
				n := 0
				for _, id := range ids {
					if _, ok := e.B.Object(id); ok {
						n++
					}
				}
				return n
			}
			deadline := time.Now().Add(30 * time.Second)
			for imported() < len(ids) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := imported(); n < len(ids) {
				t.Fatalf("setup: %d of %d keys imported on B", n, len(ids))
			}
			must(t, e.stop(c1)) // the process goes away with every key imported, no grant written
			// Only a key with nothing to grant (none on A, no [aws-xks-service] grant on a 5.26 B)
			// can have finished its copy.
			nothingToGrant := 0
			for _, id := range ids {
				if len(e.A.Access(id)) == 0 && gen == kmsemu.Cosmian526 {
					nothingToGrant++
				}
			}
			if st := c1.Status(); st.Keys.Copied > nothingToGrant {
				t.Fatalf("%d keys counted copied although only %d have all their grants", st.Keys.Copied, nothingToGrant)
			}
			for _, id := range ids {
				if acc := e.B.Access(id); len(acc) != 0 {
					t.Fatalf("setup: %s has grants on B before the restart: %v", id, acc)
				}
			}

			e.failB.set("")
			c2 := e.controller(t, wide) // resumes
			st := mustWait(t, c2, StateVerified)
			if st.Keys.Conflicts != 0 || st.Keys.Errors != 0 || st.Keys.Verified != len(ids) {
				t.Fatalf("after the restart: %+v (failures %v), want all %d verified", st.Keys, st.Failures, len(ids))
			}
			e.checkCopies(t, ids)
			for _, id := range ids {
				accA := e.A.Access(id)
				for u, ops := range e.B.Access(id) {
					for _, op := range ops {
						if slices.Contains(accA[u], op) || (u == cosmian.XKSServiceUser && gen == kmsemu.CosmianXKSService && slices.Contains(xksServiceOps, op)) {
							continue
						}
						t.Errorf("%s: %s holds %s on B, which A never gave it (A: %v)", id, u, op, accA)
					}
				}
			}
		})
	}
}

func TestLateCreateKey(t *testing.T) {
	e := newEnv(t, kmsemu.CosmianXKSService)
	ids := seedMixed(t, e.A, 5)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateVerified)
	// AWS CreateKey while verified: the key exists on A only.
	must(t, e.A.CreateKey("admin", "late-key", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	c.Traffic().NoteCreateKey("late-key", "A")
	if _, ok := e.B.Object("late-key"); ok {
		t.Fatal("copied too early")
	}
	must(t, c.Switch(ctx))
	e.checkCopies(t, append(ids, "late-key"))
	if st := c.Status(); st.CreatedDuring != 1 || st.Keys.Verified != 6 {
		t.Errorf("status %+v", st.Keys)
	}
}

func TestListSelectionLateKey(t *testing.T) {
	// In list mode the late key is found only through NoteCreateKey.
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, func(cfg *Config) { cfg.Select = Selection{Mode: "list", Keys: []string{"key-000", "key-001"}} })
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateVerified)
	must(t, e.A.CreateKey("admin", "late", kmsemu.KeyOptions{}))
	c.Traffic().NoteCreateKey("late", "A")
	must(t, c.Switch(ctx))
	e.checkCopies(t, []string{"key-000", "key-001", "late"})
	if _, ok := e.B.Object("key-002"); ok {
		t.Error("unselected key copied")
	}
}

func TestRollbackCopiesBack(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 10)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	// After the switch: a key created on B, a revocation and a new grant on B.
	must(t, e.B.CreateKey("admin", "born-on-b", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	const creator = "arn:aws:iam::123456789012:role/creator"
	must(t, e.B.GrantAccess("admin", "born-on-b", creator, xksServiceOps...)) // as 5.26's XKS CreateKey does
	c.Traffic().NoteCreateKey("born-on-b", "B")
	must(t, e.B.CreateKey("admin", "unnoticed-on-b", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	must(t, e.B.RevokeKey("key-000", "KeyCompromise"))
	must(t, e.B.GrantAccess("admin", "key-007", "arn:aws:iam::123456789012:user/Carol", "decrypt"))
	must(t, c.Rollback(ctx, "operator"))
	st := c.Status()
	if st.State != StateRolledBack || st.Reason != "operator" {
		t.Fatalf("status %s %q", st.State, st.Reason)
	}
	if r := e.router.last(); r.primary != "A" || r.fallback != "" {
		t.Errorf("route %+v", r)
	}
	for _, uid := range []string{"born-on-b", "unnoticed-on-b"} {
		if eq, err := e.B.KeyMaterialEqual(uid, e.A); !eq || err != nil {
			t.Errorf("%s not copied back: %v %v", uid, eq, err)
		}
	}
	if o, _ := e.A.Object("key-000"); o.State != cosmian.StateCompromised {
		t.Errorf("revocation not carried back: %s", o.State)
	}
	if ops := e.A.Access("key-007")["arn:aws:iam::123456789012:user/Carol"]; len(ops) == 0 {
		t.Error("grant not carried back")
	}
	// The key made on B is usable on A by whom B grants it to (its creator, as 5.26's CreateKey
	// granted), and by no one else.
	if ops := e.A.Access("born-on-b")[creator]; !slices.Equal(ops, []string{"decrypt", "encrypt", "getattributes"}) {
		t.Errorf("creator's grant on A after copy-back: %v", ops)
	}
	e.checkCopies(t, ids)
}

func TestRollbackRefused(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 5)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	// A key created on B that cannot be exported: copying it back fails.
	must(t, e.B.CreateKey("admin", "stuck-on-b", kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}, Sensitive: true}))
	c.Traffic().NoteCreateKey("stuck-on-b", "B")
	err := c.Rollback(ctx, "try")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "stuck-on-b") {
		t.Fatalf("Rollback: %v", err)
	}
	if st := c.Status(); st.State != StateSwitched || !st.Running {
		t.Errorf("state %s running %v", st.State, st.Running)
	}
	if r := e.router.last(); r.primary != "B" {
		t.Errorf("route %+v", r)
	}
}

func TestCorruptJournal(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	for _, tc := range []struct{ name, data, want string }{
		{"garbage", "{not json", "invalid JSON"},
		{"empty", "", "empty file"},
		{"version", `{"version":2,"epoch":1,"state":"serving","source":"A"}`, "unknown version 2"},
		{"state", `{"version":1,"epoch":3,"state":"dancing","source":"A","target":"B","keys":{}}`, "unknown state"},
		{"truncated", `{"version":1,"epoch":3,"state":"switched","source":"A","tar`, "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, os.WriteFile(e.journal, []byte(tc.data), 0o600))
			_, _, err := open(e.config(nil))
			if err == nil || !errors.Is(err, ErrCorruptJournal) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), e.journal) || !strings.Contains(err.Error(), "refusing to start") {
				t.Fatalf("New: %v", err)
			}
		})
	}
	// A journal naming another migration refuses too.
	must(t, os.WriteFile(e.journal, []byte(`{"version":1,"epoch":3,"state":"switched","source":"X","target":"Y","keys":{}}`), 0o600))
	if _, _, err := open(e.config(nil)); err == nil || !strings.Contains(err.Error(), "X → Y") {
		t.Fatalf("New: %v", err)
	}
}

func TestJournalAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	jf := journalFile{path: dir + "/j"}
	j1 := &journal{Header: Header{Version: 1, Epoch: 1, State: StateServing, Source: "A", Target: "B"}, Keys: map[string]*KeyProgress{}}
	_, err := jf.write(j1)
	must(t, err)
	old, _ := os.ReadFile(jf.path)
	jf.beforeRename = func() error { return errors.New("killed") }
	j2 := j1.clone()
	j2.Epoch, j2.State = 2, StateCopying
	if _, err := jf.write(j2); err == nil {
		t.Fatal("write with crash hook succeeded")
	}
	now, _ := os.ReadFile(jf.path)
	if !bytes.Equal(old, now) {
		t.Fatal("journal changed by an interrupted write")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("leftover files: %d", len(ents))
	}
	got, ok, err := loadJournal(jf.path)
	if err != nil || !ok || got.Epoch != 1 {
		t.Fatalf("load: %v %v %+v", err, ok, got)
	}
	fi, _ := os.Stat(jf.path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestShadow(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	body := []byte(`{"plaintext":"aGVsbG8="}`)
	var block chan struct{}
	var mode atomic.Value
	mode.Store("match")
	fwd := &fakeForwarder{fn: func(ctx context.Context, backend string, op xks.Operation, keyID string, b []byte) (int, []byte, error) {
		if backend != "B" || op != xks.OpDecrypt {
			return 0, nil, errors.New("wrong call")
		}
		switch mode.Load() {
		case "mismatch":
			return 200, []byte(`{"plaintext":"aGVsbG9="}`), nil
		case "error":
			return 500, []byte(`{"errorName":"InternalException"}`), nil
		case "block":
			<-block
		}
		return 200, append([]byte(nil), body...), nil
	}}
	e.router.setForward(fwd)
	c := e.controller(t, func(cfg *Config) {
		cfg.Shadow = ShadowConfig{QueueSize: 4, Workers: 2}
	})
	// Outside shadowing, Mirror does nothing.
	c.Traffic().Mirror("k", []byte("{}"), body)
	if s := c.shadow.snapshot(); s != (ShadowStats{}) {
		t.Fatalf("mirrored while not shadowing: %+v", s)
	}
	c.shadow.start()
	waitFor := func(f func(ShadowStats) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !f(c.shadow.snapshot()) {
			if time.Now().After(deadline) {
				t.Fatalf("shadow stats %+v", c.shadow.snapshot())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	for range 3 {
		c.Traffic().Mirror("k", []byte(`{"ciphertext":"x"}`), body)
	}
	waitFor(func(s ShadowStats) bool { return s.Match == 3 })
	mode.Store("mismatch")
	c.Traffic().Mirror("k", []byte(`{}`), body)
	waitFor(func(s ShadowStats) bool { return s.Mismatch == 1 })
	mode.Store("error")
	c.Traffic().Mirror("k", []byte(`{}`), body)
	waitFor(func(s ShadowStats) bool { return s.Errors == 1 })

	block = make(chan struct{})
	mode.Store("block")
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				c.Traffic().Mirror("k", []byte(`{}`), body)
			}
		}()
	}
	wg.Wait() // returns although both workers are stuck and the queue is full
	s := c.shadow.snapshot()
	if s.Dropped == 0 {
		t.Errorf("no drops: %+v", s)
	}
	close(block)
	c.shadow.stop()
	s = c.shadow.snapshot()
	if total := s.Match + s.Mismatch + s.Errors + s.Dropped; total != 3+1+1+16*50 {
		t.Errorf("accounted %d of %d: %+v", total, 3+1+1+16*50, s)
	}
}

func TestShadowMismatchBlocksSwitch(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	fwd := &fakeForwarder{fn: func(ctx context.Context, backend string, op xks.Operation, keyID string, b []byte) (int, []byte, error) {
		return 200, []byte(`{"plaintext":"b3RoZXI="}`), nil
	}}
	e.router.setForward(fwd)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{Shadow: 300 * time.Millisecond, AutoSwitch: true}))
	mustWait(t, c, StateShadowing)
	c.Traffic().Mirror("key-000", []byte(`{}`), []byte(`{"plaintext":"aGVsbG8="}`))
	st := mustWait(t, c, StateVerifyFailed)
	if !strings.Contains(st.LastError, "shadow") || e.router.everPrimary("B") {
		t.Errorf("last error %q, switched %v", st.LastError, e.router.everPrimary("B"))
	}
}

// TestOperations drives the operator's calls (the admin API's, see package adminapi) on the
// controller: refused in the wrong state, then a whole migration and a rollback from finalized.
func TestOperations(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	p, err := c.Plan(ctx)
	must(t, err)
	if len(p.Keys) != 3 {
		t.Errorf("plan %+v", p)
	}
	if err := c.Switch(ctx); !errors.Is(err, ErrWrongState) {
		t.Errorf("switch in serving: %v", err)
	}
	if err := c.Rollback(ctx, "x"); !errors.Is(err, ErrWrongState) {
		t.Errorf("rollback in serving: %v", err)
	}
	must(t, c.Start(ctx, StartOptions{Shadow: 0}))
	mustWait(t, c, StateVerified)
	must(t, c.Switch(ctx))
	st := c.Status()
	if st.State != StateSwitched || st.Primary != "B" || st.Fallback != "A" {
		t.Errorf("status %+v", st)
	}
	must(t, c.Finalize(ctx, FinalizeOptions{RevokeSourceGrants: true, Force: true, Reason: "test: finalize before probation ends"}))
	if len(e.A.Access("key-000")) != 0 {
		t.Errorf("source grants left: %v", e.A.Access("key-000"))
	}
	must(t, c.Rollback(ctx, "back to A"))
	if r := e.router.last(); r.primary != "A" {
		t.Errorf("route %+v", r)
	}
	// The rollback from finalized restored A's grants from B.
	if len(e.A.Access("key-000")) == 0 {
		t.Error("grants not restored on A")
	}
}

func TestNextMigrationAfterFinalize(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 4)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	must(t, e.stop(c))
	// Back from B to A with the roles exchanged.
	c2 := e.controller(t, func(cfg *Config) { cfg.Source, cfg.Target = cfg.Target, cfg.Source })
	must(t, c2.Start(ctx, StartOptions{AutoSwitch: true}))
	st := mustWait(t, c2, StateSwitched)
	if st.Keys.Skipped != 4 {
		t.Errorf("keys %+v", st.Keys)
	}
	if r := e.router.last(); r.primary != "A" || r.fallback != "B" {
		t.Errorf("route %+v", r)
	}
	e.checkCopies(t, ids)
}

func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(`{"version":1,"epoch":3,"state":"copying","source":"A","target":"B","started_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z","options":{"shadow":"0s","auto_switch":true,"auto_finalize":false},"keys":{"k":{"phase":"copy","result":"ok"}}}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"epoch":1,"state":"serving","source":"A","target":"","keys":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := parseJournal(data)
		if err != nil {
			return
		}
		if !j.State.valid() || j.Epoch == 0 || j.Keys == nil {
			t.Fatalf("accepted invalid journal %+v", j)
		}
	})
}

func FuzzStartOptions(f *testing.F) {
	f.Add([]byte(`{"shadow":"30s","auto_switch":true}`))
	f.Add([]byte(`{"shadow":1000}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var o StartOptions
		if o.UnmarshalJSON(data) == nil && (o.Shadow < 0 || o.Shadow > 7*24*time.Hour) {
			t.Fatalf("out of range %v", o.Shadow)
		}
	})
}

// TestConfiguredShadowAndRevoke: Config.Shadow.Duration is the shadow of a run that does not
// name one ([cutover] shadow_duration), NoShadow overrides it, and RevokeSourceGrantsOnFinalize
// revokes the source's grants on a finalize that did not ask for it.
func TestConfiguredShadowAndRevoke(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 2)
	c := e.controller(t, func(cfg *Config) {
		cfg.Shadow.Duration = 200 * time.Millisecond
		cfg.RevokeSourceGrantsOnFinalize = true
	})
	ctx := ctxT(t)
	if err := c.Start(ctx, StartOptions{NoShadow: true, Shadow: time.Second}); err == nil {
		t.Error("NoShadow with a shadow duration accepted")
	}
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	if st := c.Status(); st.Options.Shadow != 200*time.Millisecond {
		t.Errorf("run options %+v, want the configured shadow", st.Options)
	}
	mustWait(t, c, StateSwitched)
	if len(e.A.Access("key-000")) == 0 {
		t.Fatal("seed has no grants on A to revoke")
	}
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	if len(e.A.Access("key-000")) != 0 {
		t.Errorf("source grants left after finalize: %v", e.A.Access("key-000"))
	}
	// After finalize a CreateKey on the target is no longer migration news.
	n := len(c.Status().CreatedOnTarget)
	c.Traffic().NoteCreateKey("late-after-finalize", "B")
	if got := len(c.Status().CreatedOnTarget); got != n {
		t.Errorf("created on the target after the switch grew after finalize: %d → %d", n, got)
	}
}

// A copy of a new key cut short after its import (the soak saw one: the access/grant call timed
// out at CreateKey time) leaves the key on the other side without its grants. Neither the
// backfill nor a rollback may take "the key is there" for "the copy is done": A must end with the
// creator's rights, or what AWS encrypted under the key on B cannot be decrypted after rollback.
func TestCutShortCopyGetsItsGrants(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backfill bool // let the backfill loop see the key before the rollback
	}{{"backfill", true}, {"rollback", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e, c, ctx := switchedEnv(t)
			const uid, creator = "half-copied", "arn:aws:iam::123456789012:role/creator"
			must(t, e.B.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
			// What Cosmian 5.26's XKS CreateKey grants the caller that minted the key.
			must(t, e.B.GrantAccess("admin", uid, creator, xksServiceOps...))
			// The import half of a copy to A, without the grants that should follow it.
			exp, err := e.cB.Export(ctx, uid, false)
			must(t, err)
			_, err = e.cA.Import(ctx, cosmian.ImportRequest{UID: uid, Material: exp.Material, Attributes: cosmian.KeyAttributes{
				ObjectType: "SymmetricKey", Algorithm: exp.Attributes.Algorithm, Length: exp.Attributes.Length,
				Tags: []string{cosmian.XKSTag}, KeyFormatType: exp.Attributes.KeyFormatType,
			}})
			exp.Wipe()
			must(t, err)
			if ops := e.A.Access(uid)[creator]; len(ops) != 0 {
				t.Fatalf("setup: creator already has %v on A", ops)
			}
			c.Traffic().NoteCreateKey(uid, "B")
			want := []string{"decrypt", "encrypt", "getattributes"}
			if tc.backfill {
				deadline := time.Now().Add(10 * time.Second)
				for !slices.Equal(e.A.Access(uid)[creator], want) && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if ops := e.A.Access(uid)[creator]; !slices.Equal(ops, want) {
					t.Errorf("after the backfill, creator's grant on A: %v", ops)
				}
			}
			must(t, c.Rollback(ctx, "operator"))
			if ops := e.A.Access(uid)[creator]; !slices.Equal(ops, want) {
				t.Errorf("after the rollback, creator's grant on A: %v", ops)
			}
			if eq, err := e.B.KeyMaterialEqual(uid, e.A); !eq || err != nil {
				t.Errorf("material: %v %v", eq, err)
			}
		})
	}
}

// A key created on the source before the switch is on the target before the target serves. In
// a selection that lists the keys XKS creates, the CreateKey does not wait for its copy: the
// switch's catch-up copies it (and a KeyNotFound on the target would fall back to the source
// meanwhile). In one that does not (an explicit list), only the key's note knows it, which a
// crash could lose: it is copied before the CreateKey is answered.
func TestCreatedBeforeSwitch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state State
		list  bool
	}{{"copying", StateCopying, false}, {"verified", StateVerified, false}, {"verified, explicit list", StateVerified, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			ids := seedMixed(t, e.A, 20)
			c := e.controller(t, func(cfg *Config) {
				if tc.list {
					cfg.Select = Selection{Mode: SelectList, Keys: ids}
				}
			})
			ctx := ctxT(t)
			if tc.state == StateCopying {
				// A slow target keeps the copy under way.
				e.B.SetFaults(kmsemu.Faults{Latency: 100 * time.Millisecond, KMIPOnly: true})
			}
			must(t, c.Start(ctx, StartOptions{}))
			mustWait(t, c, tc.state)
			e.B.SetFaults(kmsemu.Faults{})
			const uid, creator = "made-before-switch", "arn:aws:iam::123456789012:role/creator"
			must(t, e.A.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
			must(t, e.A.GrantAccess("admin", uid, creator, xksServiceOps...)) // as 5.26's XKS CreateKey does
			c.Traffic().NoteCreateKey(uid, "A")
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c.Traffic().CopyCreated(cctx, uid, "A")
			cancel()
			if _, onB := e.B.Object(uid); tc.state == StateVerified && onB != tc.list {
				t.Fatalf("on B when the CreateKey is answered: %v, want %v", onB, tc.list)
			}
			switch {
			case tc.state == StateCopying:
				mustWait(t, c, StateVerified)
			case !tc.list:
				must(t, c.Switch(ctx))
			}
			if eq, err := e.A.KeyMaterialEqual(uid, e.B); err != nil || !eq {
				t.Fatalf("after CreateKey in %s the key is not on B as on A (equal=%v, err=%v)", tc.state, eq, err)
			}
			if ops, want := e.B.Access(uid)[creator], []string{"decrypt", "encrypt", "getattributes"}; !slices.Equal(ops, want) {
				t.Errorf("creator's grant on B: %v, want %v", ops, want)
			}
		})
	}
}

// While switched and on probation, a key AWS creates on the target is copied to the source
// before the reply: the source is the fallback for the target's failures. Once probation
// passed, it is copied after the reply (the backfill, woken by its note), once every replica
// routes to the target first; a key made on the
// source (from a 5.26 source, MintOn) is copied before, since a finalize may route to the target
// alone before the backfill gets to it. A rollback that starts while a CreateKey sent under the
// switched route is still minting on the target copies that key too: its last pass waits out a
// request budget after every replica routes to the source, then lists the target.
func TestCreatedWhileSwitched(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, func(cfg *Config) { cfg.Pace.RequestBudget = time.Second })
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	const onB, onA = "made-on-b", "made-on-a"
	must(t, e.B.CreateKey("admin", onB, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	must(t, e.A.CreateKey("admin", onA, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	const onProbation = "made-on-b-on-probation"
	must(t, e.B.CreateKey("admin", onProbation, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	c.Traffic().NoteCreateKey(onProbation, "B")
	c.Traffic().CopyCreated(ctx, onProbation, "B")
	if eq, err := e.B.KeyMaterialEqual(onProbation, e.A); err != nil || !eq {
		t.Errorf("a key made on the target on probation is not on the source, its fallback, when its CreateKey is answered (equal=%v, err=%v)", eq, err)
	}
	c.book.edit(func(h *Header) { h.ProbationPassed = true })
	// The note wakes the backfill, which copies the key at once: whether the reply waited for a
	// copy is told by A answering KMIP in 2 s, not by counting imports (the backfill's count too).
	e.A.SetFaults(kmsemu.Faults{Latency: 2 * time.Second, KMIPOnly: true})
	c.Traffic().NoteCreateKey(onB, "B")
	t0 := time.Now()
	c.Traffic().CopyCreated(ctx, onB, "B")
	if d := time.Since(t0); d > time.Second {
		t.Errorf("the CreateKey on B waited %v for A before its reply (A answers in 2 s)", d)
	}
	e.A.SetFaults(kmsemu.Faults{})
	waitCond(t, onB+" copied to A by the backfill", func() bool { eq, err := e.B.KeyMaterialEqual(onB, e.A); return err == nil && eq })
	c.Traffic().NoteCreateKey(onA, "A")
	c.Traffic().CopyCreated(ctx, onA, "A")
	if eq, err := e.A.KeyMaterialEqual(onA, e.B); err != nil || !eq {
		t.Errorf("a key made on the source while switched is not on B when its CreateKey is answered (equal=%v, err=%v)", eq, err)
	}

	const late = "minted-during-rollback"
	e.router.onRoute(func(r route) {
		if r.primary == "A" && r.fallback == "B" { // rolling back: a CreateKey sent under the switched route lands now
			go func() {
				time.Sleep(c.cfg.Pace.RequestBudget / 4)
				if err := e.B.CreateKey("admin", late, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}); err != nil {
					t.Error(err)
				}
			}()
		}
	})
	must(t, c.Rollback(ctx, "a CreateKey in flight on B"))
	if eq, err := e.B.KeyMaterialEqual(late, e.A); err != nil || !eq {
		t.Errorf("a key minted on B as the rollback began was stranded there (on A: equal=%v, err=%v)", eq, err)
	}
}

// A copy cut short after its import leaves the key pending on the side it was imported to, so
// that the proxy may fall back for its refusals there (the grants are missing, not revoked),
// until a later copy writes the grants; then it is policy again.
func TestCutShortCopyStaysPendingUntilGranted(t *testing.T) {
	e, c, ctx := switchedEnv(t)
	const uid, creator = "grants-cut-short", "arn:aws:iam::123456789012:role/creator"
	must(t, e.B.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	must(t, e.B.GrantAccess("admin", uid, creator, xksServiceOps...)) // as 5.26's XKS CreateKey does
	// The import to A succeeds, its grants do not.
	e.failA.set("access/grant")
	c.Traffic().NoteCreateKey(uid, "B")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c.copier.copyCreated(cctx, uid, "B") // the copy at CreateKey time, when it is needed
	cancel()
	if _, ok := e.A.Object(uid); !ok {
		t.Fatalf("setup: the import to A did not happen")
	}
	if ops := e.A.Access(uid)[creator]; len(ops) != 0 {
		t.Fatalf("setup: creator has %v on A although grants fail", ops)
	}
	if !c.Traffic().GrantsPending(uid, "A") {
		t.Errorf("a key imported on A without its grants is not pending there")
	}
	if c.Traffic().GrantsPending(uid, "B") {
		t.Errorf("pending on B, where the key was created")
	}
	e.failA.set("")
	want := []string{"decrypt", "encrypt", "getattributes"}
	deadline := time.Now().Add(10 * time.Second)
	for (c.Traffic().GrantsPending(uid, "A") || !slices.Equal(e.A.Access(uid)[creator], want)) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if ops := e.A.Access(uid)[creator]; !slices.Equal(ops, want) {
		t.Errorf("after the backfill, creator's grant on A: %v, want %v", ops, want)
	}
	if c.Traffic().GrantsPending(uid, "A") {
		t.Errorf("still pending on A after the backfill wrote the grants")
	}
}

// A repeated CreateKey (AWS sends one for keys that exist) costs the backends nothing for a key
// already on both sides: one the migration copied, or one this process copied at CreateKey time.
func TestRepeatedCreateKeyCopiesNothing(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 5)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{})) // stops in verified: no background pass runs there
	mustWait(t, c, StateVerified)
	const uid, creator = "made-while-verified", "arn:aws:iam::123456789012:role/creator"
	must(t, e.A.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	c.Traffic().NoteCreateKey(uid, "A")
	c.copier.copyCreated(ctx, uid, "A") // the copy at CreateKey time, when it is needed
	if _, ok := e.B.Object(uid); !ok {
		t.Fatalf("setup: the new key was not copied to B")
	}
	calls := func() int64 {
		var n int64
		for _, s := range []*kmsemu.Server{e.A, e.B} {
			for _, v := range s.Stats().KMIP {
				n += v
			}
		}
		return n
	}
	for _, tc := range []struct{ name, id, backend string }{
		{"migrated key answered by A", "key-000", "A"},
		{"migrated key answered by B", "key-001", "B"},
		{"key copied at its CreateKey", uid, "A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls()
			c.Traffic().NoteCreateKey(tc.id, tc.backend)
			c.Traffic().CopyCreated(ctx, tc.id, tc.backend)
			if n := calls() - before; n != 0 {
				t.Errorf("a repeated CreateKey for %s made %d KMIP calls", tc.id, n)
			}
		})
	}
}

// A CreateKey's existence check is answered from the migration's own records for an id it has
// seen (a migrated key: both sides; a key created during the migration: the side that answered
// its CreateKey), with no backend call; only an id it does not know is read on the backend.
func TestCreateKeyCheckFromRecords(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 5)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateVerified)
	const made = "made-while-verified"
	must(t, e.A.CreateKey("admin", made, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	c.Traffic().NoteCreateKey(made, "A")
	calls := func() int64 { // attribute reads: the markers' background writes make other calls
		return e.A.Stats().KMIP["GetAttributes"] + e.B.Stats().KMIP["GetAttributes"]
	}
	for _, tc := range []struct {
		name, id, backend string
		held              bool
		kmip              int64
		answer            string
	}{
		{"a migrated key on A", "key-000", "A", true, 0, "records"},
		{"a migrated key on B", "key-001", "B", true, 0, "records"},
		{"a key created on A during the migration", made, "A", true, 0, "records"},
		{"the same key on B: not known there", made, "B", false, 1, "backend"},
		{"an id nobody holds", "nobody-holds-this", "A", false, 1, "backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, checks := calls(), c.Status().CreateKeyChecks
			held, err := c.Traffic().Holds(ctx, tc.id, tc.backend)
			if err != nil || held != tc.held {
				t.Fatalf("Holds = %v, %v; want %v", held, err, tc.held)
			}
			if n := calls() - before; n != tc.kmip {
				t.Errorf("%d KMIP calls, want %d", n, tc.kmip)
			}
			after := c.Status().CreateKeyChecks
			if got := map[string]uint64{"records": after.Records - checks.Records, "backend": after.Backend - checks.Backend}; got[tc.answer] != 1 {
				t.Errorf("checks %+v → %+v: want one answered by %s", checks, after, tc.answer)
			}
		})
	}
}

// A copy that finds the id taken on the other side by a key it cannot see (another owner's)
// leaves nothing pending there: that key's refusals are its owner's policy, and the proxy must
// not fall back past them.
func TestForeignKeyUnderIDNeverPending(t *testing.T) {
	e, c, ctx := switchedEnv(t)
	const uid = "taken-on-a"
	must(t, e.B.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	must(t, e.A.CreateKey("someone-else", uid, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
	c.Traffic().NoteCreateKey(uid, "B")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c.copier.copyCreated(cctx, uid, "B") // the copy at CreateKey time, when it is needed
	cancel()
	if c.Traffic().GrantsPending(uid, "A") {
		t.Errorf("another owner's key under the id on A is pending: the proxy would fall back past its refusals")
	}
}

// The rights sync reads the serving backend at RightsSyncRate keys a second at most, so a fleet
// of keys cannot turn it into a load on the side that serves live traffic. A lower bound only:
// a slow machine makes the pass longer, never shorter.
func TestRightsSyncPaced(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 20)
	const perSecond = 10
	c := e.controller(t, func(cfg *Config) { cfg.RightsSync.Rate = perSecond })
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	n := len(c.rights.syncIDs())
	if n < 10 {
		t.Fatalf("%d keys to sync", n)
	}
	start := time.Now()
	c.rights.pass(ctx, controlAttempts)
	if took, least := time.Since(start), time.Duration(n-1)*time.Second/perSecond; took < least {
		t.Errorf("a pass over %d keys took %v: faster than %d keys a second", n, took, perSecond)
	}
	// The change it carries is still carried.
	must(t, e.B.RevokeAccess("admin", "key-004", "arn:aws:iam::123456789012:user/Alice", "decrypt"))
	c.rights.pass(ctx, controlAttempts)
	if ops := e.A.Access("key-004")["arn:aws:iam::123456789012:user/Alice"]; slices.Contains(ops, "decrypt") {
		t.Errorf("revocation on B not carried to A by a paced pass: %v", ops)
	}
}

// The catch-up ends on a pass whose new keys all carry created-key notes, without listing again;
// a key made on the source behind the proxy's back (no note) is found by the listing that pass
// starts from, and is copied and verified before the migration says verified, like the noted
// ones made meanwhile.
func TestCatchUpFindsUnnotedKeys(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 20)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	e.B.SetFaults(kmsemu.Faults{Latency: 50 * time.Millisecond, KMIPOnly: true}) // the copy lasts
	must(t, c.Start(ctx, StartOptions{}))
	mustWait(t, c, StateCopying)
	waitCond(t, "the first key copied (the copy's listing made)", func() bool { return c.Status().Keys.Copied > 0 })
	var made []string
	for i := range 3 {
		noted, unnoted := fmt.Sprintf("noted-%d", i), fmt.Sprintf("behind-the-proxy-%d", i)
		must(t, e.A.CreateKey("admin", noted, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
		c.Traffic().NoteCreateKey(noted, "A")
		must(t, e.A.CreateKey("admin", unnoted, kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}))
		made = append(made, noted, unnoted)
		time.Sleep(30 * time.Millisecond)
	}
	if st := c.Status(); st.State != StateCopying {
		t.Fatalf("the copy ended (%s) before the keys were made: nothing for the catch-up to find", st.State)
	}
	e.B.SetFaults(kmsemu.Faults{})
	st := mustWait(t, c, StateVerified)
	for _, id := range made {
		if eq, err := e.A.KeyMaterialEqual(id, e.B); err != nil || !eq {
			t.Errorf("%s not on B as on A when the migration is verified (equal=%v, err=%v)", id, eq, err)
		}
		if k, ok := c.book.key(id); !verified(k, ok) {
			t.Errorf("%s not verified when the migration is: %+v", id, k)
		}
	}
	if st.Keys.Verified != st.Keys.Total {
		t.Errorf("verified %d of %d keys", st.Keys.Verified, st.Keys.Total)
	}
}
