package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/metrictest"
)

// liveEnv is a Live on a configuration file, in front of in-process emulated Cosmian servers.
type liveEnv struct {
	t        *testing.T
	dir      string
	path     string
	backends map[string]string // name → [[backend]] entry
	live     *Live
	reg      *prometheus.Registry
}

func newLiveEnv(t *testing.T, names ...string) *liveEnv {
	t.Helper()
	e := &liveEnv{t: t, dir: t.TempDir(), backends: map[string]string{}, reg: prometheus.NewRegistry()}
	e.path = filepath.Join(e.dir, "xksproxy.toml")
	for i, name := range names {
		tok := "owner-token-" + name
		s, err := kmsemu.New(kmsemu.Config{Tokens: map[string]string{tok: "admin"}, CosmianVersion: kmsemu.Cosmian528,
			XKS: &kmsemu.XKSConfig{Region: "us-east-1", AccessKeyID: "AKIACOSMIANBACKEND0" + fmt.Sprint(i), SecretAccessKey: testSecret}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			for k := range 3 {
				if err := s.CreateKey("admin", fmt.Sprintf("live-key-%d", k), kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		run, err := s.Start("127.0.0.1:0", true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { run.Close() })
		ckms := filepath.Join(e.dir, "ckms-"+name+".toml")
		if err := os.WriteFile(ckms, []byte("[http_config]\nserver_url = \""+run.URL+"\"\naccept_invalid_certs = true\naccess_token = \""+tok+"\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.backends[name] = fmt.Sprintf("[[backend]]\nname = %q\nxks_url = %q\nregion = \"us-east-1\"\naccess_key_id = \"AKIACOSMIANBACKEND0%d\"\nsecret_access_key = %q\nckms_config = %q\n",
			name, run.URL+"/aws", i, testSecret, ckms)
	}
	return e
}

// write writes the file with the named backends and, when cutover is not "", a [cutover]
// section with those extra lines.
func (e *liveEnv) write(cutover string, names ...string) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString("[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\n[tls]\nmode = \"self-signed\"\n")
	b.WriteString("[[prefix]]\npath = \"/aws\"\nregion = \"us-east-1\"\n[[prefix.credential]]\naccess_key_id = \"AKIAXKSPROXYOLDKEY01\"\nsecret_access_key = \"" + testSecret + "\"\ncreated = \"2026-01-01\"\n")
	for _, n := range names {
		b.WriteString(e.backends[n])
	}
	b.WriteString("[health]\ndisabled = true\n")
	if cutover != "" {
		b.WriteString("[cutover]\njournal_path = \"cutover.journal\"\nsource = \"a\"\ntarget = \"b\"\nprobation_min_requests = 0\n" + cutover)
	}
	if err := os.WriteFile(e.path, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// start runs a Live on the file until the end of the test.
func (e *liveEnv) start() {
	e.t.Helper()
	f, _, err := config.Load(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	sockets := NewSockets(func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) })
	e.t.Cleanup(func() { sockets.Close() })
	e.live, err = NewLive(context.Background(), LiveConfig{Path: e.path, Logger: log, Sockets: sockets, Registry: e.reg,
		Setup: func(ctx context.Context, f *config.File) (Config, error) {
			ac, err := FromFile(ctx, f, "test", log, nil)
			return ac, f.Locate(err)
		}}, f)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan struct{})
	go func() { done <- e.live.Run(ctx, func() { close(ready) }) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		e.t.Fatalf("Run: %v", err)
	}
	e.live.StartController()
}

func (e *liveEnv) wait(want cutover.State) cutover.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := e.live.Controller().Wait(ctx, want)
	if err != nil {
		e.t.Fatalf("waiting for %s: %v (%s)", want, err, st.LastError)
	}
	return st
}

// TestLiveReloadAndPairs: a single-backend proxy gets a second backend and the controller by a
// reload; a reload that removes the backend that serves, or changes [cutover] during a
// migration, is refused key by key and changes nothing; one that adds a third backend during
// the migration keeps the controller; once A → B is finalized, a start naming B → C gets the
// controller of that pair. The socket never changes; the reloads are counted.
func TestLiveReloadAndPairs(t *testing.T) {
	e := newLiveEnv(t, "a", "b", "c")
	e.write("", "a")
	e.start()
	addr := e.live.Proxy().Addr().String()
	ctx := context.Background()
	if e.live.Controller() != nil {
		t.Fatal("a controller with one backend")
	}

	e.write("probation_duration = \"1s\"\n", "a", "b")
	if _, err := e.live.Reload(ctx); err != nil {
		t.Fatalf("adding b: %v", err)
	}
	if c := e.live.Controller(); c == nil || c.Status().State != cutover.StateServing {
		t.Fatal("no controller serving after b was added")
	}

	e.write("", "b")
	_, err := e.live.Reload(ctx)
	if !errors.Is(err, ErrReloadRefused) || !strings.Contains(err.Error(), `backend "a" cannot be removed: it serves`) {
		t.Fatalf("removing the serving backend: %v", err)
	}

	ps := &pairSwitch{l: e.live}
	if err := ps.Start(ctx, cutover.StartOptions{NoShadow: true, AutoSwitch: true}); err != nil {
		t.Fatal(err)
	}
	e.wait(cutover.StateSwitched)
	ctrl := e.live.Controller()

	e.write("probation_duration = \"2s\"\n", "a", "b")
	_, err = e.live.Reload(ctx)
	if !errors.Is(err, ErrReloadRefused) || !strings.Contains(err.Error(), "xksproxy.toml:") ||
		!strings.Contains(err.Error(), "cutover.probation_duration: changed while the migration a → b is in flight") {
		t.Fatalf("changing [cutover] during the migration: %v", err)
	}
	e.write("probation_duration = \"1s\"\n", "a", "b", "c")
	if _, err := e.live.Reload(ctx); err != nil {
		t.Fatalf("adding c during the migration: %v", err)
	}
	if e.live.Controller() != ctrl {
		t.Fatal("adding a backend replaced the controller of the migration in flight")
	}
	if err := ps.Start(ctx, cutover.StartOptions{Source: "b", Target: "c"}); !errors.Is(err, cutover.ErrWrongState) {
		t.Fatalf("b → c while a → b is switched: %v", err)
	}
	waitProbation(t, ctrl)
	if err := ps.Finalize(ctx, cutover.FinalizeOptions{}); err != nil {
		t.Fatal(err)
	}

	if _, err := ps.Plan(ctx, cutover.PlanOptions{Source: "b", Target: "c"}); err != nil {
		t.Fatalf("plan b → c: %v", err)
	}
	if e.live.Controller() != ctrl {
		t.Fatal("a plan replaced the controller")
	}
	if err := ps.Start(ctx, cutover.StartOptions{Source: "b", Target: "c", NoShadow: true, AutoSwitch: true}); err != nil {
		t.Fatalf("start b → c: %v", err)
	}
	if src, tgt := e.live.Controller().Pair(); src != "b" || tgt != "c" {
		t.Fatalf("controller pair %s → %s", src, tgt)
	}
	st := e.wait(cutover.StateSwitched)
	if st.Primary != "c" || st.Fallback != "b" {
		t.Fatalf("b → c switched: %s serves, fallback %s", st.Primary, st.Fallback)
	}
	if a := e.live.Proxy().Addr().String(); a != addr || e.live.Proxy().Route().Primary != "c" {
		t.Fatalf("the proxy serves %s on %s (started on %s)", e.live.Proxy().Route().Primary, a, addr)
	}
	for result, want := range map[string]float64{"applied": 2, "refused": 2} {
		if got, _ := metrictest.Value(t, e.reg, "xks_config_reloads_total", map[string]string{"result": result}); got != want {
			t.Errorf("xks_config_reloads_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func waitProbation(t *testing.T, c *cutover.Controller) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if p := c.Status().Probation; p != nil && p.Passed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("probation did not pass: %+v", c.Status().Probation)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
