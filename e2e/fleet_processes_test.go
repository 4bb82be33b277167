package e2e

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/internal/etcdproc"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/sigv4"
)

// fleetProcKeys is the number of keys seeded on A. Their copy is made to last (seconds, not
// milliseconds) with the operator's own knob, a fixed [cutover] pace of 60 backend calls a
// second (about 8 keys copied a second), so that a replica dies in the middle of it (the
// kmsemu command has no latency flag; its Faults are set in process only). Keys created on A
// during the migration join it: the load's CreateKey rate (2 % of 40 requests a second) stays
// well under what that pace copies and verifies, or the migration would chase them for minutes
// (seen at 1.8 new keys a second against a pace of 30).
const fleetProcKeys = 200

// TestFleetProcessesSIGKILL runs a migration the way operators run a fleet, with nothing in
// process but the load generator: a real etcd process, two emulated Cosmian servers (A seeded
// with fleetProcKeys keys, B empty) and three `xksproxy serve --config FILE` processes in fleet
// mode, each with its own file, journal, admin listener and metrics. Signed XKS load (Encrypt,
// Decrypt, a few % CreateKey) goes through every replica; the migration is started with
// `xksproxy cutover start` on the driver's admin API; during the copy one replica (picked at
// random, the driver or not; E2E_FLEET_VICTIM=driver|other forces it) is killed with SIGKILL,
// left down until the fleet sees it gone, and started again with the same file. Then: switched, probation, `cutover finalize` sent to a
// replica that does not drive. Nothing may fail: no request, no key (every key on A is on B with
// the same material), every replica finalized on b, every ciphertext of the run readable
// through every replica.
//
// The load: loadgen with Config.Endpoints spreads requests over the replicas as a load balancer
// does and sends a request refused at connect time to the next replica, without counting it.
// But a request in flight on the victim when it dies, or sent on a kept-alive connection to it
// afterwards, did connect: loadgen counts it failed, as AWS would see it. SIGKILL gives a load
// balancer no chance to drain the replica, so that is a property of the kill, not of the
// migration. The test therefore drains the victim itself first, as a load balancer's
// deregistration would: phase 1 spreads load over all three replicas; phase 2 (over the two
// others) starts before phase 1 stops, and phase 1's stop waits for its requests in flight;
// only then is the victim killed. Phase 3 (all three again) starts once the restarted victim
// answers /ready, before phase 2 stops. Traffic never pauses, and every request of every phase
// must succeed.
func TestFleetProcessesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	bin := buildBinaries(t, filepath.Join(dir, "bin"), "fleet-processes", "./cmd/xksproxy", "./cmd/kmsemu")
	etcd := etcdproc.Start(t)
	t.Logf("etcd %s at %s", etcd.Version, etcd.Endpoint)

	const region, token = "us-east-1", "fleet-processes-admin-token-0123456789"
	cred := sigv4.Credential{AccessKeyID: "AKIAFLEETPROCESSES01", Secret: "ZmxlZXQtcHJvY2Vzc2VzLXNlY3JldC1mbGVldC1wcm9jZXNzZXMt"}
	ports := freePorts(t, 2+3*3)
	emuA := startEmu(t, bin, dir, "a", ports[0], fleetProcKeys)
	emuB := startEmu(t, bin, dir, "b", ports[1], 0)

	ca := testpki.NewCA(t, "fleet-processes CA", time.Now().Add(24*time.Hour))
	certFile, keyFile := filepath.Join(dir, "xks.crt"), filepath.Join(dir, "xks.key")
	ca.WriteLeaf(t, certFile, keyFile, 0, time.Now().Add(24*time.Hour), "localhost", "127.0.0.1")
	clientTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "fleet-secret")
	if err := os.WriteFile(secretFile, []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	reps := make([]*fleetProc, 3)
	for i := range reps {
		r := &fleetProc{name: fmt.Sprintf("xks-%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("xks-%d", i+1)),
			xksPort: ports[2+3*i], metricsPort: ports[3+3*i], adminPort: ports[4+3*i]}
		r.endpoint = "https://127.0.0.1:" + r.xksPort
		r.admin = &adminapi.Client{BaseURL: "http://127.0.0.1:" + r.adminPort, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
		if err := os.MkdirAll(r.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r.cfg = filepath.Join(r.dir, "xksproxy.toml")
		cfg := fmt.Sprintf(`[server]
listen = "127.0.0.1:%s"
metrics_listen = "127.0.0.1:%s"
[tls]
mode = "files"
cert_file = %q
key_file = %q
[[prefix]]
path = "/aws"
region = %q
[[prefix.credential]]
access_key_id = %q
secret_access_key = %q
[admin]
listen = "127.0.0.1:%s"
token = %q
[log]
format = "text"
%s%s[cutover]
journal_path = "cutover.json"
source = "a"
target = "b"
pace = 60
probation_duration = "3s"
probation_min_requests = 0
probation_max_p99 = "2s"
[fleet]
etcd_endpoints = [%q]
ca_file = %q
member = %q
key_prefix = "/xksproxy/e2e-processes/"
lease_ttl = "3s"
secret_file = %q
advertise_admin = "http://127.0.0.1:%s"
`, r.xksPort, r.metricsPort, certFile, keyFile, region, cred.AccessKeyID, cred.Secret, r.adminPort, token,
			emuA.toml, emuB.toml, etcd.Endpoint, etcd.CAFile, r.name, secretFile, r.adminPort)
		if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(filepath.Join(bin, "xksproxy"), "validate", "--config", r.cfg).CombinedOutput(); err != nil {
			t.Fatalf("xksproxy validate --config %s: %v\n%s", r.cfg, err, out)
		}
		reps[i] = r
	}
	for _, r := range reps {
		r.px = startProxyProcess(t, bin, r.dir, r.cfg)
	}
	for _, r := range reps {
		waitReady(t, r.endpoint, clientTLS)
	}

	// status asks r's admin API (a replica that does not drive relays it to the driver).
	status := func(r *fleetProc) (*cutover.Status, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return r.admin.Status(ctx)
	}
	// poll waits for cond (which says what it saw) at a pace fit for admin calls.
	poll := func(what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(3 * waitLong)
		for {
			ok, saw := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s; last seen: %s", 3*waitLong, what, saw)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// fleetSettled: the driver's view, through via, has every replica live on its epoch in
	// state want.
	fleetSettled := func(via *fleetProc, want cutover.State) (s *cutover.Status, ok bool, saw string) {
		s, err := status(via)
		if err != nil {
			return nil, false, err.Error()
		}
		saw = describe(s)
		if s.Fleet == nil || s.Fleet.Driver == "" {
			return s, false, saw
		}
		for _, st := range stuck {
			if s.State == st && want != st {
				t.Fatalf("the migration stopped in %s: %s", s.State, saw)
			}
		}
		if s.State != want || len(s.Fleet.Members) != len(reps) {
			return s, false, saw
		}
		for _, m := range s.Fleet.Members {
			if !m.Live || m.AppliedEpoch != s.Epoch {
				return s, false, saw
			}
		}
		return s, true, saw
	}
	settled := func(via *fleetProc, want cutover.State) *cutover.Status {
		t.Helper()
		var s *cutover.Status
		poll("every replica live and in state "+string(want), func() (ok bool, saw string) {
			s, ok, saw = fleetSettled(via, want)
			return ok, saw
		})
		return s
	}
	s := settled(reps[0], cutover.StateServing)
	driver := byName(t, reps, s.Fleet.Driver)
	if s.Primary != "a" {
		t.Fatalf("before the migration %s serves, want a", s.Primary)
	}

	var victim *fleetProc
	switch os.Getenv("E2E_FLEET_VICTIM") {
	case "driver":
		victim = driver
	case "other":
		victim = reps[slices.IndexFunc(reps, func(r *fleetProc) bool { return r != driver })]
	default:
		victim = reps[mrand.IntN(len(reps))]
	}
	t.Logf("driver before the kill: %s; victim: %s (the driver: %v)", driver.name, victim.name, victim == driver)

	keys := make([]string, fleetProcKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%06d", i+1)
	}
	// phase runs signed traffic spread over on, as a load balancer in front of them would.
	phase := func(tag string, on ...*fleetProc) *load {
		var eps []string
		for _, r := range on[1:] {
			eps = append(eps, r.endpoint)
		}
		return runLoad(t, loadgen.Config{
			Endpoint: on[0].endpoint, Endpoints: eps, Prefix: "/aws", Region: region, Credential: cred, TLS: clientTLS,
			Keys: keys, Rate: 40, Workers: 32, Conns: 4, Timeout: clientTTL, Principals: []string{principal},
			Mix: loadgen.Mix{Encrypt: 0.49, Decrypt: 0.49, CreateKey: 0.02}, CreateKeyPrefix: "fp-" + tag + "-%d", Record: true,
		})
	}
	others := slices.DeleteFunc(slices.Clone(reps), func(r *fleetProc) bool { return r == victim })
	phase1 := phase("all", reps...)
	time.Sleep(2 * time.Second)

	// The operator starts the migration on the driver's admin API.
	cli := func(r *fleetProc, args ...string) []byte {
		t.Helper()
		all := append(append([]string{"cutover"}, args...), "--admin", r.admin.BaseURL)
		cmd := exec.Command(filepath.Join(bin, "xksproxy"), all...)
		cmd.Env = append(os.Environ(), "XKSPROXY_ADMIN_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("xksproxy %s (to %s): %v\n%s", strings.Join(all, " "), r.name, err, out)
		}
		return out
	}
	t.Logf("%s", cli(driver, "start", "--no-shadow"))

	// Once a fifth of the keys are copied: drain the victim (phase 2 first), kill it.
	via := others[0] // the status through a replica that stays up
	poll("the copy under way", func() (bool, string) {
		s, err := status(via)
		if err != nil {
			return false, err.Error()
		}
		if s.State == cutover.StateServing {
			return false, describe(s)
		}
		if s.State != cutover.StateCopying {
			t.Fatalf("waiting for the copy to be under way, the migration is past it (make the copy slower): %s", describe(s))
		}
		return s.Keys.Copied >= fleetProcKeys/5, describe(s)
	})
	phase2 := phase("survivors", others...)
	rep1 := phase1.stop()
	s, err := status(via)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != cutover.StateCopying || s.Keys.Pending == 0 {
		t.Fatalf("about to kill %s: the migration is %s with %d keys pending; it must still be copying (make the copy slower)", victim.name, s.State, s.Keys.Pending)
	}
	t.Logf("SIGKILL %s (pid %d) while copying: %d copied, %d pending, epoch %d", victim.name, victim.px.pid(), s.Keys.Copied, s.Keys.Pending, s.Epoch)
	if err := syscall.Kill(victim.px.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.px.exited:
	case <-time.After(waitLong):
		t.Fatalf("%s did not die after SIGKILL", victim.name)
	}
	// Keep the dead process's log (startProxyProcess starts a new one), shown if the test fails.
	killedLog := filepath.Join(victim.dir, "xksproxy.killed.log")
	if err := os.Rename(victim.px.log, killedLog); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(killedLog)
			t.Logf("%s before the SIGKILL:\n%s", victim.name, withoutRequests(b))
		}
	})
	// The replica stays down until the fleet sees it gone (its lease ran out; a driver killed
	// is replaced by another replica), as after a host lost rather than a quick restart: the
	// migration must go on, or wait for it, without it.
	dead := time.Now()
	poll("the fleet seeing "+victim.name+" gone", func() (bool, string) {
		s, err := status(via)
		if err != nil {
			return false, err.Error()
		}
		if s.Fleet == nil || s.Fleet.Driver == "" || s.Fleet.Driver == victim.name {
			return false, describe(s)
		}
		for _, m := range s.Fleet.Members {
			if m.Name == victim.name && m.Live {
				return false, describe(s)
			}
		}
		t.Logf("%v after the SIGKILL: %s", time.Since(dead).Round(100*time.Millisecond), describe(s))
		return true, ""
	})
	victim.px = startProxyProcess(t, bin, victim.dir, victim.cfg)
	waitReady(t, victim.endpoint, clientTLS)
	if s, err := status(via); err == nil {
		t.Logf("%s ready again: %s", victim.name, describe(s))
	}
	phase3 := phase("again", reps...)
	rep2 := phase2.stop()

	s = settled(via, cutover.StateSwitched)
	if s.Primary != "b" || s.Fallback != "a" {
		t.Fatalf("switched: %s serves, fallback %q; want b, a", s.Primary, s.Fallback)
	}
	poll("probation passed", func() (bool, string) {
		s, err := status(via)
		if err != nil {
			return false, err.Error()
		}
		if s.State != cutover.StateSwitched {
			t.Fatalf("waiting for probation to pass: %s", describe(s))
		}
		return s.Probation != nil && s.Probation.Passed, describe(s)
	})
	s, err = status(via)
	if err != nil {
		t.Fatal(err)
	}
	nonDriver := reps[slices.IndexFunc(reps, func(r *fleetProc) bool { return r.name != s.Fleet.Driver })]
	t.Logf("finalize through %s (driver %s): %s", nonDriver.name, s.Fleet.Driver, cli(nonDriver, "finalize"))
	s = settled(via, cutover.StateFinalized)
	final := s.Epoch
	if s.Primary != "b" || s.Fallback != "" {
		t.Fatalf("finalized: %s serves, fallback %q; want b alone", s.Primary, s.Fallback)
	}
	// Each replica's own view, from its own metrics.
	for _, r := range reps {
		poll(r.name+"'s own metrics finalized on b", func() (bool, string) {
			m := r.metrics()
			state, route := samples(m, "xks_cutover_state", "1"), samples(m, "xks_route_info", "1")
			epoch := samples(m, "xks_fleet_applied_epoch", fmt.Sprint(final))
			return slices.Equal(state, []string{`xks_cutover_state{state="finalized"}`}) &&
					len(route) == 1 && strings.Contains(route[0], `primary="b"`) && !strings.Contains(route[0], `fallback="a"`) &&
					len(epoch) == 1,
				fmt.Sprintf("state %v, route %v, applied epoch %d: %v", state, route, final, epoch)
		})
	}
	time.Sleep(time.Second) // traffic on the finalized route
	rep3 := phase3.stop()

	for i, rep := range []*loadgen.Report{rep1, rep2, rep3} {
		noFailures(t, fmt.Sprintf("load phase %d", i+1), rep)
		for ep, st := range rep.ByEndpoint {
			t.Logf("load phase %d: %s: %d requests, %d failed, %d refused", i+1, ep, st.Requests, st.Failed, st.Refused)
			if st.Requests == 0 {
				t.Errorf("load phase %d: no request reached %s", i+1, ep)
			}
		}
	}

	checkIdenticalKMIP(t, emuA, emuB)

	// Ciphertexts of the whole run, those of phase 1 all made before the switch, through each
	// replica one by one.
	var items []loadgen.Sealed
	for _, l := range []*load{phase1, phase2, phase3} {
		items = append(items, l.lg.Recorded()...)
	}
	if len(phase1.lg.Recorded()) == 0 {
		t.Fatal("no ciphertext recorded before the switch")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for _, r := range reps {
		lg, err := loadgen.New(loadgen.Config{Endpoint: r.endpoint, Prefix: "/aws", Region: region, Credential: cred, TLS: clientTLS,
			Keys: keys, Workers: 16, Conns: 4, Timeout: clientTTL, Principals: []string{principal}})
		if err != nil {
			t.Fatal(err)
		}
		ok, failed, failures, err := lg.Redecrypt(ctx, items)
		if err != nil || failed != 0 || ok != len(items) {
			t.Errorf("through %s: %d of %d ciphertexts failed (%v): %v", r.name, failed, len(items), err, failures)
		}
	}
	t.Logf("%d ciphertexts (%d made before the switch) decrypted through each of %d replicas", len(items), len(phase1.lg.Recorded()), len(reps))
}

// fleetProc is one replica: an `xksproxy serve` process and its file.
type fleetProc struct {
	name, dir, cfg                  string
	xksPort, metricsPort, adminPort string
	endpoint                        string
	admin                           *adminapi.Client
	px                              *proxyProcess
}

// describe is what a failure message needs of a status (no key material is in it).
func describe(s *cutover.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s epoch %d (%s → %s), %s serves, fallback %q; keys %+v", s.State, s.Epoch, s.Source, s.Target, s.Primary, s.Fallback, s.Keys)
	if s.Reason != "" || s.LastError != "" {
		fmt.Fprintf(&b, "; reason %q, last error %q", s.Reason, s.LastError)
	}
	if len(s.Failures) > 0 {
		fmt.Fprintf(&b, "; failures %v", s.Failures)
	}
	if p := s.Probation; p != nil {
		fmt.Fprintf(&b, "; probation passed %v, %d requests since the switch, waiting %q", p.Passed, p.SinceSwitch, p.Waiting)
	}
	if f := s.Fleet; f != nil {
		fmt.Fprintf(&b, "; driver %q, waiting for %v, members", f.Driver, f.WaitingFor)
		for _, m := range f.Members {
			fmt.Fprintf(&b, " [%s epoch %d %s/%s live %v]", m.Name, m.AppliedEpoch, m.Primary, m.Fallback, m.Live)
		}
	}
	return b.String()
}

func byName(t *testing.T, reps []*fleetProc, name string) *fleetProc {
	t.Helper()
	for _, r := range reps {
		if r.name == name {
			return r
		}
	}
	t.Fatalf("no replica named %q", name)
	return nil
}

// metrics is the replica's Prometheus text ("" when it does not answer).
func (r *fleetProc) metrics() string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + r.metricsPort + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return string(b)
}

// samples lists the series of metric name (with their labels) whose value is value in the
// Prometheus text m.
func samples(m, name, value string) []string {
	var out []string
	for l := range strings.SplitSeq(m, "\n") {
		series, v, ok := strings.Cut(l, " ")
		if ok && v == value && (series == name || strings.HasPrefix(series, name+"{")) {
			out = append(out, series)
		}
	}
	return out
}

// checkIdenticalKMIP asserts through each emulator's KMIP API (the proxy's own ckms identities)
// that every key tagged aws-xks on a — the migration's selection, less the proxy's own objects —
// is on b with the same material.
func checkIdenticalKMIP(t *testing.T, a, b emuBackend) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	client := func(be emuBackend) *cosmian.Client {
		cc, err := cosmian.LoadCKMSConfig(be.ckms)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := cc.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		c, err := cosmian.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, cb := client(a), client(b)
	ids, err := ca.Locate(ctx, cosmian.LocateRequest{Tags: []string{cosmian.XKSTag}})
	if err != nil {
		t.Fatalf("Locate on %s: %v", a.name, err)
	}
	checked := 0
	for _, id := range ids {
		if id == a.healthKey || id == b.healthKey {
			continue
		}
		ka, err := ca.Export(ctx, id, true)
		if err != nil {
			t.Errorf("export %s from %s: %v", id, a.name, err)
			continue
		}
		if cutover.IsOwnObject(ka.Attributes.UserTags()) {
			ka.Wipe()
			continue
		}
		kb, err := cb.Export(ctx, id, true)
		if err != nil {
			ka.Wipe()
			t.Errorf("key %s is on %s but not readable on %s: %v", id, a.name, b.name, err)
			continue
		}
		if len(ka.Material) == 0 || subtle.ConstantTimeCompare(ka.Material, kb.Material) != 1 {
			t.Errorf("key %s: its material on %s is not %s's", id, b.name, a.name)
		}
		ka.Wipe()
		kb.Wipe()
		checked++
	}
	if checked < fleetProcKeys {
		t.Errorf("only %d keys checked on %s, want at least the %d seeded", checked, a.name, fleetProcKeys)
	}
	t.Logf("%d keys on %s, each on %s with the same material", checked, a.name, b.name)
}
