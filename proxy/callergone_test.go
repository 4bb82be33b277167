package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// A caller that closes its request before the backend answers is counted as such, never as the
// backend's failure: probation and the backend's error metrics do not blame the backend for it.
func TestCallerGoneIsNotTheBackends(t *testing.T) {
	var mu sync.Mutex
	var results []Result
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "a"}
		c.Health.Disabled = true
		c.Migration = &hooks{onResult: func(r Result) { mu.Lock(); results = append(results, r); mu.Unlock() }}
	})
	e.ea.SetFaults(kmsemu.Faults{Latency: 150 * time.Millisecond, XKSOnly: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req := e.request(t, http.MethodPost, keysPath+"k1/encrypt", encBody([]byte("x"), nil), e.signer, styleKMS)
	if resp, err := e.client.Do(req.WithContext(ctx)); err == nil {
		resp.Body.Close()
		t.Fatal("the request was answered before the caller gave up")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 1 || !results[0].CallerGone || results[0].Backend != "a" {
		t.Fatalf("results %+v, want one with CallerGone from a", results)
	}
	body := scrape(t, e.env)
	if !strings.Contains(grep(body, "xks_backend_requests_total"), `error="CallerGone"`) {
		t.Errorf("the backend's metrics do not say the caller went away:\n%s", grep(body, "xks_backend_requests_total"))
	}
}
