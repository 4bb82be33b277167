package cutover

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
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

type route struct {
	epoch             uint64
	primary, fallback string
}

// fakeRouter is the proxy a test controller runs with: it records every SetRoute, and forwards
// through fwd (nil: every forward fails, as a backend that does not answer).
type fakeRouter struct {
	mu     sync.Mutex
	routes []route
	fail   bool
	fwd    func(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error)
	onSet  func(route) // called with each route applied
}

// onRoute calls f with each route applied from now on.
func (r *fakeRouter) onRoute(f func(route)) {
	r.mu.Lock()
	r.onSet = f
	r.mu.Unlock()
}

func (r *fakeRouter) Forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error) {
	r.mu.Lock()
	f := r.fwd
	r.mu.Unlock()
	if f == nil {
		return 0, nil, errors.New("test: no forwarder")
	}
	return f(ctx, backend, op, keyID, body)
}

func (r *fakeRouter) setForward(f *fakeForwarder) {
	r.mu.Lock()
	r.fwd = f.fn
	r.mu.Unlock()
}

func (r *fakeRouter) SetRoute(epoch uint64, primary, fallback string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return fmt.Errorf("router refused")
	}
	if n := len(r.routes); n > 0 && r.routes[n-1].epoch >= epoch {
		return fmt.Errorf("epoch %d not above %d", epoch, r.routes[n-1].epoch)
	}
	r.routes = append(r.routes, route{epoch, primary, fallback})
	if r.onSet != nil {
		r.onSet(route{epoch, primary, fallback})
	}
	return nil
}

func (r *fakeRouter) last() route {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.routes) == 0 {
		return route{}
	}
	return r.routes[len(r.routes)-1]
}

func (r *fakeRouter) everPrimary(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.routes, func(x route) bool { return x.primary == name })
}

type fakeForwarder struct {
	fn func(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error)
}

func (f *fakeForwarder) Forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error) {
	return f.fn(ctx, backend, op, keyID, body)
}

// env is two emulated Cosmian servers over loopback TLS.
type env struct {
	A, B    *kmsemu.Server
	cA, cB  *cosmian.Client
	journal string
	router  *fakeRouter
	aclA    string
	aclB    string
	// failA, failB make the controller's calls to A or B whose path contains the set string
	// fail as a lost connection would (failPath).
	failA, failB failPath

	mu    sync.Mutex
	stops map[*Controller]func() error // the controllers running, and how to stop each
}

// failPath is a RoundTripper that fails the requests whose URL path contains a set string.
type failPath struct {
	next   http.RoundTripper
	sub    atomic.Pointer[string]
	denied atomic.Bool // answer 401 instead of losing the connection
}

func (f *failPath) set(sub string) { f.sub.Store(&sub) }

// deny makes the calls to paths containing sub answer 401, as a server refusing the credential.
func (f *failPath) deny(sub string) {
	f.denied.Store(true)
	f.set(sub)
}

func (f *failPath) RoundTrip(r *http.Request) (*http.Response, error) {
	if s := f.sub.Load(); s != nil && *s != "" && strings.Contains(r.URL.Path, *s) {
		if r.Body != nil {
			r.Body.Close()
		}
		if f.denied.Load() {
			return &http.Response{StatusCode: http.StatusUnauthorized, Status: "401 Unauthorized", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}
		return nil, errors.New("test: connection lost")
	}
	return f.next.RoundTrip(r)
}

func newEnv(tb testing.TB, aclB kmsemu.Generation) *env {
	return newEnvGen(tb, kmsemu.Cosmian526, aclB, false)
}

// newEnvGen runs A and B as the given Cosmian generations; with shared, as two nodes over one
// store (Cosmian's HA mode).
func newEnvGen(tb testing.TB, genA, genB kmsemu.Generation, shared bool) *env {
	tb.Helper()
	e := &env{journal: filepath.Join(tb.TempDir(), "cutover.journal"), router: &fakeRouter{}, aclA: string(genA), aclB: string(genB),
		stops: map[*Controller]func() error{}}
	var store *kmsemu.Store
	start := func(acl kmsemu.Generation, fail *failPath) (*kmsemu.Server, *cosmian.Client) {
		s, err := kmsemu.New(kmsemu.Config{CosmianVersion: acl, Store: store})
		if err != nil {
			tb.Fatal(err)
		}
		run, err := s.Start("127.0.0.1:0", true)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { run.Close() })
		tr := &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: run.CertPool},
			MaxIdleConnsPerHost: 64,
		}
		fail.next = tr
		hc := &http.Client{Transport: fail}
		tb.Cleanup(tr.CloseIdleConnections) // runs before run.Close: no 5 s wait on unused conns
		c, err := cosmian.NewClient(cosmian.ClientConfig{BaseURL: run.URL, HTTP: hc, Timeout: 2 * time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		return s, c
	}
	e.A, e.cA = start(genA, &e.failA)
	if shared {
		store = e.A.Store()
	}
	e.B, e.cB = start(genB, &e.failB)
	return e
}

