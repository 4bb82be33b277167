package proxy

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// keptRules are the rules of a migration that keeps "only-a" on backend a for good.
type keptRules struct{}

func (keptRules) Active() bool                                        { return true }
func (keptRules) GrantsPending(string, string) bool                   { return false }
func (keptRules) MayLack(string, string) bool                         { return true }
func (keptRules) Holds(context.Context, string, string) (bool, error) { return true, nil }
func (keptRules) MintOn() string                                      { return "" }
func (keptRules) Reserved(string) bool                                { return false }
func (keptRules) KeptOn(id string) string {
	if id == "only-a" {
		return "a"
	}
	return ""
}

// A key kept on one backend for good (it cannot be exported) is routed there alone, whatever
// the route says: no call reaches the primary for it, and every other key follows the route.
func TestKeptKeyRoutedAlone(t *testing.T) {
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "b", Fallback: "a"}
		c.Health.Disabled = true
		c.Migration = &hooks{rules: keptRules{}}
	})
	if err := e.ea.CreateKey("admin", "only-a", kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.ea.GrantAccess("admin", "only-a", aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"encrypt", "metadata"} {
		body := encBody([]byte("x"), nil)
		if op == "metadata" {
			body = []byte(`{"requestMetadata":` + meta("CreateKey") + `}`)
		}
		b0 := xksCalls(e.eb)
		if st, out := e.post(t, keysPath+"only-a/"+op, body); st != http.StatusOK {
			t.Fatalf("%s of the kept key: %d %s", op, st, out)
		}
		if n := xksCalls(e.eb) - b0; n != 0 {
			t.Errorf("%s of the kept key made %d calls to the primary b", op, n)
		}
	}
	b0 := xksCalls(e.eb)
	if st, out := e.post(t, keysPath+"k1/encrypt", encBody([]byte("x"), nil)); st != http.StatusOK {
		t.Fatalf("another key: %d %s", st, out)
	}
	if xksCalls(e.eb) == b0 {
		t.Error("another key did not follow the route to b")
	}
}

// crossRules run the CDIV trial of every Encrypt a serves on b.
type crossRules struct{ keptRules }

func (crossRules) KeptOn(string) string { return "" }
func (crossRules) TrialOn(_, servedBy string) string {
	if servedBy == "a" {
		return "b"
	}
	return ""
}

// During a migration an Encrypt's CDIV trial decrypt runs on the other backend, so live traffic
// proves it decrypts what the serving one encrypts; when it cannot, that is counted and the
// serving backend's own trial decides: the caller never sees the other side's failure.
func TestCDIVTrialOnTheOtherBackend(t *testing.T) {
	var mu sync.Mutex
	checked := map[bool]int{}
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "a"}
		c.Health.Disabled = true
		c.Migration = &hooks{rules: crossRules{}, crossChecked: func(b string, ok bool) {
			mu.Lock()
			checked[ok]++
			mu.Unlock()
		}}
	})
	// "split" is a different key on each side: b cannot decrypt what a encrypts.
	for _, s := range []*kmsemu.Server{e.ea, e.eb} {
		if err := s.CreateKey("admin", "split", kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.GrantAccess("admin", "split", aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id             string
		ok             bool
		callsA, callsB int64
	}{
		{"k1", true, 1, 1},     // encrypt on a, trial on b
		{"split", false, 2, 1}, // encrypt on a, trial on b fails, trial on a decides
	} {
		a0, b0 := xksCalls(e.ea), xksCalls(e.eb)
		if st, out := e.post(t, keysPath+tc.id+"/encrypt", cdivBody([]byte("data"), nil)); st != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.id, st, out)
		}
		if a, b := xksCalls(e.ea)-a0, xksCalls(e.eb)-b0; a != tc.callsA || b != tc.callsB {
			t.Errorf("%s: %d calls on a, %d on b; want %d and %d", tc.id, a, b, tc.callsA, tc.callsB)
		}
		mu.Lock()
		if checked[tc.ok] != 1 {
			t.Errorf("%s: cross checks %v, want one %v", tc.id, checked, tc.ok)
		}
		clear(checked)
		mu.Unlock()
	}
}
