package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/xks"
)

// principal is the awsPrincipalArn of all traffic: Cosmian 5.26 (A) grants a key made by XKS
// CreateKey to its creator only, so one principal keeps those keys usable.
const principal = "arn:aws:iam::111122223333:role/e2e-app"

// Generous bounds: the box is slow under -race; none of them is a latency assertion.
const (
	waitLong  = 90 * time.Second
	clientTTL = 3 * time.Second // loadgen per-request timeout (the proxy's own budget is 240ms)
)

// testProbation never rolls back on latency (a slow -race box is not a fault under test).
func testProbation(d time.Duration) cutover.ProbationConfig {
	// MinRequests is the controller's (100): with fewer, one transient error on the target is over
	// 1 % and rolls a healthy switch back (seen: 1 of 56).
	return cutover.ProbationConfig{Duration: d, MaxP99: 5 * time.Second, Window: min(d, 5*time.Second)}
}

// startStack starts two emulators (n keys on A, B empty) and the proxy on loopback TLS.
func startStack(t *testing.T, n int, cfg devstack.Config) (*devstack.Stack, []string) {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("e2e-key-%03d", i)
		ids = append(ids, id)
		cfg.Keys = append(cfg.Keys, devstack.Key{ID: id, Usage: devstack.UsageEncryptDecrypt,
			Grants: []string{principal, "arn:aws:iam::111122223333:user/alice"}})
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = tailLogger(t)
	}
	// The race detector slows every component several times over: with AWS's 240 ms budget a
	// loaded CI machine turns slow answers into timeouts that probation counts against B.
	if cfg.Budget == 0 {
		cfg.Budget, cfg.BackendTimeout = 4*time.Second, 2*time.Second
	}
	if cfg.JournalPath == "" {
		cfg.JournalPath = t.TempDir() + "/cutover.json"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("devstack.Start: %v", err)
	}
	t.Cleanup(func() {
		// Not an assertion: the emulators' graceful shutdown (5s) sometimes times out on
		// an idle keep-alive connection; that is not a migration fault.
		if err := st.Close(); err != nil {
			t.Logf("closing the stack: %v", err)
		}
	})
	return st, ids
}

// load is one running load generator.
type load struct {
	lg   *loadgen.Runner
	done chan *loadgen.Report
	rep  *loadgen.Report
}

type loadOpts struct {
	rate      float64
	mix       loadgen.Mix // zero: default mix
	createKey string      // CreateKeyPrefix ("" = no CreateKey traffic)
}

// startLoad sends signed XKS traffic through the proxy until stop.
func startLoad(t *testing.T, st *devstack.Stack, keys []string, o loadOpts) *load {
	t.Helper()
	mix := o.mix
	if mix == (loadgen.Mix{}) {
		// No GetKeyMetadata of existing keys: AWS sends it (with kmsOperation CreateKey) only
		// when a KMS key is created, and Cosmian answers a CreateKey for a key it lacks by
		// minting one (see TestLateKey); loadgen's Metadata share would do that on B.
		mix = loadgen.Mix{Encrypt: 0.5, Decrypt: 0.5}
		if o.createKey != "" {
			mix.CreateKey = 0.02
		}
	}
	return runLoad(t, loadgen.Config{
		Endpoint: st.Endpoint, Prefix: st.Prefix, Region: st.Region, Credential: st.Credential,
		TLS: st.ClientTLS(), Keys: keys, Rate: o.rate, Workers: 512, Conns: 8, Timeout: clientTTL,
		Principals: []string{principal}, Mix: mix, CreateKeyPrefix: o.createKey, Record: true,
	})
}

