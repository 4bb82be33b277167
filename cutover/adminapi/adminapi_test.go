package adminapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// fakeController records the calls and answers with err (nil: success).
type fakeController struct {
	mu    sync.Mutex
	calls []string
	err   error
	st    cutover.Status
	delay time.Duration // how long each control call takes
}

func (f *fakeController) record(s string) error {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return f.err
}

func (f *fakeController) Status() cutover.Status { return f.st }
func (f *fakeController) Plan(ctx context.Context, _ ...cutover.PlanOptions) (*cutover.Plan, error) {
	if err := f.record("plan"); err != nil {
		return nil, err
	}
	return &cutover.Plan{Source: "A", Target: "B"}, nil
}
func (f *fakeController) Start(ctx context.Context, o cutover.StartOptions) error {
	return f.record(fmt.Sprintf("start shadow=%v auto_switch=%v", o.Shadow, o.AutoSwitch))
}
func (f *fakeController) Switch(ctx context.Context) error { return f.record("switch") }
func (f *fakeController) Rollback(ctx context.Context, reason string) error {
	return f.record("rollback " + reason)
}
func (f *fakeController) Finalize(ctx context.Context, o cutover.FinalizeOptions) error {
	return f.record(fmt.Sprintf("finalize revoke=%v", o.RevokeSourceGrants))
}

func (f *fakeController) SetPaused(ctx context.Context, paused bool) error {
	return f.record(map[bool]string{true: "pause", false: "resume"}[paused])
}

func newServer(t *testing.T, f *fakeController) (*httptest.Server, *Client) {
	t.Helper()
	srv := httptest.NewServer(Handler(f))
	t.Cleanup(srv.Close)
	return srv, &Client{BaseURL: srv.URL, Token: "t", HTTP: &http.Client{Timeout: time.Minute}}
}

// TestRoundTrip: every client call reaches the controller with its arguments and the status
// comes back.
func TestRoundTrip(t *testing.T) {
	f := &fakeController{st: cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched, Primary: "B", Fallback: "A"}}}
	_, c := newServer(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p, err := c.Plan(ctx, cutover.PlanOptions{}); err != nil || p.Source != "A" {
		t.Fatalf("plan %+v %v", p, err)
	}
	for _, call := range []func() (*cutover.Status, error){
		func() (*cutover.Status, error) {
			return c.Start(ctx, cutover.StartOptions{Shadow: 30 * time.Second, AutoSwitch: true})
		},
		func() (*cutover.Status, error) { return c.Switch(ctx) },
		func() (*cutover.Status, error) { return c.Rollback(ctx, "slow") },
		func() (*cutover.Status, error) {
			return c.Finalize(ctx, cutover.FinalizeOptions{RevokeSourceGrants: true})
		},
		func() (*cutover.Status, error) { return c.Pause(ctx) },
		func() (*cutover.Status, error) { return c.Resume(ctx) },
	} {
		st, err := call()
		if err != nil {
			t.Fatal(err)
		}
		if st.State != cutover.StateSwitched {
			t.Errorf("reply status %+v, want the controller's", st)
		}
	}
	want := []string{"plan", "start shadow=30s auto_switch=true", "switch", "rollback slow", "finalize revoke=true", "pause", "resume"}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != cutover.StateSwitched || st.Primary != "B" {
		t.Errorf("status %+v %v", st, err)
	}
}

