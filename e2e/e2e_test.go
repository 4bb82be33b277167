package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
)

const rate = 150 // requests per second through the proxy

// B is down when the operator switches: the switch is refused, the route stays on A, no request
// fails; once B is back the switch goes through and the migration finalizes.
func TestBDownAtSwitch(t *testing.T) {
	st, keys := startStack(t, 30, devstack.Config{Probation: testProbation(time.Second)})
	ctrl := st.App.Cutover
	ctx := context.Background()
	l := startLoad(t, st, keys, loadOpts{rate: rate})
	time.Sleep(300 * time.Millisecond)

	if err := ctrl.Start(ctx, cutover.StartOptions{AutoFinalize: true}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitState(t, st, cutover.StateVerified, stuck...)

	st.B.SetFaults(kmsemu.Faults{Down: true})
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := ctrl.Switch(sctx)
	cancel()
	if !errors.Is(err, cutover.ErrUnreachable) {
		t.Fatalf("switch with B down: err = %v, want ErrUnreachable", err)
	}
	s := ctrl.Status()
	if s.State != cutover.StateVerified || s.Primary != "a" || s.Fallback != "" {
		t.Fatalf("after a refused switch: state %s, primary %q, fallback %q; want verified on a alone", s.State, s.Primary, s.Fallback)
	}
	if r := st.App.Proxy.Route(); r.Primary != "a" || r.Fallback != "" {
		t.Fatalf("after a refused switch the proxy routes to %+v, want a alone", r)
	}
	if s.LastError == "" {
		t.Errorf("a refused switch left no last_error")
	}
	t.Logf("switch refused: %v", err)
	time.Sleep(time.Second) // traffic keeps flowing to A while B is down

	st.B.SetFaults(kmsemu.Faults{})
	if err := ctrl.Switch(ctx); err != nil {
		t.Fatalf("switch with B back: %v", err)
	}
	if r := st.App.Proxy.Route(); r.Primary != "b" {
		t.Fatalf("after the switch the proxy routes to %+v, want b", r)
	}
	waitState(t, st, cutover.StateFinalized, cutover.StateRolledBack)
	time.Sleep(500 * time.Millisecond)

	noFailures(t, "traffic", l.stop())
	checkIdentical(t, st)
	redecryptAll(t, l)
}

// B starts failing XKS calls during probation: the proxy retries them on A (no request fails),
// the controller rolls back on its own, after copying back to A the keys created on B since
// the switch. With B healthy again, a second migration finishes.
func TestBFailingDuringProbation(t *testing.T) {
	p := testProbation(60 * time.Second)
	// One generation on both sides, so that keys AWS creates while switched are minted on B
	// (from 5.26 to a newer B they are minted on A: cutover.MintOn).
	st, keys := startStack(t, 30, devstack.Config{Probation: p, CosmianA: kmsemu.Cosmian526, CosmianB: kmsemu.Cosmian526})
	ctrl := st.App.Cutover
	ctx := context.Background()
	// A tenth of the traffic is CreateKey, so that keys get created on B after the switch.
	l := startLoad(t, st, keys, loadOpts{rate: rate, createKey: "e2e-new-%d",
		mix: loadgen.Mix{Encrypt: 0.45, Decrypt: 0.45, CreateKey: 0.1}})
	time.Sleep(300 * time.Millisecond)

	if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitState(t, st, cutover.StateSwitched, stuck...)
	// A CreateKey forwarded to A just before the switch may be noted just after it; count the
	// keys that really exist on B alone.
	var onlyB []string
	waitFor(t, waitLong, "keys created on B after the switch", func() bool {
		onlyB = onlyB[:0]
		// Keys AWS created on B after the switch. The controller copies them to A in the
		// background (so A stays a complete fallback); they are checked on A at the end.
		for _, id := range ctrl.Status().CreatedOnTarget {
			if _, ok := st.B.Object(id); ok {
				onlyB = append(onlyB, id)
			}
		}
		return len(onlyB) >= 3
	})
	fallbacksBefore := ctrl.Status().Fallbacks

	before := l.lg.Snapshot()
	if before.Failed != 0 {
		t.Errorf("%d requests failed before B failed: %v", before.Failed, before.ByError)
	}
	st.B.SetFaults(kmsemu.Faults{ErrorRate: 0.5, XKSOnly: true})
	// Probation looks at a 5s window; give it three.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	s, werr := ctrl.Wait(wctx, cutover.StateRolledBack, cutover.StateFinalized)
	cancel()
	if werr != nil {
		t.Fatalf("no automatic rollback with B failing: %v (state %s, probation %+v)", werr, s.State, s.Probation)
	}
	if s.State != cutover.StateRolledBack {
		t.Fatalf("state %s, want rolled_back", s.State)
	}
	st.B.SetFaults(kmsemu.Faults{})
	time.Sleep(200 * time.Millisecond) // the last calls B failed complete
	// CreateKeys B was to mint while it failed: the only requests that may fail (noFailuresBut).
	creates := l.lg.Snapshot().ByOperation["CreateKey"].Count - before.ByOperation["CreateKey"].Count
	if s.Primary != "a" || s.Fallback != "" {
		t.Errorf("rolled back to primary %q fallback %q, want a alone", s.Primary, s.Fallback)
	}
	if r := st.App.Proxy.Route(); r.Primary != "a" || r.Fallback != "" {
		t.Errorf("after rollback the proxy routes to %+v, want a alone", r)
	}
	if !strings.Contains(s.Reason, "error rate") {
		t.Errorf("rollback reason %q does not name the error rate", s.Reason)
	}
	if s.Fallbacks <= fallbacksBefore {
		t.Errorf("no call fell back to A while B failed (fallbacks %d → %d)", fallbacksBefore, s.Fallbacks)
	}
	for _, id := range onlyB {
		if _, ok := st.A.Object(id); !ok {
			t.Errorf("key %s created on B after the switch was not copied back to A", id)
			continue
		}
		if eq, err := st.A.KeyMaterialEqual(id, st.B); err != nil || !eq {
			t.Errorf("key %s copied back to A differs from B's (equal=%v, err=%v)", id, eq, err)
		}
	}
	t.Logf("rolled back (%s); %d keys created on B copied back; %d fallbacks", s.Reason, len(onlyB), s.Fallbacks)
	time.Sleep(500 * time.Millisecond)

	// B is healthy again: migrate anew and finish, so that A and B end identical.
	if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true}); err != nil {
		t.Fatalf("second start: %v", err)
	}
	waitState(t, st, cutover.StateSwitched, stuck...)
	time.Sleep(300 * time.Millisecond)
	l.lg.Stop() // no CreateKey may land on B between Finalize's listing and the comparison
	if err := ctrl.Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	noFailuresBut(t, "traffic", l.stop(), creates)
	checkIdentical(t, st)
	redecryptAll(t, l)
}