// runLoad starts a load generator with cfg until the test ends (or stop).
func runLoad(t *testing.T, cfg loadgen.Config) *load {
	t.Helper()
	lg, err := loadgen.New(cfg)
	if err != nil {
		t.Fatalf("loadgen.New: %v", err)
	}
	l := &load{lg: lg, done: make(chan *loadgen.Report, 1)}
	go func() {
		rep, err := lg.Run(context.Background())
		if err != nil {
			t.Errorf("loadgen: %v", err)
		}
		l.done <- rep
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the traffic (requests in flight finish) and returns the report.
func (l *load) stop() *loadgen.Report {
	if l.rep == nil {
		l.lg.Stop()
		l.rep = <-l.done
	}
	return l.rep
}

// noFailures asserts that no request of the run failed.
func noFailures(t *testing.T, name string, rep *loadgen.Report) {
	t.Helper()
	noFailuresBut(t, name, rep, 0)
}

// noFailuresBut asserts that no request of the run failed, except at most allowedCreateKeys
// CreateKeys answered InternalException: a CreateKey the primary was to mint is never retried
// on the fallback (the fallback would mint a second, different key under the id when the
// primary's failure raced another replica's mint), so while the primary fails, those fail
// as they would against it alone.
func noFailuresBut(t *testing.T, name string, rep *loadgen.Report, allowedCreateKeys int64) {
	t.Helper()
	if rep == nil {
		t.Fatalf("%s: no load report", name)
	}
	if rep.Total == 0 {
		t.Errorf("%s: no request was sent", name)
	}
	excused := int64(0)
	if ck := rep.ByOperation["CreateKey"].Failed; allowedCreateKeys > 0 && ck == rep.Failed && ck == rep.ByError[string(xks.InternalException)] {
		excused = min(ck, allowedCreateKeys)
	}
	if rep.Failed != excused || int64(len(rep.ByError)) > min(excused, 1) {
		t.Errorf("%s: %d of %d requests failed: %v (by operation %+v)", name, rep.Failed, rep.Total, rep.ByError, rep.ByOperation)
	}
	t.Logf("%s: %d requests, %d failed (%d CreateKeys excused), throughput %.0f/s", name, rep.Total, rep.Failed, excused, rep.Throughput)
}

// redecryptAll decrypts, through the proxy as it routes now, every ciphertext the loads
// recorded and checks the plaintext.
func redecryptAll(t *testing.T, loads ...*load) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	total := 0
	for _, l := range loads {
		items := l.lg.Recorded()
		total += len(items)
		ok, failed, failures, err := l.lg.Redecrypt(ctx, items)
		if err != nil {
			t.Errorf("redecrypt: %v", err)
		}
		if failed != 0 || ok != len(items) {
			t.Errorf("redecrypt: %d of %d ciphertexts failed to decrypt (%d ok): %v", failed, len(items), ok, failures)
		}
	}
	if total == 0 {
		t.Errorf("redecrypt: no ciphertext was recorded")
	}
	t.Logf("re-decrypted %d ciphertexts", total)
}

// migratable lists the key ids on srv except the proxy's own objects (each backend's health-check
// key, the cutover markers, canaries).
func migratable(st *devstack.Stack, srv *kmsemu.Server) []string {
	var ids []string
	health := st.App.Proxy.HealthKeyIDs()
	for _, o := range srv.Objects() {
		if !slices.Contains(health, o.UID) && !cutover.IsOwnObject(o.Tags) {
			ids = append(ids, o.UID)
		}
	}
	sort.Strings(ids)
	return ids
}

// checkIdentical asserts that every key on A (but the health-check key) is on B with the same
// material. (After finalizing, keys created through the proxy live on B alone, by design.)
func checkIdentical(t *testing.T, st *devstack.Stack) {
	t.Helper()
	onA, onB := migratable(st, st.A), migratable(st, st.B)
	for _, id := range onA {
		eq, err := st.A.KeyMaterialEqual(id, st.B)
		if err != nil || !eq {
			t.Errorf("key %s: material on B is not A's (equal=%v, err=%v)", id, eq, err)
		}
	}
	if len(onA) == 0 {
		t.Errorf("no key on A")
	}
	t.Logf("%d keys on A, %d on B, all identical", len(onA), len(onB))
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitState waits for the controller to reach one of states and fails the test if it is not
// want.
func waitState(t *testing.T, st *devstack.Stack, want cutover.State, also ...cutover.State) cutover.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	s, err := st.App.Cutover.Wait(ctx, append([]cutover.State{want}, also...)...)
	if err != nil {
		t.Fatalf("%v (last error %q, failures %v)", err, s.LastError, s.Failures)
	}
	if s.State != want {
		t.Fatalf("state %s, want %s (reason %q, last error %q, failures %v)", s.State, want, s.Reason, s.LastError, s.Failures)
	}
	return s
}

// terminal states a run can stop in instead of the one a test waits for.
var stuck = []cutover.State{cutover.StateCopyFailed, cutover.StateVerifyFailed, cutover.StateRolledBack}

// createOnA creates an XKS key directly on A, with grants, as an operator or AWS CreateKey
// would have.
func createOnA(t *testing.T, st *devstack.Stack, id string) {
	t.Helper()
	if err := st.A.CreateKey("admin", id, kmsemu.KeyOptions{UsageMask: cosmian.UsageXKS, Tags: []string{cosmian.XKSTag}}); err != nil {
		t.Fatalf("creating %s on A: %v", id, err)
	}
	if err := st.A.GrantAccess("admin", id, principal, cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes); err != nil {
		t.Fatalf("granting %s on A: %v", id, err)
	}
}