// TestControlCallOutlastsWriteTimeout: a rollback or finalize that takes longer than the admin
// listener's write timeout still gets its reply to the caller (it used to complete while the
// caller saw EOF).
func TestControlCallOutlastsWriteTimeout(t *testing.T) {
	f := &fakeController{st: cutover.Status{JournalState: cutover.JournalState{State: cutover.StateRolledBack}}, delay: 500 * time.Millisecond}
	srv := httptest.NewUnstartedServer(Handler(f))
	srv.Config.WriteTimeout = 100 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL, Token: "t", HTTP: &http.Client{Timeout: time.Minute}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, call := range map[string]func() (*cutover.Status, error){
		"rollback": func() (*cutover.Status, error) { return c.Rollback(ctx, "slow") },
		"finalize": func() (*cutover.Status, error) { return c.Finalize(ctx, cutover.FinalizeOptions{}) },
		"switch":   func() (*cutover.Status, error) { return c.Switch(ctx) },
	} {
		t.Run(name, func(t *testing.T) {
			st, err := call()
			if err != nil {
				t.Fatalf("%s that outlasts the write timeout: %v", name, err)
			}
			if st.State != cutover.StateRolledBack {
				t.Errorf("reply %+v, want the controller's status", st)
			}
		})
	}
}

// TestErrors: the controller's sentinel errors become HTTP statuses and back.
func TestErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name   string
		err    error
		status int
		is     error
	}{
		{"wrong state", fmt.Errorf("switch: %w", cutover.ErrWrongState), http.StatusConflict, cutover.ErrWrongState},
		{"running", cutover.ErrRunning, http.StatusConflict, cutover.ErrWrongState},
		{"unreachable", cutover.ErrUnreachable, http.StatusServiceUnavailable, cutover.ErrUnreachable},
		// A member that no longer drives: retried (the call goes to the new driver), never a 500.
		{"not the driver", cutover.ErrNotDriver, http.StatusServiceUnavailable, cutover.ErrNotDriver},
		{"illegal move", fmt.Errorf("switch: %w", &cutover.MoveError{From: cutover.StateServing, Event: "switch"}), http.StatusConflict, cutover.ErrIllegalMove},
		{"stopped", cutover.ErrStopped, http.StatusServiceUnavailable, cutover.ErrStopped},
		{"timed out", fmt.Errorf("switch: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, nil},
		{"other", errors.New("boom"), http.StatusInternalServerError, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := newServer(t, &fakeController{err: tc.err})
			_, err := c.Switch(ctx)
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != tc.status {
				t.Fatalf("err %v, want status %d", err, tc.status)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) false", err, tc.is)
			}
		})
	}
}

// TestBadRequests: bodies are bounded and strict; unknown paths are 404.
func TestBadRequests(t *testing.T) {
	srv, _ := newServer(t, &fakeController{})
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"bad shadow", "POST", "/v1/cutover/start", `{"shadow":"forever"}`, 400},
		{"unknown field", "POST", "/v1/cutover/start", `{"shadw":"1s"}`, 400},
		{"body on switch", "POST", "/v1/cutover/switch", `{"x":1}`, 400},
		{"too large", "POST", "/v1/cutover/rollback", `{"reason":"` + strings.Repeat("x", maxBody) + `"}`, 413},
		{"unknown path", "GET", "/v1/cutover/nope", "", 404},
		{"wrong method", "GET", "/v1/cutover/switch", "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

func TestRenderStatus(t *testing.T) {
	var out bytes.Buffer
	RenderStatus(&out, &cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched, Source: "A", Target: "B", Primary: "B", Fallback: "A"}, Failures: []cutover.KeyFailure{{KeyID: "k1", Phase: "copy", Result: "error", Reason: "r"}}, FailuresTotal: 2})
	for _, want := range []string{"switched", "B (fallback A)", "A → B", "failed keys (2)", "k1", "and 1 more"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("render lacks %q:\n%s", want, out.String())
		}
	}
}