// A goes down while keys are being copied: traffic fails as it would against A alone (the
// proxy serves from A), and only while A is down; the copy waits and resumes when A returns,
// then the migration finishes.
func TestADownDuringCopy(t *testing.T) {
	st, keys := startStack(t, 40, devstack.Config{Probation: testProbation(time.Second)})
	ctrl := st.App.Cutover
	ctx := context.Background()
	// A slow B (KMIP only: it is not serving yet) stretches the copy.
	st.B.SetFaults(kmsemu.Faults{Latency: 60 * time.Millisecond, KMIPOnly: true})
	l := startLoad(t, st, keys, loadOpts{rate: rate, createKey: "e2e-new-%d"})
	time.Sleep(300 * time.Millisecond)

	if err := ctrl.Start(ctx, cutover.StartOptions{AutoSwitch: true, AutoFinalize: true}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitFor(t, waitLong, "the copy to be under way", func() bool {
		s := ctrl.Status()
		return s.State == cutover.StateCopying && s.Keys.Copied >= 3
	})
	downAt := time.Now()
	st.A.SetFaults(kmsemu.Faults{Down: true})
	time.Sleep(2 * time.Second)
	s := ctrl.Status()
	if s.State != cutover.StateCopying {
		t.Fatalf("with A down the state is %s, want copying", s.State)
	}
	copiedWhileDown := s.Keys.Copied
	if copiedWhileDown >= s.Keys.Total {
		t.Fatalf("all %d keys copied while A was down: the fault missed the copy", s.Keys.Total)
	}
	upAt := time.Now()
	st.A.SetFaults(kmsemu.Faults{})
	st.B.SetFaults(kmsemu.Faults{})
	t.Logf("A down for %s with %d of %d keys copied", upAt.Sub(downAt).Round(time.Millisecond), copiedWhileDown, s.Keys.Total)

	fs := waitState(t, st, cutover.StateFinalized, append(stuck, cutover.StateCopyFailed)...)
	if fs.Keys.Copied <= copiedWhileDown {
		t.Errorf("the copy did not resume: %d copied after A returned, %d before", fs.Keys.Copied, copiedWhileDown)
	}
	time.Sleep(500 * time.Millisecond)
	rep := l.stop()

	// Requests in flight when A went down may fail too: allow half a second before, and a
	// second after A returns for the proxy's connections to A to be re-established.
	before := l.lg.Window(rep.Started, downAt.Add(-500*time.Millisecond))
	during := l.lg.Window(downAt, upAt)
	after := l.lg.Window(upAt.Add(time.Second), rep.Ended.Add(time.Second))
	t.Logf("requests: before %d (%d failed), A down %d (%d failed), after %d (%d failed); errors %v",
		before.Count, before.Failed, during.Count, during.Failed, after.Count, after.Failed, rep.ByError)
	if before.Failed != 0 || after.Failed != 0 {
		t.Errorf("requests failed while A was up: %d before the outage, %d after", before.Failed, after.Failed)
	}
	if during.Failed == 0 {
		t.Errorf("no request failed while A, the serving backend, was down")
	}
	if after.Count == 0 {
		t.Errorf("no traffic after A returned")
	}
	checkIdentical(t, st)
	redecryptAll(t, l)
}

// The proxy restarts in the middle of the copy: the new process reads the journal and resumes
// the same migration where it was, to the end.
func TestProxyRestartMidCopy(t *testing.T) {
	st, keys := startStack(t, 40, devstack.Config{Probation: testProbation(time.Second)})
	ctx := context.Background()
	st.B.SetFaults(kmsemu.Faults{Latency: 60 * time.Millisecond, KMIPOnly: true})
	l := startLoad(t, st, keys, loadOpts{rate: rate, createKey: "e2e-new-%d"})
	time.Sleep(300 * time.Millisecond)

	if err := st.App.Cutover.Start(ctx, cutover.StartOptions{AutoSwitch: true, AutoFinalize: true}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitFor(t, waitLong, "the copy to be under way", func() bool {
		s := st.App.Cutover.Status()
		return s.State == cutover.StateCopying && s.Keys.Copied >= 5
	})
	endpoint := st.Endpoint
	stopAt := time.Now()
	if err := st.RestartProxy(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	upAt := time.Now()
	// The old controller flushed its journal on Close; compare with what the new one loaded.
	old, err := os.ReadFile(st.JournalPath)
	if err != nil {
		t.Fatal(err)
	}
	s := st.App.Cutover.Status()
	t.Logf("restarted in %s; resumed in state %s with %d of %d keys copied", upAt.Sub(stopAt).Round(time.Millisecond), s.State, s.Keys.Copied, len(keys))
	if st.Endpoint != endpoint {
		t.Fatalf("the restarted proxy listens at %s, not %s", st.Endpoint, endpoint)
	}
	if s.State != cutover.StateCopying && s.State != cutover.StateVerifying {
		t.Fatalf("after restart the state is %s, want the copy to go on", s.State)
	}
	if s.Keys.Copied < 5 {
		t.Fatalf("after restart only %d keys are journaled as copied: progress was lost", s.Keys.Copied)
	}
	if s.Keys.Copied >= len(keys) {
		t.Fatalf("the copy had finished before the restart (%d of %d): nothing to resume", s.Keys.Copied, len(keys))
	}
	// The journal is JSON in whatever layout the file journal writes (indented or compact).
	if !regexp.MustCompile(`"state":\s*"(copying|verifying)"`).Match(old) {
		t.Errorf("journal after the restart does not hold the migration in progress")
	}
	st.B.SetFaults(kmsemu.Faults{})

	fs := waitState(t, st, cutover.StateFinalized, stuck...)
	if !fs.StartedAt.Equal(s.StartedAt) {
		t.Errorf("the migration after the restart started at %v, the interrupted one at %v: it was restarted, not resumed", fs.StartedAt, s.StartedAt)
	}
	time.Sleep(500 * time.Millisecond)
	rep := l.stop()

	// While no proxy listens, requests fail as with any restart; none outside that window.
	before := l.lg.Window(rep.Started, stopAt.Add(-500*time.Millisecond))
	during := l.lg.Window(stopAt.Add(-500*time.Millisecond), upAt.Add(time.Second))
	after := l.lg.Window(upAt.Add(time.Second), rep.Ended.Add(time.Second))
	t.Logf("requests: before %d (%d failed), around the restart %d (%d failed), after %d (%d failed); errors %v",
		before.Count, before.Failed, during.Count, during.Failed, after.Count, after.Failed, rep.ByError)
	if before.Failed != 0 || after.Failed != 0 {
		t.Errorf("requests failed outside the restart: %d before, %d after", before.Failed, after.Failed)
	}
	if after.Count == 0 {
		t.Errorf("no traffic after the restart")
	}
	checkIdentical(t, st)
	redecryptAll(t, l)
}

// Keys created on A late: one after verification but before the switch (the switch's catch-up
// copies it), one just after the switch (B does not have it: the proxy falls back to A, and
// finalize copies it). Every request for them succeeds and both end identical on B.
func TestLateKey(t *testing.T) {
	p := testProbation(60 * time.Second)
	// The only B "errors" here are KeyNotFound for the key created after the switch, which the
	// proxy serves from A; keep them from tripping probation at this small scale.
	p.MaxErrorRate = new(0.2)
	st, keys := startStack(t, 20, devstack.Config{Probation: p})
	ctrl := st.App.Cutover
	ctx := context.Background()
	l := startLoad(t, st, keys, loadOpts{rate: rate})
	time.Sleep(300 * time.Millisecond)

	if err := ctrl.Start(ctx, cutover.StartOptions{}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitState(t, st, cutover.StateVerified, stuck...)

	const late1, late2 = "e2e-late-before-switch", "e2e-late-after-switch"
	createOnA(t, st, late1)
	if _, ok := st.B.Object(late1); ok {
		t.Fatalf("%s is on B before the switch", late1)
	}
	l1 := startLoad(t, st, []string{late1}, loadOpts{rate: 20})
	time.Sleep(500 * time.Millisecond)
	if err := ctrl.Switch(ctx); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if _, ok := st.B.Object(late1); !ok {
		t.Fatalf("the switch's catch-up did not copy %s to B", late1)
	}

	createOnA(t, st, late2)
	fb := ctrl.Status().Fallbacks
	l2 := startLoad(t, st, []string{late2}, loadOpts{rate: 20})
	time.Sleep(time.Second)
	s := ctrl.Status()
	if s.State != cutover.StateSwitched {
		t.Fatalf("state %s after serving %s from A (reason %q), want switched", s.State, late2, s.Reason)
	}
	if s.Fallbacks <= fb {
		t.Errorf("requests for %s, missing on B, did not fall back to A (fallbacks %d → %d)", late2, fb, s.Fallbacks)
	}
	if _, ok := st.B.Object(late2); ok {
		t.Fatalf("%s reached B before finalize: the fallback path was not exercised", late2)
	}
	t.Logf("%d fallbacks to A after the switch", s.Fallbacks-fb)
	if err := ctrl.Finalize(ctx, cutover.FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if _, ok := st.B.Object(late2); !ok {
		t.Fatalf("finalize did not copy %s to B", late2)
	}
	time.Sleep(500 * time.Millisecond)

	noFailures(t, "traffic", l.stop())
	noFailures(t, "traffic to "+late1, l1.stop())
	noFailures(t, "traffic to "+late2, l2.stop())
	checkIdentical(t, st)
	redecryptAll(t, l, l1, l2)
}

// A corrupt journal makes the proxy refuse to start, naming the journal, and leaves the file
// as it was (it is evidence, not something to overwrite). The journals are cut from a real one.
func TestCorruptJournal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cutover.json")
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := devstack.Start(ctx, devstack.Config{Listen: "127.0.0.1:0", JournalPath: path,
			Keys: []devstack.Key{{ID: "k1"}, {ID: "k2"}, {ID: "k3"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.App.Cutover.Start(ctx, cutover.StartOptions{}); err != nil {
			st.Close()
			t.Fatalf("start: %v", err)
		}
		waitState(t, st, cutover.StateVerified, stuck...)
		if err := st.Close(); err != nil {
			t.Logf("closing the stack: %v", err) // see closeStack
		}
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(old, new string) []byte {
		if !strings.Contains(string(good), old) {
			t.Fatalf("journal has no %q:\n%s", old, good)
		}
		return []byte(strings.Replace(string(good), old, new, 1))
	}
	// The stack below runs new emulators, which hold no marker of this journal's key store: as
	// is, the journal is another installation's and is refused for that. Without its key store
	// (as an earlier release wrote it) it is accepted: the control.
	ks := regexp.MustCompile(`"key_store":"[0-9a-f]{32}",`)
	if !ks.Match(good) {
		t.Fatalf("journal has no key store:\n%s", good)
	}
	other := good
	good = ks.ReplaceAll(good, nil)
	cases := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"intact (control)", good, true},
		{"another installation's", other, false},
		{"garbage", []byte("\x00\x17not a journal\xff\xfe"), false},
		{"empty", nil, false},
		// The snapshot cut short. (A cut inside the appended changes that follow it is what a
		// crash during an append leaves: that last, unacknowledged change is dropped.)
		{"truncated", good[:bytes.IndexByte(good, '\n')/2], false},
		{"unknown state", replace(`"state":"verified"`, `"state":"half-switched"`), false},
		{"unknown version", replace(`"version":1`, `"version":7`), false},
		{"epoch zero", replace(`"epoch":`, `"epoch":0, "x":`), false},
		{"trailing data", append(slices.Clone(good), []byte(`{"version":1}`)...), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cutover.json")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := devstack.Start(ctx, devstack.Config{Listen: "127.0.0.1:0", JournalPath: p,
				Keys: []devstack.Key{{ID: "k1"}}})
			if tc.ok {
				if err != nil {
					t.Fatalf("start with the intact journal: %v", err)
				}
				defer st.Close()
				if s := st.App.Cutover.Status(); s.State != cutover.StateVerified {
					t.Errorf("resumed state %s, want verified", s.State)
				}
				return
			}
			if err == nil {
				st.Close()
				t.Fatalf("started with a corrupt journal")
			}
			if tc.name == "another installation's" {
				if !errors.Is(err, cutover.ErrMarkerContradicts) {
					t.Errorf("error %v, want ErrMarkerContradicts", err)
				}
				return
			}
			if !errors.Is(err, cutover.ErrCorruptJournal) {
				t.Errorf("error %v does not wrap ErrCorruptJournal", err)
			}
			if msg := err.Error(); !strings.Contains(msg, p) || !strings.Contains(msg, "refusing to start") {
				t.Errorf("error %q does not name the journal and say it refuses to start", msg)
			}
			after, rerr := os.ReadFile(p)
			if rerr != nil || string(after) != string(tc.data) {
				t.Errorf("the corrupt journal was changed or removed (err %v)", rerr)
			}
			t.Logf("refused: %v", err)
		})
	}
}
