package proxy

import (
	"net/http"
	"sync/atomic"
	"testing"
)

func TestReady(t *testing.T) {
	var ready atomic.Bool
	e := newEnv(t, func(c *Config) { c.Migration = &hooks{ready: ready.Load} })
	get := func(method string) (int, string) {
		req, _ := http.NewRequest(method, e.url+"/ready", nil)
		st, b, _ := e.send(t, req)
		return st, string(b)
	}
	for _, tc := range []struct {
		name   string
		ready  bool
		method string
		status int
		body   string
	}{
		{"not ready yet", false, http.MethodGet, 503, "not ready\n"},
		{"head not ready", false, http.MethodHead, 503, ""},
		{"ready", true, http.MethodGet, 200, "ready\n"},
		{"post refused", true, http.MethodPost, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready.Store(tc.ready)
			if st, b := get(tc.method); st != tc.status || b != tc.body {
				t.Errorf("%s /ready: %d %q, want %d %q", tc.method, st, b, tc.status, tc.body)
			}
			// Liveness does not depend on readiness.
			req, _ := http.NewRequest(http.MethodGet, e.url+"/ping", nil)
			if st, _, _ := e.send(t, req); st != 200 {
				t.Errorf("/ping: %d while ready=%v", st, tc.ready)
			}
		})
	}
	t.Run("no hook", func(t *testing.T) {
		e := newEnv(t, nil)
		req, _ := http.NewRequest(http.MethodGet, e.url+"/ready", nil)
		if st, b, _ := e.send(t, req); st != 200 || string(b) != "ready\n" {
			t.Errorf("/ready without a hook: %d %q", st, b)
		}
	})
}
