package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/internal/etcdtest"
)

// fleetEnv is a fleet of proxies (devstack replicas) on two emulators, coordinated through an
// embedded etcd over TLS.
type fleetEnv struct {
	st   *devstack.Stack
	etcd *etcdtest.Server
	reps []*devstack.Replica
	ids  []string
}

// fleetLease is short so that a dead driver is replaced, and a dead member expires, in seconds.
const fleetLease = 2 * time.Second

func startFleet(t *testing.T, keys, replicas int, mut func(*devstack.Config)) *fleetEnv {
	t.Helper()
	srv := etcdtest.Start(t)
	cfg := devstack.Config{
		Probation: testProbation(3 * time.Second),
		Fleet: &fleet.Config{Endpoints: []string{srv.Endpoint}, CAFile: srv.CAFile,
			LeaseTTL: fleetLease, MinLeaseTTL: time.Second, DialTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second},
	}
	if os.Getenv("E2E_FLEET_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if mut != nil {
		mut(&cfg)
	}
	st, ids := startStack(t, keys, cfg)
	f := &fleetEnv{st: st, etcd: srv, ids: ids, reps: []*devstack.Replica{st.Main()}}
	for i := 2; i <= replicas; i++ {
		f.add(t, fmt.Sprintf("r%d", i))
	}
	f.waitMembers(t, replicas)
	return f
}

func (f *fleetEnv) add(t *testing.T, name string) *devstack.Replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := f.st.AddReplica(ctx, name)
	if err != nil {
		t.Fatalf("replica %s: %v", name, err)
	}
	f.reps = append(f.reps, r)
	return r
}

// waitMembers waits until every running replica sees n live members and a driver.
func (f *fleetEnv) waitMembers(t *testing.T, n int) {
	t.Helper()
	waitFor(t, waitLong, fmt.Sprintf("%d live members and a driver", n), func() bool {
		if f.driver() == nil {
			return false
		}
		for _, r := range f.running() {
			if r.App.Cutover.Traffic().FleetSize() != n {
				return false
			}
		}
		return true
	})
}

// running lists the replicas whose proxy runs.
func (f *fleetEnv) running() []*devstack.Replica {
	var out []*devstack.Replica
	for _, r := range f.reps {
		if r.App != nil && r.Running() {
			out = append(out, r)
		}
	}
	return out
}

// driver is the running replica that drives the migration (nil: none right now).
func (f *fleetEnv) driver() *devstack.Replica {
	for _, r := range f.running() {
		if r.App.Cutover.IsDriver() {
			return r
		}
	}
	return nil
}

// nonDriver is a running replica that does not drive.
func (f *fleetEnv) nonDriver(t *testing.T) *devstack.Replica {
	t.Helper()
	for _, r := range f.running() {
		if !r.App.Cutover.IsDriver() {
			return r
		}
	}
	t.Fatal("no running non-driver replica")
	return nil
}

func (f *fleetEnv) admin(r *devstack.Replica) *adminapi.Client {
	return &adminapi.Client{BaseURL: r.AdminURL, Token: f.st.AdminToken, HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

// waitAll waits until every running replica applied an epoch in state want (and fails on a
// stuck state).
func (f *fleetEnv) waitAll(t *testing.T, want cutover.State) cutover.Status {
	t.Helper()
	return f.waitAllWithin(t, want, waitLong)
}

func (f *fleetEnv) waitAllWithin(t *testing.T, want cutover.State, within time.Duration) cutover.Status {
	t.Helper()
	var last cutover.Status
	waitFor(t, within, "every replica in state "+string(want), func() bool {
		d := f.driver()
		if d == nil {
			return false
		}
		last = d.App.Cutover.Status()
		for _, s := range stuck {
			if last.State == s && want != s {
				t.Fatalf("driver %s stuck in %s: %q %v", d.Name, last.State, last.LastError, last.Failures)
			}
		}
		if last.State != want {
			return false
		}
		for _, r := range f.running() {
			s := r.App.Cutover.Status()
			if s.State != want || s.Epoch != last.Epoch || s.Fleet == nil || s.Fleet.AppliedEpoch != last.Epoch {
				return false
			}
		}
		return true
	})
	return last
}

// loadOn sends signed traffic through one replica.
func (f *fleetEnv) loadOn(t *testing.T, r *devstack.Replica, rate float64, createPrefix string) *load {
	t.Helper()
	mix := loadgen.Mix{Encrypt: 0.5, Decrypt: 0.5}
	if createPrefix != "" {
		mix.CreateKey = 0.03
	}
	return runLoad(t, loadgen.Config{
		Endpoint: r.Endpoint, Prefix: f.st.Prefix, Region: f.st.Region, Credential: f.st.Credential,
		TLS: f.st.ClientTLS(), Keys: f.ids, Rate: rate, Workers: 32, Conns: 4, Timeout: clientTTL,
		Principals: []string{principal}, Mix: mix, CreateKeyPrefix: createPrefix, Record: true,
	})
}

// loadAll starts one load per running replica.
func (f *fleetEnv) loadAll(t *testing.T, rate float64, tag string) []*load {
	var ls []*load
	for _, r := range f.running() {
		ls = append(ls, f.loadOn(t, r, rate, tag+"-"+r.Name+"-%d"))
	}
	return ls
}

// stopLoads stops loads and asserts none of their requests failed.
func stopLoads(t *testing.T, name string, ls ...*load) {
	t.Helper()
	for i, l := range ls {
		noFailures(t, fmt.Sprintf("%s load %d", name, i), l.stop())
	}
}

// verifyFleet: every key on A byte-identical on B, and every recorded ciphertext of ls
// decrypts through every running replica.
func (f *fleetEnv) verifyFleet(t *testing.T, ls ...*load) {
	t.Helper()
	checkIdentical(t, f.st)
	var items []loadgen.Sealed
	for _, l := range ls {
		items = append(items, l.lg.Recorded()...)
	}
	if len(items) == 0 {
		t.Fatal("no ciphertext recorded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for _, r := range f.running() {
		lg, err := loadgen.New(loadgen.Config{
			Endpoint: r.Endpoint, Prefix: f.st.Prefix, Region: f.st.Region, Credential: f.st.Credential,
			TLS: f.st.ClientTLS(), Keys: f.ids, Workers: 16, Conns: 4, Timeout: clientTTL, Principals: []string{principal},
		})
		if err != nil {
			t.Fatal(err)
		}
		ok, failed, failures, err := lg.Redecrypt(ctx, items)
		if err != nil || failed != 0 || ok != len(items) {
			t.Errorf("through %s: %d of %d ciphertexts failed (%v): %v", r.Name, failed, len(items), err, failures)
		}
	}
	t.Logf("%d ciphertexts decrypted through each of %d replicas", len(items), len(f.running()))
}