func cutoverACL(gen string) string {
	if gen == string(kmsemu.CosmianXKSService) {
		return ACLService
	}
	return ACLARN
}

func (e *env) config(mut func(*Config)) Config {
	cfg := Config{
		Source:      Backend{Name: "A", KMIP: e.cA, ACL: cutoverACL(e.aclA)},
		Target:      Backend{Name: "B", KMIP: e.cB, ACL: cutoverACL(e.aclB)},
		JournalPath: e.journal,
		Probation:   ProbationConfig{Duration: time.Hour, MinRequests: new(20), MaxP99: 200 * time.Millisecond},
		// A fixed pace no test reaches: the tests of the adaptive pace set their own.
		Pace: PaceConfig{Rate: MaxPaceRate},
	}
	if mut != nil {
		mut(&cfg)
	}
	return cfg
}

// open is a process starting: New, then Load. It returns the route the proxy is built on.
func open(cfg Config) (*Controller, Route, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, Route{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := c.Load(ctx)
	if err != nil {
		return nil, Route{}, err
	}
	return c, r, nil
}

// loaded opens a controller, builds the proxy (the env's router) on its route, and does not
// run it yet (run).
func (e *env) loaded(tb testing.TB, mut func(*Config)) *Controller {
	tb.Helper()
	c, r, err := open(e.config(mut))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if err := e.router.SetRoute(r.Epoch, r.Primary, r.Fallback); err != nil && len(e.router.routes) == 0 {
		tb.Fatal(err)
	}
	return c
}

// run runs c with the env's router until stop or the end of the test.
func (e *env) run(tb testing.TB, c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, e.router) }()
	select {
	case <-c.control.started:
	case err := <-done:
		cancel()
		tb.Fatalf("Run: %v", err)
	}
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	e.mu.Lock()
	e.stops[c] = stop
	e.mu.Unlock()
	tb.Cleanup(func() { stop() })
}

// stop ends c's Run and waits for it: the process goes away.
func (e *env) stop(c *Controller) error {
	e.mu.Lock()
	stop := e.stops[c]
	e.mu.Unlock()
	return stop()
}

// controller is a process that started and runs: open, the proxy built on the route, Run.
func (e *env) controller(tb testing.TB, mut func(*Config)) *Controller {
	tb.Helper()
	c := e.loaded(tb, mut)
	e.run(tb, c)
	return c
}

// journalRoute is the route the journal names now (the proxy is built on it at start).
func journalRoute(c *Controller) (epoch uint64, primary, fallback string) {
	h := c.book.header()
	p, f := h.Route()
	return h.Epoch, p, f
}

// switchedEnv migrates three seeded keys from A to B and waits for the switch.
func switchedEnv(t *testing.T) (*env, *Controller, context.Context) {
	t.Helper()
	e := newEnv(t, kmsemu.Cosmian526)
	seedMixed(t, e.A, 3)
	c := e.controller(t, nil)
	ctx := ctxT(t)
	must(t, c.Start(ctx, StartOptions{AutoSwitch: true}))
	mustWait(t, c, StateSwitched)
	return e, c, ctx
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func mustWait(t *testing.T, c *Controller, states ...State) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := c.Wait(ctx, states...)
	if err != nil {
		t.Fatalf("%v; last error %q; failures %+v", err, st.LastError, st.Failures)
	}
	return st
}

