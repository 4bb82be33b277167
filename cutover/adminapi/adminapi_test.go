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
}

func (f *fakeController) record(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return f.err
}

func (f *fakeController) Status() cutover.Status { return f.st }
func (f *fakeController) Plan(ctx context.Context) (*cutover.Plan, error) {
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

func newServer(t *testing.T, f *fakeController) (*httptest.Server, *Client) {
	t.Helper()
	srv := httptest.NewServer(Handler(f))
	t.Cleanup(srv.Close)
	return srv, &Client{BaseURL: srv.URL, Token: "t", HTTP: &http.Client{Timeout: time.Minute}}
}

// TestRoundTrip: every client call reaches the controller with its arguments and the status
// comes back.
func TestRoundTrip(t *testing.T) {
	f := &fakeController{st: cutover.Status{State: cutover.StateSwitched, Primary: "B", Fallback: "A"}}
	_, c := newServer(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if p, err := c.Plan(ctx); err != nil || p.Source != "A" {
		t.Fatalf("plan %+v %v", p, err)
	}
	for _, call := range []func() error{
		func() error { return c.Start(ctx, cutover.StartOptions{Shadow: 30 * time.Second, AutoSwitch: true}) },
		func() error { return c.Switch(ctx) },
		func() error { return c.Rollback(ctx, "slow") },
		func() error { return c.Finalize(ctx, cutover.FinalizeOptions{RevokeSourceGrants: true}) },
	} {
		if err := call(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"plan", "start shadow=30s auto_switch=true", "switch", "rollback slow", "finalize revoke=true"}
	if strings.Join(f.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", f.calls, want)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != cutover.StateSwitched || st.Primary != "B" {
		t.Errorf("status %+v %v", st, err)
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
		{"other", errors.New("boom"), http.StatusInternalServerError, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := newServer(t, &fakeController{err: tc.err})
			err := c.Switch(ctx)
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
	RenderStatus(&out, &cutover.Status{State: cutover.StateSwitched, Source: "A", Target: "B", Primary: "B", Fallback: "A",
		Failures: []cutover.KeyFailure{{KeyID: "k1", Phase: "copy", Result: "error", Reason: "r"}}, FailuresTotal: 2})
	for _, want := range []string{"switched", "B (fallback A)", "A → B", "failed keys (2)", "k1", "and 1 more"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("render lacks %q:\n%s", want, out.String())
		}
	}
}