func TestOutcome(t *testing.T) {
	passed := &cutover.ProbationStatus{Passed: true}
	for _, tc := range []struct {
		name string
		s    cutover.Status
		want string // substring; "" means still progressing
	}{
		{"copying", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateCopying}, Running: true}, ""},
		{"probation running", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched}, Running: true, Probation: &cutover.ProbationStatus{}}, ""},
		{"probation passed", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched}, Running: true, Probation: passed}, "cutover finalize"},
		{"auto-finalize pending", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched, Options: cutover.StartOptions{AutoFinalize: true}}, Running: true, Probation: passed}, ""},
		{"verified, waiting", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateVerified}}, "cutover switch"},
		{"blocked", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateCopyFailed}}, "blocked"},
		{"finalized", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateFinalized, Primary: "b"}}, "finalized: b serves alone"},
		{"rolled back", cutover.Status{JournalState: cutover.JournalState{State: cutover.StateRolledBack, Primary: "a"}}, "rolled back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Outcome(&tc.s)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("Outcome = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRate(t *testing.T) {
	var r Rate
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := func(copied int) *cutover.Status {
		return &cutover.Status{JournalState: cutover.JournalState{State: cutover.StateCopying}, Keys: cutover.KeyCounts{Total: 100, Copied: copied}}
	}
	if l := r.Line(st(10), t0); l != "" {
		t.Errorf("first sample gave %q", l)
	}
	if l := r.Line(st(30), t0.Add(2*time.Second)); l != "rate:      10.0 keys/s, about 7s left" {
		t.Errorf("rate line %q", l)
	}
	if l := r.Line(&cutover.Status{JournalState: cutover.JournalState{State: cutover.StateSwitched}}, t0.Add(3*time.Second)); l != "" {
		t.Errorf("rate outside copy: %q", l)
	}
}

func TestRenderPlan(t *testing.T) {
	p := &cutover.Plan{Source: "a", Target: "b", Counts: map[string]int{"copy": 1, "skip": 2, "conflict": 1},
		Keys: []cutover.PlanKey{{KeyID: "k1", Action: "copy"}, {KeyID: "k2", Action: "skip", Reason: "identical"},
			{KeyID: "k3", Action: "skip", Reason: "identical"}, {KeyID: "k4", Action: "conflict", Reason: "different material"}}}
	var out bytes.Buffer
	RenderPlan(&out, p, false)
	got := out.String()
	for _, want := range []string{"plan a → b: 4 keys", "copy       1", "skip       2", "conflict   1", "error      0", "needs attention (1)", "k4: different material", "--verbose"} {
		if !strings.Contains(got, want) {
			t.Errorf("plan lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "k2") {
		t.Errorf("plan lists a skipped key without --verbose:\n%s", got)
	}
	out.Reset()
	RenderPlan(&out, p, true)
	if !strings.Contains(out.String(), "k2: identical") {
		t.Errorf("verbose plan lacks k2:\n%s", out.String())
	}
}

func TestRenderFleet(t *testing.T) {
	s := &cutover.Status{JournalState: cutover.JournalState{State: cutover.StateVerified}, Fleet: &cutover.FleetStatus{Member: "r2", Driver: "r1", StoreReachable: true,
		WaitingFor: []string{"r3"},
		Members: []cutover.MemberStatus{
			{Name: "r1", AppliedEpoch: 4, Primary: "a", Live: true, Driver: true, RequestsPerSec: 12},
			{Name: "r3", AppliedEpoch: 3, Primary: "a", LeaseAge: 42 * time.Second},
		}}}
	var b strings.Builder
	RenderStatus(&b, s)
	for _, want := range []string{"driver r1", "waiting for: r3", "r1 (driver)", "EXPIRED", "cutover forget NAME"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status has no %q:\n%s", want, b.String())
		}
	}
}

// Keys kept on a backend for good are named in every status, with the backend that must keep
// running.
func TestRenderKept(t *testing.T) {
	var out bytes.Buffer
	RenderStatus(&out, &cutover.Status{JournalState: cutover.JournalState{State: cutover.StateFinalized, Source: "a", Target: "b", Primary: "b"},
		Keys: cutover.KeyCounts{Kept: 1}, Kept: []cutover.KeptKey{{ID: "locked", On: "a", Reason: "not extractable"}}})
	for _, w := range []string{"kept for good (1 key(s)", "must keep running", "1 on a", "locked on a: not extractable"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, out.String())
		}
	}
}