// seedMixed creates n XKS keys on A with varied states, masks, tags and grants.
func seedMixed(t testing.TB, s *kmsemu.Server, n int) []string {
	t.Helper()
	var ids []string
	future := time.Now().Add(48 * time.Hour)
	for i := range n {
		uid := fmt.Sprintf("key-%03d", i)
		opts := kmsemu.KeyOptions{Tags: []string{cosmian.XKSTag}}
		switch i % 10 {
		case 1:
			opts.UsageMask = cosmian.UsageEncrypt
		case 2:
			opts.UsageMask = cosmian.UsageDecrypt
		case 3:
			opts.ActivationDate = &future
		case 4:
			opts.Tags = append(opts.Tags, "team-a", "prod")
		}
		if err := s.CreateKey("admin", uid, opts); err != nil {
			t.Fatal(err)
		}
		switch i % 10 {
		case 5:
			must(t, s.RevokeKey(uid, "CessationOfOperation"))
		case 6:
			must(t, s.RevokeKey(uid, "KeyCompromise"))
		}
		switch i % 4 {
		case 0:
			must(t, s.GrantAccess("admin", uid, "arn:aws:iam::123456789012:user/Alice", "encrypt", "decrypt", "getattributes"))
		case 1:
			must(t, s.GrantAccess("admin", uid, "dynamodb.amazonaws.com", "decrypt"))
			must(t, s.GrantAccess("admin", uid, "arn:aws:iam::123456789012:role/Bob", "get"))
		case 2:
			must(t, s.GrantAccess("admin", uid, "*", "getattributes", "encrypt"))
		}
		ids = append(ids, uid)
	}
	return ids
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkCopies asserts that every id is byte-identical on B, with the same
// state, tags, mask and (at least) the same grants, and that a ciphertext
// made on A through KMIP decrypts on B.
func (e *env) checkCopies(t *testing.T, ids []string) {
	t.Helper()
	ctx := ctxT(t)
	for _, uid := range ids {
		eq, err := e.A.KeyMaterialEqual(uid, e.B)
		if err != nil || !eq {
			t.Errorf("%s: material equal=%v err=%v", uid, eq, err)
			continue
		}
		a, _ := e.A.Object(uid)
		b, _ := e.B.Object(uid)
		if a.State != b.State || a.UsageMask != b.UsageMask || !slices.Equal(a.Tags, b.Tags) || !a.ActivationDate.Equal(b.ActivationDate) {
			t.Errorf("%s: A %+v vs B %+v", uid, a, b)
		}
		accB := e.B.Access(uid)
		for u, ops := range e.A.Access(uid) {
			for _, op := range ops {
				if !slices.Contains(accB[u], op) {
					t.Errorf("%s: grant %s to %s missing on B (B has %v)", uid, op, u, accB)
				}
			}
		}
		if e.aclB == string(kmsemu.CosmianXKSService) {
			for _, op := range xksServiceOps {
				if !slices.Contains(accB[cosmian.XKSServiceUser], op) {
					t.Errorf("%s: %s grant %s missing on B", uid, cosmian.XKSServiceUser, op)
				}
			}
		}
		const both = cosmian.UsageEncrypt | cosmian.UsageDecrypt
		if a.State == cosmian.StateActive && a.UsageMask&both == both {
			res, err := e.cA.Encrypt(ctx, uid, []byte("hello world"), []byte("aad"))
			if err != nil {
				t.Errorf("%s: encrypt on A: %v", uid, err)
				continue
			}
			pt, err := e.cB.Decrypt(ctx, uid, res.Ciphertext, res.IV, res.Tag, []byte("aad"))
			if err != nil || string(pt) != "hello world" {
				t.Errorf("%s: decrypt on B: %q %v", uid, pt, err)
			}
		}
	}
}
