package peerauth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	secretA = bytes.Repeat([]byte{0xa5, 0x3c, 0x91, 0x07}, 8)
	secretB = bytes.Repeat([]byte{0x5a, 0xc3, 0x19, 0x70}, 8)
	t0      = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
)

// clock is a settable injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustAuth(t *testing.T, secret []byte, member string, now func() time.Time) *Auth {
	t.Helper()
	a, err := New(Config{Secret: secret, Member: member, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func signed(t *testing.T, a *Auth, method, target, to string, body []byte) (*http.Request, *Call) {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer operator-token-operator-token-operator")
	c, err := a.Sign(req, to, body)
	if err != nil {
		t.Fatal(err)
	}
	return req, c
}

func TestVerify(t *testing.T) {
	body := []byte(`{"reason":"test"}`)
	tests := []struct {
		name   string
		mutate func(r *http.Request, driverClock *clock) (*http.Request, []byte)
		secret []byte // the driver's secret (default secretA)
		want   error
	}{
		{"valid", nil, nil, nil},
		{"different fleet secret", nil, secretB, ErrBadSignature},
		{"body altered", func(r *http.Request, _ *clock) (*http.Request, []byte) { return r, []byte(`{"reason":"evil"}`) }, nil, ErrBadSignature},
		{"path altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.URL.Path = "/v1/fleet/cutover/finalize"
			return r, body
		}, nil, ErrBadSignature},
		{"query added", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.URL.RawQuery = "x=1"
			return r, body
		}, nil, ErrBadSignature},
		{"method altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Method = http.MethodPut
			return r, body
		}, nil, ErrBadSignature},
		{"from altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Header.Set(HeaderFrom, "r3")
			return r, body
		}, nil, ErrBadSignature},
		{"to altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Header.Set(HeaderTo, "r9")
			return r, body
		}, nil, ErrBadSignature},
		{"time altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Header.Set(HeaderTime, "1796292001")
			return r, body
		}, nil, ErrBadSignature},
		{"nonce altered", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Header.Set(HeaderNonce, strings.Repeat("0", 32))
			return r, body
		}, nil, ErrBadSignature},
		{"signature flipped", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			s := []byte(r.Header.Get(HeaderSignature))
			s[0] ^= 1
			r.Header.Set(HeaderSignature, string(s))
			return r, body
		}, nil, ErrMalformed}, // '0'..'f' xor 1 may leave hex: either way refused
		{"signature missing", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			r.Header.Del(HeaderSignature)
			return r, body
		}, nil, ErrMalformed},
		{"no signature headers", func(r *http.Request, _ *clock) (*http.Request, []byte) {
			for _, h := range []string{HeaderFrom, HeaderTo, HeaderTime, HeaderNonce, HeaderSignature} {
				r.Header.Del(h)
			}
			return r, body
		}, nil, ErrUnsigned},
		{"driver clock 31s ahead", func(r *http.Request, c *clock) (*http.Request, []byte) {
			c.add(31 * time.Second)
			return r, body
		}, nil, ErrStale},
		{"driver clock 31s behind", func(r *http.Request, c *clock) (*http.Request, []byte) {
			c.add(-31 * time.Second)
			return r, body
		}, nil, ErrStale},
		{"driver clock 30s ahead", func(r *http.Request, c *clock) (*http.Request, []byte) {
			c.add(30 * time.Second)
			return r, body
		}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc, dc := &clock{t: t0}, &clock{t: t0}
			fwd := mustAuth(t, secretA, "r2", fc.now)
			sec := secretA
			if tc.secret != nil {
				sec = tc.secret
			}
			drv := mustAuth(t, sec, "r1", dc.now)
			req, _ := signed(t, fwd, http.MethodPost, "/v1/fleet/cutover/rollback", "r1", body)
			if req.Header.Get("Authorization") != "" {
				t.Fatal("Sign left the Authorization header on the request")
			}
			got := body
			if tc.mutate != nil {
				req, got = tc.mutate(req, dc)
			}
			p, err := drv.Verify(req, got)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tc.want == nil && p.Member != "r2":
				t.Fatalf("peer %q, want r2", p.Member)
			case tc.want != nil && err == nil:
				t.Fatal("Verify accepted the call")
			case tc.want == ErrMalformed && (errors.Is(err, ErrMalformed) || errors.Is(err, ErrBadSignature)):
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestMisdirectedAndReplayed(t *testing.T) {
	c := &clock{t: t0}
	fwd, r1, r3 := mustAuth(t, secretA, "r2", c.now), mustAuth(t, secretA, "r1", c.now), mustAuth(t, secretA, "r3", c.now)
	body := []byte(`{}`)
	req, _ := signed(t, fwd, http.MethodPost, "/v1/fleet/cutover/switch", "r1", body)
	if _, err := r3.Verify(req, body); !errors.Is(err, ErrMisdirected) {
		t.Fatalf("a call for r1 verified by r3: %v", err)
	}
	if _, err := r1.Verify(req, body); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	for _, d := range []time.Duration{0, 10 * time.Second, 20 * time.Second} {
		c.add(d)
		if _, err := r1.Verify(req, body); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay %v later: %v", d, err)
		}
	}
	c.add(11 * time.Second) // the call's time is now out of the window: refused as stale
	if _, err := r1.Verify(req, body); !errors.Is(err, ErrStale) {
		t.Fatalf("replay after the window: %v", err)
	}
}

