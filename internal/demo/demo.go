// Package demo runs the whole xksproxy story unattended: an emulated Cosmian server A holding
// XKS keys and an empty B, the proxy in front over real TLS, AWS-KMS-like signed traffic
// throughout, a live migration A → B (copy, verify, shadow, switch, probation, finalize), then a
// re-decryption of every ciphertext produced before the switch. Every figure in the report is
// measured by the load generator, the health poller, the controller or the emulators.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/devstack"
)

// Options tune the run; zero values take the defaults.
type Options struct {
	Keys      int           // keys on A; default 100
	RPS       float64       // AWS-like requests per second; default 300
	Warmup    time.Duration // traffic before the migration starts; default 3s
	Shadow    time.Duration // live Decrypts mirrored to B before switching; default 2s
	Probation time.Duration // watch B after the switch before finalizing; default 5s
	Tail      time.Duration // traffic after finalizing; default 2s
	Listen    string        // proxy listener; default 127.0.0.1:0
	// Replicas > 1 runs a fleet: that many proxies over an embedded etcd (default 1: one proxy
	// with its file journal). FleetLease is the members' etcd lease (default 5s).
	Replicas   int
	FleetLease time.Duration
	// ProbationMaxP99 rolls the switch back when B's p99 exceeds it (default 200ms).
	ProbationMaxP99 time.Duration
	// Timeout is the load generator's per-request timeout (default 250 ms, AWS's budget).
	// Tests under the race detector raise it, and Budget/BackendTimeout (the proxy's), with it.
	Timeout, Budget, BackendTimeout time.Duration
	Logger                          *slog.Logger
	Progress                        io.Writer // status lines while running (nil: quiet)
}

// Report is the demo's outcome. Its JSON names are a stable interface (README, scripts).
type Report struct {
	KeysTotal           int              `json:"keys_total"`
	KeysCopied          int              `json:"keys_copied"`
	KeysVerified        int              `json:"keys_verified"`
	KeysOnA             int              `json:"keys_on_a"`
	KeysIdentical       int              `json:"keys_identical_on_b"`
	GrantsCopied        int              `json:"grants_copied"`
	CreatedDuring       int              `json:"createkey_ids_noticed_during_migration"`
	RequestsTotal       int64            `json:"requests_total"`
	RequestsFailed      int64            `json:"requests_failed"`
	RequestsOver250ms   int64            `json:"requests_over_250ms"`
	P50ms               float64          `json:"p50_ms"`
	P99ms               float64          `json:"p99_ms"`
	P99DuringCutoverMs  float64          `json:"p99_during_cutover_ms"`
	P99BeforeCutoverMs  float64          `json:"p99_before_cutover_ms"`
	CutoverSeconds      float64          `json:"cutover_seconds"`
	DisconnectedSeconds float64          `json:"disconnected_seconds"`
	HealthPolls         int              `json:"health_polls"`
	Fallbacks           uint64           `json:"fallbacks"`
	ShadowMatch         uint64           `json:"shadow_match"`
	ShadowMismatch      uint64           `json:"shadow_mismatch"`
	Redecrypted         int              `json:"redecrypted"`
	RedecryptFailed     int              `json:"redecrypt_failed"`
	FinalState          string           `json:"final_state"`
	ServingBackend      string           `json:"serving_backend"`
	Errors              map[string]int64 `json:"errors,omitempty"`
	// The migration's own figures: keys migrated a second from the start to the switch; the
	// CreateKeys that failed (createkey_checks.failed: refused because a backend could not be
	// asked in time); the process's resident memory (every replica, both emulators and the load
	// generator together) before the start and at its peak, and its growth per key; the fleet
	// store's writes (etcd revisions) per key from the start to the end; the pace's range while
	// copying and verifying, and what held it, tick by tick.
	SwitchSeconds         float64                 `json:"switch_seconds"`
	KeysPerSecond         float64                 `json:"keys_per_second"`
	CreateKeyFailed       int64                   `json:"createkey_failed"`
	CreateKeyChecks       cutover.CreateKeyChecks `json:"createkey_checks"`
	RSSBeforeMB           float64                 `json:"rss_before_mb"`
	RSSPeakMB             float64                 `json:"rss_peak_mb"`
	RSSGrowthBytesPerKey  float64                 `json:"rss_growth_bytes_per_key"`
	EtcdWritesPerKey      float64                 `json:"etcd_writes_per_key,omitempty"`
	PaceMinCallsPerSecond float64                 `json:"pace_min_calls_per_second"`
	PaceMaxCallsPerSecond float64                 `json:"pace_max_calls_per_second"`
	PaceLimitedTicks      map[string]int          `json:"pace_limited_ticks,omitempty"`
	// Fleet figures (Replicas > 1): how often the elected driver changed, how many members
	// acknowledged the final epoch, and what each replica served.
	Replicas      int                     `json:"replicas"`
	DriverChanges int                     `json:"driver_changes"`
	MembersAcked  int                     `json:"members_acked"`
	PerReplica    map[string]ReplicaStats `json:"per_replica,omitempty"`
	Failures      []string                `json:"failures,omitempty"`
	// The run's steps and the migration's states with their times, and the first failed
	// requests, each with the last step or state before it.
	Timeline       []Event         `json:"timeline,omitempty"`
	FailedRequests []FailedRequest `json:"failed_requests,omitempty"`
}

