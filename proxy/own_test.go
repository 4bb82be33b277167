package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// The proxy's own objects (the health-check keys, the migration's markers and canaries) are out
// of every XKS caller's reach: a call for one is answered KeyNotFoundException by the proxy itself
// and reaches no backend, so it is counted against none. A customer key that merely has a name
// like one is served like any other.
func TestOwnObjectsRefused(t *testing.T) {
	var mu sync.Mutex
	var results []Result
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "a"}
		c.Migration = &hooks{rules: &emuMigration{inactive: true}, // Reserved answers; no migration in progress
			onResult: func(r Result) { mu.Lock(); results = append(results, r); mu.Unlock() }}
	})
	for _, s := range []*kmsemu.Server{e.ea, e.eb} {
		for _, id := range []string{LegacyHealthTestKeyID, "xksproxy-cutover-marker", "xksproxy-storage-canary-0123"} {
			if err := s.CreateKey("admin", id, kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
				t.Fatal(err)
			}
			if err := s.GrantAccess("admin", id, aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
				t.Fatal(err)
			}
		}
	}
	hk := e.p.HealthKeyIDs()
	for _, tc := range []struct {
		name, id string
		own      bool
	}{
		{"health key of a", hk[0], true},
		{"health key of b", hk[1], true},
		{"migration's own object", "xksproxy-marker-test", true},
		{"customer key with the old health key's name", LegacyHealthTestKeyID, false},
		{"customer key with the old marker's name", "xksproxy-cutover-marker", false},
		{"customer key named like a canary", "xksproxy-storage-canary-0123", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, op := range []string{"encrypt", "metadata"} {
				body := encBody([]byte("x"), nil)
				if op == "metadata" {
					body = []byte(`{"requestMetadata":` + meta("CreateKey") + `}`)
				}
				before := xksCalls(e.ea) + xksCalls(e.eb)
				mu.Lock()
				results = results[:0]
				mu.Unlock()
				st, out := e.post(t, keysPath+tc.id+"/"+op, body)
				calls := xksCalls(e.ea) + xksCalls(e.eb) - before
				mu.Lock()
				var r Result
				if len(results) == 1 {
					r = results[0]
				}
				mu.Unlock()
				if !tc.own {
					if st != http.StatusOK {
						t.Errorf("%s %s: %d %s, want it served", op, tc.id, st, out)
					}
					continue
				}
				if st != http.StatusNotFound || !strings.Contains(string(out), string(xks.KeyNotFoundException)) {
					t.Errorf("%s %s: %d %s, want 404 KeyNotFoundException", op, tc.id, st, out)
				}
				if r.Backend != "" || r.ErrorName != xks.KeyNotFoundException {
					t.Errorf("%s %s: result %+v, want answered by the proxy (no backend)", op, tc.id, r)
				}
				// The health checker calls the backends on its own schedule: only a call made
				// for this request would be in the same instant, but allow for a probe.
				if calls > 3 {
					t.Errorf("%s %s: %d backend calls for a refused request", op, tc.id, calls)
				}
			}
		})
	}
}