func TestReplayCacheBound(t *testing.T) {
	c := &clock{t: t0}
	fwd := mustAuth(t, secretA, "r2", c.now)
	drv, err := New(Config{Secret: secretA, Member: "r1", MaxNonces: 3, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req, _ := signed(t, fwd, http.MethodGet, "/v1/fleet/cutover/status", "r1", nil)
		if _, err := drv.Verify(req, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	req, _ := signed(t, fwd, http.MethodGet, "/v1/fleet/cutover/status", "r1", nil)
	if _, err := drv.Verify(req, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("a fourth call inside the window with room for 3: %v", err)
	}
	// Unsigned or badly signed calls never take room: only verified nonces are remembered.
	bad := httptest.NewRequest(http.MethodGet, "/v1/fleet/cutover/status", nil)
	bad.Header = req.Header.Clone()
	bad.Header.Set(HeaderSignature, strings.Repeat("ab", 32))
	if _, err := drv.Verify(bad, nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad signature: %v", err)
	}
	c.add(31 * time.Second)
	req, _ = signed(t, fwd, http.MethodGet, "/v1/fleet/cutover/status", "r1", nil)
	if _, err := drv.Verify(req, nil); err != nil {
		t.Fatalf("once the window passed, old nonces make room: %v", err)
	}
	drv.mu.Lock()
	n := len(drv.seen)
	drv.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d nonces remembered, want 1 after the expired ones were dropped", n)
	}
}

func TestReply(t *testing.T) {
	c := &clock{t: t0}
	fwd, drv := mustAuth(t, secretA, "r2", c.now), mustAuth(t, secretA, "r1", c.now)
	other := mustAuth(t, secretB, "r1", c.now)
	imp := mustAuth(t, secretA, "r3", c.now) // a member, but not the one addressed
	body := []byte(`{}`)
	req, call := signed(t, fwd, http.MethodPost, "/v1/fleet/cutover/switch", "r1", body)
	peer, err := drv.Verify(req, body)
	if err != nil {
		t.Fatal(err)
	}
	reply := []byte(`{"state":"switched"}`)
	sig := drv.SignReply(peer, 200, "application/json", reply)
	req2, call2 := signed(t, fwd, http.MethodPost, "/v1/fleet/cutover/switch", "r1", body)
	peer2, err := drv.Verify(req2, body)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		call        *Call
		status      int
		ct          string
		body        []byte
		sig         string
		wantRefused bool
	}{
		{"genuine", call, 200, "application/json", reply, sig, false},
		{"status altered", call, 202, "application/json", reply, sig, true},
		{"content type altered", call, 200, "text/html", reply, sig, true},
		{"body altered", call, 200, "application/json", []byte(`{"state":"serving"}`), sig, true},
		{"unsigned", call, 200, "application/json", reply, "", true},
		{"signed for another call", call2, 200, "application/json", reply, sig, true},
		{"another call's reply", call, 200, "application/json", reply, drv.SignReply(peer2, 200, "application/json", reply), true},
		{"other fleet secret", call, 200, "application/json", reply, other.SignReply(peer, 200, "application/json", reply), true},
		{"another member answering", call, 200, "application/json", reply, imp.SignReply(peer, 200, "application/json", reply), true},
		{"the request's own signature", call, 200, "application/json", reply, req.Header.Get(HeaderSignature), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fwd.VerifyReply(tc.call, tc.status, tc.ct, tc.body, tc.sig)
			if tc.wantRefused != (err != nil) {
				t.Fatalf("VerifyReply: %v, want refused %v", err, tc.wantRefused)
			}
			if err != nil && !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v is not ErrBadReply", err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"short secret", Config{Secret: secretA[:31], Member: "r1"}},
		{"no member", Config{Secret: secretA}},
		{"bad member", Config{Secret: secretA, Member: "r 1"}},
		{"negative skew", Config{Secret: secretA, Member: "r1", Skew: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// New keeps its own copy: the caller may zero its buffer.
	s := append([]byte(nil), secretA...)
	a := mustAuth(t, s, "r1", nil)
	clear(s)
	if !bytes.Equal(a.secret, secretA) {
		t.Fatal("New did not copy the secret")
	}
}

func TestParseSecret(t *testing.T) {
	b32 := base64.StdEncoding.EncodeToString(secretA)
	for _, tc := range []struct {
		name, in string
		want     int // decoded length; 0: refused
	}{
		{"padded base64 of 32 bytes", b32, 32},
		{"with a newline", b32 + "\n", 32},
		{"unpadded", strings.TrimRight(base64.StdEncoding.EncodeToString(secretA), "="), 32},
		{"48 bytes", base64.StdEncoding.EncodeToString(append(secretA, secretB[:16]...)), 48},
		{"31 bytes", base64.StdEncoding.EncodeToString(secretA[:31]), 0},
		{"placeholder", "REPLACE-WITH-openssl-rand-base64-32", 0},
		{"hex is not base64 of 32 bytes", strings.Repeat("ab", 16), 0},
		{"empty", "", 0},
		{"huge", strings.Repeat("A", 4096), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ParseSecret(tc.in)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("accepted (%d bytes)", len(b))
				}
				if tc.in != "" && strings.Contains(err.Error(), tc.in) {
					t.Fatalf("error quotes the secret: %v", err)
				}
				return
			}
			if err != nil || len(b) != tc.want {
				t.Fatalf("%d bytes, %v; want %d", len(b), err, tc.want)
			}
		})
	}
}

// FuzzVerify: whatever the headers, body and target, Verify neither panics nor accepts a call
// that the fleet secret did not sign.
func FuzzVerify(f *testing.F) {
	c := &clock{t: t0}
	fwd, err := New(Config{Secret: secretA, Member: "r2", Now: c.now})
	if err != nil {
		f.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/fleet/cutover/start", nil)
	if _, err := fwd.Sign(req, "r1", []byte(`{}`)); err != nil {
		f.Fatal(err)
	}
	h := req.Header
	f.Add(h.Get(HeaderFrom), h.Get(HeaderTo), h.Get(HeaderTime), h.Get(HeaderNonce), strings.Repeat("0", 64), "/v1/fleet/cutover/start", []byte(`{}`))
	f.Add("r2", "r1", "1796292000", strings.Repeat("f", 32), "zz", "/", []byte(nil))
	f.Add("", "", "", "", "", "/x", []byte("x"))
	f.Add("r2\n", "r1", "-1", "00", strings.Repeat("g", 64), "/%zz", []byte{0})
	drv, err := New(Config{Secret: secretA, Member: "r1", Now: c.now})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, from, to, ts, nonce, sig, path string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.URL.Path = path
		r.Header.Set(HeaderFrom, from)
		r.Header.Set(HeaderTo, to)
		r.Header.Set(HeaderTime, ts)
		r.Header.Set(HeaderNonce, nonce)
		r.Header.Set(HeaderSignature, sig)
		if _, err := drv.Verify(r, body); err == nil {
			t.Fatalf("accepted an unsigned call: from %q to %q time %q nonce %q sig %q path %q", from, to, ts, nonce, sig, path)
		}
	})
}