// OK is the demo's verdict: no failed request, every migrated key verified, every key A holds
// (the migrated ones and those created during the run) byte-identical on B, every old
// ciphertext decrypts, and the migration finished on B.
func (r *Report) OK() bool {
	if r.Replicas > 1 && (r.DriverChanges < 1 || r.MembersAcked != r.Replicas) {
		return false
	}
	return r.RequestsFailed == 0 && r.KeysVerified == r.KeysTotal && r.KeysIdentical == r.KeysOnA &&
		r.RedecryptFailed == 0 && r.FinalState == string(cutover.StateFinalized) && len(r.Failures) == 0
}

// The principal AWS traffic runs as. Cosmian 5.26 authorises XKS calls per awsPrincipalArn, and a
// key made by XKS CreateKey is granted to its creator only, so the demo's traffic uses one
// principal; the seeded keys carry grants for several more.
const trafficPrincipal = "arn:aws:iam::111122223333:role/demo-app"

var otherPrincipals = []string{
	"arn:aws:iam::111122223333:role/payments",
	"arn:aws:iam::111122223333:user/alice",
	"dynamodb.amazonaws.com",
}

// keySet builds A's keys: mostly ordinary XKS keys, with revoked and compromised ones,
// encrypt-only and decrypt-only ones, extra tags and grants to several principals. It returns
// the ids that can take Encrypt and Decrypt traffic.
func keySet(n int) (keys []devstack.Key, traffic []string) {
	for i := range n {
		k := devstack.Key{ID: fmt.Sprintf("demo-key-%03d", i), Usage: devstack.UsageEncryptDecrypt}
		k.Grants = []string{trafficPrincipal, otherPrincipals[i%len(otherPrincipals)]}
		if i%10 == 0 {
			k.Grants = append(k.Grants, "*")
		}
		switch i % 3 {
		case 0:
			k.Tags = []string{"team-payments"}
		case 1:
			k.Tags = []string{"team-data", "pii"}
		}
		switch {
		case i%20 == 5:
			k.Revoked = cosmian.RevocationCessationOfOperation
		case i%50 == 17:
			k.Revoked = cosmian.RevocationKeyCompromise
		case i%15 == 4:
			k.Usage = devstack.UsageEncrypt
		case i%15 == 9:
			k.Usage = devstack.UsageDecrypt
		default:
			traffic = append(traffic, k.ID)
		}
		keys = append(keys, k)
	}
	return keys, traffic
}

