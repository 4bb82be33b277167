package cutover

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// markerOn returns the marker the emulator holds, waiting for the background writer to reach
// epoch (the writer never blocks a transition).
func markerOn(t *testing.T, s *kmsemu.Server, name string, epoch uint64) *Marker {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var m *Marker
		var err error
		if o, ok := markerObject(s); ok {
			m, err = parseMarker(name, o.Tags)
			m.UID = o.UID
			if err != nil {
				t.Fatalf("marker on %s: %v", name, err)
			}
			if m.Epoch >= epoch {
				if o.State == "Active" {
					t.Errorf("marker on %s is usable (state %s)", name, o.State)
				}
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no marker at epoch %d on %s (have %+v)", epoch, name, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// markerObject is the object on s that carries the marker tag (at most one in these tests).
func markerObject(s *kmsemu.Server) (kmsemu.ObjectInfo, bool) {
	for _, o := range s.Objects() {
		if slices.Contains(o.Tags, markerTag) {
			return o, true
		}
	}
	return kmsemu.ObjectInfo{}, false
}

// migrateTo runs a migration A → B up to state (switched or finalized) and closes the
// controller; it returns the epoch reached.
func migrateTo(t *testing.T, e *env, state State) uint64 {
	t.Helper()
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	if state == StateFinalized {
		must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	}
	st := c.Status()
	must(t, e.stop(c))
	return st.Epoch
}

func TestMarkerJournalLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state State
		want  []string
	}{
		{"after finalize", StateFinalized, []string{"state finalized", "serving B", `source = "B"`, "restore the journal"}},
		{"while switched", StateSwitched, []string{"state switched", "serving B with fallback A", "restore it from a backup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, kmsemu.Cosmian526)
			seedMixed(t, e.A, 6)
			epoch := migrateTo(t, e, tc.state)
			for _, b := range []struct {
				s    *kmsemu.Server
				name string
			}{{e.A, "A"}, {e.B, "B"}} {
				m := markerOn(t, b.s, b.name, epoch)
				if m.Epoch != epoch || m.State != tc.state || m.Primary != "B" || m.Source != "A" || m.Target != "B" {
					t.Errorf("marker on %s: %+v", b.name, m)
				}
			}
			must(t, os.Remove(e.journal))
			_, _, err := open(e.config(nil))
			if err == nil || !errors.Is(err, ErrMarkerAhead) {
				t.Fatalf("New without the journal: %v", err)
			}
			for _, w := range append(tc.want, e.journal, "missing", "refusing to start", markerOn(t, e.A, "A", epoch).UID) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if _, err := os.Stat(e.journal); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused start wrote a journal: %v", err)
			}
			if tc.state != StateFinalized {
				return
			}
			// The way forward the message names: B as the source of the next migration.
			c, _, err := open(e.config(func(cfg *Config) { cfg.Source, cfg.Target = cfg.Target, cfg.Source }))
			if err != nil {
				t.Fatalf("New with source B: %v", err)
			}
			defer c.Close()
			// One epoch past the backends', recorded on them first.
			if ep, p, f := journalRoute(c); ep != epoch+1 || p != "B" || f != "" {
				t.Errorf("route epoch %d %q/%q, want epoch %d B alone", ep, p, f, epoch+1)
			}
			if m := markerOn(t, e.B, "B", epoch+1); m.State != StateServing || m.Primary != "B" {
				t.Errorf("marker after continuing from the backends: %+v", m)
			}
		})
	}
}

// A fresh install gets a key store identity, and its epoch 1 is recorded on both backends under
// an id that carries that identity.
func TestMarkerFreshInstall(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, nil)
	if ep, p, _ := journalRoute(c); ep != 1 || p != "A" {
		t.Errorf("fresh start: epoch %d primary %q", ep, p)
	}
	ks := c.Traffic().keyStore()
	if len(ks) != 32 || !validKeyStoreID(ks) {
		t.Fatalf("key store identity %q", ks)
	}
	for _, b := range []struct {
		s    *kmsemu.Server
		name string
	}{{e.A, "A"}, {e.B, "B"}} {
		m := markerOn(t, b.s, b.name, 1)
		if m.KeyStore != ks || m.UID != markerID(ks) || m.State != StateServing || m.Primary != "A" {
			t.Errorf("marker on %s: %+v", b.name, m)
		}
	}
	must(t, e.stop(c))
	// A second start on the same journal still works.
	c2, _, err := open(e.config(nil))
	must(t, err)
	must(t, c2.Close())
}