func (o *Options) defaults() {
	if o.Keys <= 0 {
		o.Keys = 100
	}
	if o.RPS <= 0 {
		o.RPS = 300
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	if o.Shadow < 0 {
		o.Shadow = 0
	} else if o.Shadow == 0 {
		o.Shadow = 2 * time.Second
	}
	if o.Probation <= 0 {
		o.Probation = 5 * time.Second
	}
	if o.Tail <= 0 {
		o.Tail = 2 * time.Second
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.FleetLease <= 0 {
		o.FleetLease = 5 * time.Second
	}
	if o.ProbationMaxP99 <= 0 {
		o.ProbationMaxP99 = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Run runs the demo and returns its report. An error means the demo could not run at all; a
// run that went wrong returns a report whose OK is false.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	if o.Replicas > 1 {
		return runFleet(ctx, o)
	}
	tl := newTimeline(o.Progress)
	say := tl.say
	keys, traffic := keySet(o.Keys)
	st, err := devstack.Start(ctx, devstack.Config{
		Listen: o.Listen, Keys: keys, Logger: o.Logger, Version: "xksproxy demo",
		Budget: o.Budget, BackendTimeout: o.BackendTimeout,
		Probation: cutover.ProbationConfig{Duration: o.Probation, MaxP99: o.ProbationMaxP99},
	})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	say("A holds %d keys (%d take traffic); B is empty. Proxy at %s", len(keys), len(traffic), st.Endpoint)

	lcfg := loadgen.Config{
		Endpoint: st.Endpoint, Prefix: st.Prefix, Region: st.Region, Credential: st.Credential,
		TLS: st.ClientTLS(), Keys: traffic, Rate: o.RPS, Workers: 256, Conns: 16,
		Principals: []string{trafficPrincipal}, CreateKeyPrefix: "demo-new-%d", Record: true,
		Timeout: o.Timeout, OnFailure: tl.onFailure,
		Logger: o.Logger,
	}
	tr, err := startTraffic(ctx, o.Logger, lcfg)
	if err != nil {
		return nil, err
	}
	defer tr.stopAll()
	lg, hp := tr.lg, tr.hp

	rep := &Report{Replicas: 1}
	fail := func(format string, args ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...)) }
	sleep(ctx, o.Warmup)
	say("traffic at %.0f req/s; starting the migration A → B (shadow %s, probation %s)", o.RPS, o.Shadow, o.Probation)

	ctrl := st.App.Cutover
	smp := startSampler(tl, func() (cutover.Status, bool) { return ctrl.Status(), true })
	rssStart := rssBytes()
	cutStart := time.Now()
	tl.started(cutStart)
	var switchedAt, finalizedAt time.Time
	if err := ctrl.Start(ctx, cutover.StartOptions{Shadow: o.Shadow, AutoSwitch: true}); err != nil {
		fail("start: %v", err)
	} else {
		s, err := ctrl.Wait(ctx, cutover.StateSwitched, cutover.StateCopyFailed, cutover.StateVerifyFailed, cutover.StateRolledBack)
		switchedAt = time.Now()
		switch {
		case err != nil:
			fail("waiting for the switch: %v", err)
		case s.State != cutover.StateSwitched:
			fail("migration stopped in state %s: %s", s.State, s.LastError)
			for _, f := range s.Failures {
				fail("key %s: %s: %s", f.KeyID, f.Result, f.Reason)
			}
		default:
			say("switched to B after %.2fs; probation %s", switchedAt.Sub(cutStart).Seconds(), o.Probation)
			s = waitProbation(ctx, o.Probation, ctrl.Status)
			if s.State != cutover.StateSwitched {
				fail("probation ended in state %s: %s", s.State, s.Reason)
			} else if err := ctrl.Finalize(ctx, cutover.FinalizeOptions{}); err != nil {
				fail("finalize: %v", err)
			} else {
				finalizedAt = time.Now()
				say("finalized: B serves alone")
			}
		}
	}
	sleep(ctx, o.Tail)
	lrep, err := tr.finish()
	if err != nil {
		return nil, err
	}
	end := finalizedAt
	if end.IsZero() {
		end = time.Now()
	}

	smp.finish()
	s := ctrl.Status()
	rep.measure(ctx, st, s, lg, lg, lrep, hp, cutStart, switchedAt, end)
	rep.CreateKeyChecks = s.CreateKeyChecks
	smp.fill(rep, rssStart)
	tl.fill(rep)
	return rep, nil
}

// measure fills the report from the controller's final status s, the load generator's report
// and recordings, the health poller and the emulators: re-decryption (through rd) of every
// ciphertext made before the switch, and byte-identical material on B for every key A holds.
func (rep *Report) measure(ctx context.Context, st *devstack.Stack, s cutover.Status, lg, rd *loadgen.Runner, lrep *loadgen.Report,
	hp *loadgen.HealthPoller, cutStart, switchedAt, end time.Time) {
	fail := func(format string, args ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...)) }
	rep.KeysTotal = s.Keys.Total
	rep.KeysCopied = s.Keys.Copied
	rep.KeysVerified = s.Keys.Verified
	rep.GrantsCopied = s.Keys.GrantsCopied
	rep.CreatedDuring = s.CreatedDuring
	rep.Fallbacks = s.Fallbacks
	rep.ShadowMatch, rep.ShadowMismatch = s.Shadow.Match, s.Shadow.Mismatch
	rep.FinalState = string(s.State)
	rep.ServingBackend = s.Primary
	for _, f := range s.Failures {
		fail("key %s: %s: %s", f.KeyID, f.Result, f.Reason)
	}
	rep.RequestsTotal, rep.RequestsFailed, rep.RequestsOver250ms = lrep.Total, lrep.Failed, lrep.Over250ms
	rep.P50ms, rep.P99ms = ms(lrep.P50), ms(lrep.P99)
	rep.P99DuringCutoverMs = ms(lg.Window(cutStart, end).P99)
	rep.P99BeforeCutoverMs = ms(lg.Window(lrep.Started, cutStart).P99)
	if !switchedAt.IsZero() {
		rep.CutoverSeconds = round(end.Sub(cutStart).Seconds())
		rep.SwitchSeconds = round(switchedAt.Sub(cutStart).Seconds())
		if d := switchedAt.Sub(cutStart).Seconds(); d > 0 {
			rep.KeysPerSecond = round(float64(s.Keys.Total) / d)
		}
	}
	rep.CreateKeyFailed = lrep.ByOperation["CreateKey"].Failed
	rep.DisconnectedSeconds = round(hp.Disconnected().Seconds())
	rep.HealthPolls, _ = hp.Polls()
	if len(lrep.ByError) > 0 {
		rep.Errors = lrep.ByError
	}

	// Every ciphertext made before the switch must still decrypt, now through B.
	var before []loadgen.Sealed
	for _, it := range lg.Recorded() {
		if switchedAt.IsZero() || it.At.Before(switchedAt) {
			before = append(before, it)
		}
	}
	okN, failedN, failures, err := rd.Redecrypt(ctx, before)
	if err != nil {
		fail("re-decrypt: %v", err)
	}
	rep.Redecrypted, rep.RedecryptFailed = okN, failedN
	for _, f := range failures {
		fail("re-decrypt %s", f)
	}

	// Byte-identical material on B for every key A holds (seeded and created during the run),
	// checked inside the emulators without exposing it.
	ids := []string{}
	health := st.App.Proxy.HealthKeyIDs()
	for _, obj := range st.A.Objects() {
		if !slices.Contains(health, obj.UID) && !cutover.IsOwnObject(obj.Tags) {
			ids = append(ids, obj.UID)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		eq, err := st.A.KeyMaterialEqual(id, st.B)
		switch {
		case err != nil:
			fail("key %s: comparing A and B: %v", id, err)
		case !eq:
			fail("key %s: material on B differs from A", id)
		default:
			rep.KeysIdentical++
		}
	}
	rep.KeysOnA = len(ids)
	if rep.KeysIdentical != len(ids) {
		fail("%d of %d keys on A are not identical on B", len(ids)-rep.KeysIdentical, len(ids))
	}
}