func TestMarkerOlderJournal(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 4)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	old, err := os.ReadFile(e.journal)
	must(t, err)
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	epoch := c.Status().Epoch
	must(t, e.stop(c))
	markerOn(t, e.A, "A", epoch)
	markerOn(t, e.B, "B", epoch)
	// An old backup put back: it would route to A with B as fallback.
	must(t, os.WriteFile(e.journal, old, 0o600))
	_, _, err = open(e.config(nil))
	if err == nil || !errors.Is(err, ErrMarkerAhead) || !strings.Contains(err.Error(), "use the newest journal") ||
		!strings.Contains(err.Error(), "state finalized") {
		t.Fatalf("New with an old journal: %v", err)
	}
}

func TestMarkerUnreadable(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	e.B.SetFaults(kmsemu.Faults{Down: true})
	_, _, err := open(e.config(func(c *Config) { c.MarkerTimeout = 500 * time.Millisecond }))
	if err == nil || !errors.Is(err, ErrMarkerUnreadable) || !strings.Contains(err.Error(), "(B: ") {
		t.Fatalf("New with B down and no journal: %v", err)
	}
	e.B.SetFaults(kmsemu.Faults{})
	// With a journal, a backend that is down only earns a warning.
	c, _, err := open(e.config(nil))
	must(t, err)
	must(t, c.Close())
	e.B.SetFaults(kmsemu.Faults{Down: true})
	c, _, err = open(e.config(func(c *Config) { c.MarkerTimeout = 500 * time.Millisecond }))
	must(t, err)
	e.B.SetFaults(kmsemu.Faults{})
	must(t, c.Close())
}

// The marker is owned by the keys' owner like every key, so an "owned" selection would list
// it: it must never be planned, copied or counted.
func TestMarkerNeverMigrates(t *testing.T) {
	e := newEnv(t, kmsemu.Cosmian526)
	ids := seedMixed(t, e.A, 4)
	sel := func(cfg *Config) { cfg.Select = Selection{Mode: "owned"} }
	c := e.controller(t, sel)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	must(t, c.Finalize(ctx, FinalizeOptions{Force: true, Reason: "test: finalize before probation ends"}))
	epoch := c.Status().Epoch
	must(t, e.stop(c))
	markerOn(t, e.A, "A", epoch)
	markerOn(t, e.B, "B", epoch)
	c2, _, err := open(e.config(func(cfg *Config) { sel(cfg); cfg.Source, cfg.Target = cfg.Target, cfg.Source }))
	must(t, err)
	defer c2.Close()
	plan, err := c2.Plan(ctx)
	must(t, err)
	for _, k := range plan.Keys {
		if strings.HasPrefix(k.KeyID, markerIDPrefix) {
			t.Fatalf("the marker is in the plan: %+v", k)
		}
	}
	if len(plan.Keys) != len(ids) {
		t.Errorf("plan has %d keys, want %d", len(plan.Keys), len(ids))
	}
}

func FuzzParseMarker(f *testing.F) {
	m := &Marker{KeyStore: "0123456789abcdef0123456789abcdef", Epoch: 7, State: StateSwitched, Primary: "b", Fallback: "a", Source: "a", Target: "b", UpdatedAt: time.Unix(1e9, 0)}
	f.Add(strings.Join(m.tags(), "\n"))
	f.Add("xksproxy-cutover-marker\nxksproxy-epoch:0")
	f.Add("xksproxy-cutover-marker\nxksproxy-epoch:18446744073709551616\nxksproxy-state:serving")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseMarker("x", strings.Split(s, "\n"))
		if err != nil {
			return
		}
		if got.Epoch == 0 || !got.State.valid() || got.Primary == "" {
			t.Fatalf("accepted %+v", got)
		}
		back, err := parseMarker("x", got.tags())
		if err != nil || back.Epoch != got.Epoch || back.State != got.State || back.Primary != got.Primary || back.KeyStore != got.KeyStore {
			t.Fatalf("round trip %+v → %+v, %v", got, back, err)
		}
	})
}