// waitProbation waits out the probation window, then until probation passed (it needs enough
// requests on B to judge, and finalize refuses before) or the state left switched, at most two
// minutes more; it returns the last status.
func waitProbation(ctx context.Context, d time.Duration, status func() cutover.Status) cutover.Status {
	sleep(ctx, d)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s := status()
		if s.State != cutover.StateSwitched || s.Probation != nil && s.Probation.Passed || time.Now().After(deadline) || ctx.Err() != nil {
			return s
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// loadRun is the AWS-like load and the health poller of one run.
type loadRun struct {
	lg       *loadgen.Runner
	hp       *loadgen.HealthPoller
	done     chan *loadgen.Report
	pollDone chan struct{}
	stopAll  context.CancelFunc
}

func startTraffic(ctx context.Context, log *slog.Logger, lcfg loadgen.Config) (*loadRun, error) {
	lg, err := loadgen.New(lcfg)
	if err != nil {
		return nil, err
	}
	hp, err := loadgen.NewHealthPoller(lcfg, 100*time.Millisecond)
	if err != nil {
		return nil, err
	}
	runCtx, stopAll := context.WithCancel(ctx)
	t := &loadRun{lg: lg, hp: hp, done: make(chan *loadgen.Report, 1), pollDone: make(chan struct{}), stopAll: stopAll}
	go func() {
		rep, err := lg.Run(runCtx)
		if err != nil {
			log.Error("load generator", "err", err)
		}
		t.done <- rep
	}()
	go func() { hp.Run(runCtx); close(t.pollDone) }()
	return t, nil
}

// finish stops the load (requests in flight complete) and the poller, and returns the load's
// report.
func (t *loadRun) finish() (*loadgen.Report, error) {
	t.lg.Stop()
	lrep := <-t.done
	t.stopAll()
	<-t.pollDone
	if lrep == nil {
		return nil, errors.New("demo: the load generator produced no report")
	}
	return lrep, nil
}

func ms(d time.Duration) float64 { return round(float64(d) / float64(time.Millisecond)) }

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) {
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, `
xksproxy demo — live migration A → B under AWS-like load: %s

  keys            %d migrated, %d copied, %d verified; %d of %d keys on A byte-identical on B; %d grants copied
                  %d key ids seen in CreateKey calls during the migration (new keys and AWS-style repeats)
  requests        %d total, %d failed, %d over 250 ms
  latency         p50 %.2f ms, p99 %.2f ms (before migration p99 %.2f ms, during %.2f ms)
  migration       %.2f s from start to finalized; disconnected %.2f s (%d health polls)
  fallbacks       %d (calls retried on A after failing on B)
  shadow          %d match, %d mismatch
  re-decryption   %d ciphertexts made before the switch decrypted through B, %d failed
  final state     %s, serving from %s
  pace            %.1f keys/s to the switch (%.0f s); %.0f to %.0f background calls/s while copying and verifying
  CreateKey       %d failed; existence checks: %d from records, %d asked a backend, %d not answered in time
  memory          %.1f MB resident before the start, %.1f MB at the peak (%.0f bytes a key, the whole process)
`, verdict, r.KeysTotal, r.KeysCopied, r.KeysVerified, r.KeysIdentical, r.KeysOnA, r.GrantsCopied, r.CreatedDuring,
		r.RequestsTotal, r.RequestsFailed, r.RequestsOver250ms,
		r.P50ms, r.P99ms, r.P99BeforeCutoverMs, r.P99DuringCutoverMs,
		r.CutoverSeconds, r.DisconnectedSeconds, r.HealthPolls,
		r.Fallbacks, r.ShadowMatch, r.ShadowMismatch, r.Redecrypted, r.RedecryptFailed,
		r.FinalState, r.ServingBackend,
		r.KeysPerSecond, r.SwitchSeconds, r.PaceMinCallsPerSecond, r.PaceMaxCallsPerSecond,
		r.CreateKeyFailed, r.CreateKeyChecks.Records, r.CreateKeyChecks.Backend, r.CreateKeyChecks.Failed,
		r.RSSBeforeMB, r.RSSPeakMB, r.RSSGrowthBytesPerKey)
	if r.EtcdWritesPerKey > 0 {
		fmt.Fprintf(w, "  fleet store     %.2f etcd writes a key\n", r.EtcdWritesPerKey)
	}
	if r.Replicas > 1 {
		fmt.Fprintf(w, "  fleet           %d replicas, %d acknowledged the final epoch; driver changed %d time(s)\n", r.Replicas, r.MembersAcked, r.DriverChanges)
		fmt.Fprintf(w, "  per replica     %s\n", r.perReplicaText())
	}
	for k, v := range r.Errors {
		fmt.Fprintf(w, "  error %-28s %d\n", k, v)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "  FAILURE: %s\n", f)
	}
}
