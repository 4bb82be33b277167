package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

func TestSuccess(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("ping", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/ping", nil)
		st, b, _ := e.send(t, req)
		if st != 200 || string(b) != "pong\n" {
			t.Errorf("ping: %d %q", st, b)
		}
	})
	t.Run("health", func(t *testing.T) {
		st, b := e.post(t, "/aws/kms/xks/v1/health", []byte(`{"requestMetadata":{"kmsRequestId":"r1","kmsOperation":"KmsHealthCheck"}}`))
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		var h xks.HealthResponse
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		if h.XksProxyFleetSize != 1 || h.XksProxyVendor != "xksproxy" || h.XksProxyModel != "xksproxy test" || h.EkmVendor != "Cosmian" || len(h.EkmFleetDetails) != 2 {
			t.Errorf("health %+v", h)
		}
		for i, want := range []string{"a", "b"} {
			if d := h.EkmFleetDetails[i]; d.ID != want || d.HealthStatus != xks.HealthActive || d.Model != "Cosmian KMS" {
				t.Errorf("fleet[%d] = %+v", i, d)
			}
		}
	})
	t.Run("metadata", func(t *testing.T) {
		st, b := e.post(t, keysPath+"k1/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`))
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		var m xks.MetadataResponse
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		has := func(u string) bool {
			for _, x := range m.KeyUsage {
				if x == u {
					return true
				}
			}
			return false
		}
		if m.KeySpec != "AES_256" || !has("ENCRYPT") || !has("DECRYPT") || m.KeyStatus != "ENABLED" {
			t.Errorf("metadata %+v", m)
		}
	})
	for _, style := range []signStyle{styleKMS, styleCurl} {
		t.Run("encrypt-decrypt", func(t *testing.T) {
			pt := []byte("a small data key of 32 bytes....")
			aad := []byte("project=nile")
			st, b, _ := e.send(t, e.request(t, http.MethodPost, keysPath+"k1/encrypt", encBody(pt, aad), e.signer, style))
			if st != 200 {
				t.Fatalf("%d %s", st, b)
			}
			var r encReply
			_ = json.Unmarshal(b, &r)
			if len(r.Ciphertext) != len(pt) || len(r.AuthenticationTag) != 16 || len(r.InitializationVector) != 12 || bytes.Contains(b, []byte("null")) {
				t.Errorf("encrypt reply %s", b)
			}
			st, b, _ = e.send(t, e.request(t, http.MethodPost, keysPath+"k1/decrypt", decBody(r, aad), e.signer, style))
			var d struct{ Plaintext []byte }
			_ = json.Unmarshal(b, &d)
			if st != 200 || !bytes.Equal(d.Plaintext, pt) {
				t.Errorf("decrypt: %d %s", st, b)
			}
		})
	}
	t.Run("log line", func(t *testing.T) {
		logs := e.logs.String()
		if !strings.Contains(logs, `"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"`) || !strings.Contains(logs, `"keyId":"k1"`) || !strings.Contains(logs, `"backend":"a"`) {
			t.Errorf("log lines lack fields:\n%s", logs)
		}
		if strings.Contains(logs, b64([]byte("a small data key of 32 bytes...."))) || strings.Contains(logs, credOld.Secret) || strings.Contains(logs, credBackend.Secret) {
			t.Errorf("log leaks plaintext or a secret")
		}
	})
}

func TestHTTP1(t *testing.T) {
	e := newEnv(t, nil)
	e.client.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	e.client.Transport.(*http.Transport).TLSNextProto = map[string]func(string, *tls_Conn) http.RoundTripper{}
	e.encrypt(t, "k1", []byte("hello"), nil)
}

func TestErrors(t *testing.T) {
	e := newEnv(t, nil)
	ct := e.encrypt(t, "k1", []byte("0123456789abcdef"), nil)
	tampered := ct
	tampered.AuthenticationTag = append([]byte(nil), ct.AuthenticationTag...)
	tampered.AuthenticationTag[0] ^= 1
	wrongKey := mustSigner(t, sigv4.Credential{AccessKeyID: "AKIAUNKNOWNKEY000001", Secret: credOld.Secret}, time.Now)
	wrongSecret := mustSigner(t, sigv4.Credential{AccessKeyID: credOld.AccessKeyID, Secret: credNew.Secret}, time.Now)
	past := mustSigner(t, credOld, func() time.Time { return time.Now().Add(-5*time.Minute - 10*time.Second) })
	future := mustSigner(t, credOld, func() time.Time { return time.Now().Add(5*time.Minute + 10*time.Second) })
	good := encBody([]byte("hello"), nil)
	pad := func(b []byte, n int) []byte { // pad a JSON object with spaces to exactly n bytes
		return append(append([]byte(nil), b[:len(b)-1]...), append(bytes.Repeat([]byte(" "), n-len(b)), '}')...)
	}
	encMeta := func(extra string) []byte {
		return []byte(`{"requestMetadata":` + meta("Encrypt") + `,"plaintext":"aGVsbG8=","encryptionAlgorithm":"AES_GCM"` + extra + `}`)
	}
	decWith := func(iv, tag, cm []byte) []byte {
		s := `{"requestMetadata":` + meta("Decrypt") + `,"ciphertext":"` + b64(ct.Ciphertext) + `","initializationVector":"` + b64(iv) + `","authenticationTag":"` + b64(tag) + `","encryptionAlgorithm":"AES_GCM"`
		if cm != nil {
			s += `,"ciphertextMetadata":"` + b64(cm) + `"`
		}
		return []byte(s + "}")
	}
	arn := func(n int) []byte {
		return []byte(`{"requestMetadata":{"awsPrincipalArn":"` + strings.Repeat("a", n) + `","kmsOperation":"GetKeyMetadata","kmsRequestId":"r"}}`)
	}

	cases := []struct {
		name         string
		method, path string
		body         []byte
		signer       *sigv4.Signer
		style        signStyle
		mutate       func(*http.Request)
		status       int
		errName      string
		noBackend    bool // the request must not reach a backend
	}{
		{name: "unknown prefix unsigned", path: "/nope/kms/xks/v1/health", body: good, style: styleNone, status: 404, errName: "InvalidUriPathException", noBackend: true},
		{name: "unknown prefix signed", path: "/nope/kms/xks/v1/keys/k1/encrypt", body: good, status: 404, errName: "InvalidUriPathException", noBackend: true},
		{name: "unknown path", path: keysPath + "k1/sign", body: good, style: styleNone, status: 404, errName: "InvalidUriPathException", noBackend: true},
		{name: "root", path: "/", style: styleNone, status: 404, errName: "InvalidUriPathException", noBackend: true},
		{name: "GET api", method: http.MethodGet, path: keysPath + "k1/encrypt", style: styleNone, status: 405, errName: "ValidationException", noBackend: true},
		{name: "GET health", method: http.MethodGet, path: "/aws/kms/xks/v1/health", style: styleNone, status: 405, errName: "ValidationException", noBackend: true},
		{name: "no auth", path: keysPath + "k1/encrypt", body: good, style: styleNone, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "unknown access key", path: keysPath + "k1/encrypt", body: good, signer: wrongKey, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "wrong secret", path: keysPath + "k1/encrypt", body: good, signer: wrongSecret, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "stale past", path: keysPath + "k1/encrypt", body: good, signer: past, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "stale future", path: keysPath + "k1/encrypt", body: good, signer: future, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "tampered body", path: keysPath + "k1/encrypt", body: good, mutate: func(r *http.Request) {
			b := encBody([]byte("hellp"), nil)
			r.Body, r.ContentLength = ioNopCloser(b), int64(len(b))
		}, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "tampered path", path: keysPath + "k1/encrypt", body: good, mutate: func(r *http.Request) { r.URL.Path = keysPath + "k2/encrypt" }, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "tampered signed content-type", path: keysPath + "k1/encrypt", body: good, style: styleCurl, mutate: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, status: 401, errName: "AuthenticationFailedException", noBackend: true},
		{name: "bad base64", path: keysPath + "k1/encrypt", body: encMeta(`,"additionalAuthenticatedData":"***"`), status: 400, errName: "ValidationException", noBackend: true},
		{name: "not json", path: keysPath + "k1/encrypt", body: []byte("{"), status: 400, errName: "ValidationException", noBackend: true},
		{name: "missing plaintext", path: keysPath + "k1/encrypt", body: []byte(`{"requestMetadata":` + meta("Encrypt") + `,"encryptionAlgorithm":"AES_GCM"}`), status: 400, errName: "ValidationException", noBackend: true},
		{name: "bad algorithm", path: keysPath + "k1/encrypt", body: []byte(`{"requestMetadata":` + meta("Encrypt") + `,"plaintext":"aGVsbG8=","encryptionAlgorithm":"AES_CBC"}`), status: 400, errName: "ValidationException", noBackend: true},
		{name: "key id 129", path: keysPath + strings.Repeat("k", 129) + "/encrypt", body: good, status: 400, errName: "ValidationException", noBackend: true},
		{name: "key id 128", path: keysPath + strings.Repeat("k", 128) + "/encrypt", body: good, status: 404, errName: "KeyNotFoundException"},
		{name: "key id bad char", path: keysPath + "k~1/encrypt", body: good, status: 400, errName: "ValidationException", noBackend: true},
		{name: "arn 2048", path: keysPath + "k1/metadata", body: arn(2048), status: 200},
		{name: "arn 2049", path: keysPath + "k1/metadata", body: arn(2049), status: 400, errName: "ValidationException", noBackend: true},
		{name: "iv 16", path: keysPath + "k1/decrypt", body: decWith(make([]byte, 16), ct.AuthenticationTag, nil), status: 400, errName: "InvalidCiphertextException"},
		{name: "iv 17", path: keysPath + "k1/decrypt", body: decWith(make([]byte, 17), ct.AuthenticationTag, nil), status: 400, errName: "ValidationException", noBackend: true},
		{name: "tag 15", path: keysPath + "k1/decrypt", body: decWith(ct.InitializationVector, ct.AuthenticationTag[:15], nil), status: 400, errName: "ValidationException", noBackend: true},
		{name: "cm 20", path: keysPath + "k1/decrypt", body: decWith(ct.InitializationVector, ct.AuthenticationTag, make([]byte, 20)), status: 200},
		{name: "cm 21", path: keysPath + "k1/decrypt", body: decWith(ct.InitializationVector, ct.AuthenticationTag, make([]byte, 21)), status: 400, errName: "ValidationException", noBackend: true},
		{name: "plaintext 6144", path: keysPath + "k1/encrypt", body: encBody(make([]byte, 6144), nil), status: 200},
		{name: "plaintext 6145", path: keysPath + "k1/encrypt", body: encBody(make([]byte, 6145), nil), status: 501, errName: "UnsupportedOperationException", noBackend: true},
		{name: "aad 8192", path: keysPath + "k1/encrypt", body: encBody([]byte("x"), make([]byte, 8192)), status: 200},
		{name: "aad 8193", path: keysPath + "k1/encrypt", body: encBody([]byte("x"), make([]byte, 8193)), status: 501, errName: "UnsupportedOperationException", noBackend: true},
		{name: "body at limit", path: keysPath + "k1/encrypt", body: pad(good, 64<<10), status: 200},
		{name: "body past limit", path: keysPath + "k1/encrypt", body: pad(good, 64<<10+1), status: 501, errName: "UnsupportedOperationException", noBackend: true},
		{name: "body past limit unsigned", path: keysPath + "k1/encrypt", body: pad(good, 64<<10+1), style: styleNone, status: 501, errName: "UnsupportedOperationException", noBackend: true},
		{name: "headers at limit", path: keysPath + "k1/encrypt", body: good, mutate: func(r *http.Request) { addHeaders(r, 64) }, status: 200},
		{name: "headers past limit", path: keysPath + "k1/encrypt", body: good, mutate: func(r *http.Request) { addHeaders(r, 65) }, status: 400, errName: "ValidationException", noBackend: true},
		{name: "key not found (418)", path: keysPath + "nokey/encrypt", body: good, status: 404, errName: "KeyNotFoundException"},
		{name: "invalid key usage (401)", path: keysPath + "enc-only/decrypt", body: decBody(ct, nil), status: 400, errName: "InvalidKeyUsageException"},
		{name: "invalid ciphertext (401)", path: keysPath + "k1/decrypt", body: decBody(tampered, nil), status: 400, errName: "InvalidCiphertextException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.method == "" {
				tc.method = http.MethodPost
			}
			if tc.signer == nil {
				tc.signer = e.signer
			}
			req := e.request(t, tc.method, tc.path, tc.body, tc.signer, tc.style)
			if tc.mutate != nil {
				tc.mutate(req)
			}
			before := e.fa.calls.Load() + e.fb.calls.Load()
			st, b, h := e.send(t, req)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, b)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.errName != "" {
				if got := errName(t, b); got != tc.errName {
					t.Errorf("errorName %s, want %s", got, tc.errName)
				}
			}
			if tc.status == 405 && h.Get("Allow") != "POST" {
				t.Errorf("Allow %q", h.Get("Allow"))
			}
			if after := e.fa.calls.Load() + e.fb.calls.Load(); tc.noBackend && after != before {
				t.Errorf("request reached a backend (%d calls)", after-before)
			}
		})
	}
}

func addHeaders(r *http.Request, total int) {
	// Go's client adds Host (not a header field here), User-Agent, Content-Length and
	// Accept-Encoding; the server sees r.Header without Host.
	have := len(r.Header) + 3 // User-Agent, Content-Length, Accept-Encoding
	for i := 0; have < total; i++ {
		r.Header.Add("X-Pad", "v")
		have++
	}
}

func TestBackendFaults(t *testing.T) {
	e := newEnv(t, nil)
	good := encBody([]byte("hello"), nil)
	cases := []struct {
		name    string
		set     func()
		status  int
		errName string
	}{
		{"timeout", func() { e.fa.latency.Store(int64(3 * time.Second)) }, 503, "DependencyTimeoutException"},
		{"down", func() { e.fa.down.Store(true) }, 500, "InternalException"},
		{"500", func() { e.fa.status.Store(500) }, 500, "InternalException"},
		{"503 JSON", func() { e.fa.status.Store(503) }, 500, "InternalException"}, // body names InternalException
		{"garbled", func() { e.fa.garble.Store(true) }, 500, "InternalException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.set()
			defer func() {
				e.fa.latency.Store(0)
				e.fa.down.Store(false)
				e.fa.status.Store(0)
				e.fa.garble.Store(false)
			}()
			st, b := e.post(t, keysPath+"k1/encrypt", good)
			if st != tc.status || errName(t, b) != tc.errName {
				t.Errorf("got %d %s, want %d %s", st, b, tc.status, tc.errName)
			}
		})
	}
	// The backend has recovered.
	e.encrypt(t, "k1", []byte("hello"), nil)
}

func TestBackendWrongCredential(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Backends[0].Credential = credNew; c.Health.Disabled = true })
	st, b := e.post(t, keysPath+"k1/encrypt", encBody([]byte("hello"), nil))
	if st != 500 || errName(t, b) != "InternalException" {
		t.Errorf("got %d %s", st, b)
	}
}

func TestThrottling(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits.MaxInFlight = 1; c.Health.Disabled = true })
	e.fa.latency.Store(int64(100 * time.Millisecond))
	var wg sync.WaitGroup
	wg.Add(1)
	var st1 int
	go func() {
		defer wg.Done()
		st1, _ = e.post(t, keysPath+"k1/encrypt", encBody([]byte("slow"), nil))
	}()
	for e.p.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	st, b := e.post(t, keysPath+"k1/encrypt", encBody([]byte("fast"), nil))
	wg.Wait()
	if st != 429 || errName(t, b) != "ThrottlingException" {
		t.Errorf("second request: %d %s", st, b)
	}
	if st1 != 200 {
		t.Errorf("first request: %d", st1)
	}
}

func TestFallback(t *testing.T) {
	// Timeouts scaled up so that the slow-primary case does not depend on the host's load:
	// primary 1 s, fallback 2 s, budget 4 s.
	e := newEnv(t, func(c *Config) { c.Route = Route{Epoch: 3, Primary: "a", Fallback: "b"} }, func(p *Proxy) {
		p.cfg.Limits.Budget = 4 * time.Second
		p.backends["a"].cfg.Timeout = time.Second
		p.backends["b"].cfg.Timeout = 2 * time.Second
	})
	t.Run("primary down", func(t *testing.T) {
		e.fa.down.Store(true)
		defer e.fa.down.Store(false)
		r := e.encrypt(t, "k1", []byte("hello"), nil)
		st, b := e.post(t, keysPath+"k1/decrypt", decBody(r, nil))
		if st != 200 {
			t.Errorf("decrypt on fallback: %d %s", st, b)
		}
	})
	t.Run("key only on fallback", func(t *testing.T) {
		e.fb.addKey("only-b", true, true, nil)
		e.encrypt(t, "only-b", []byte("hello"), nil)
	})
	t.Run("primary slow", func(t *testing.T) {
		e.fa.latency.Store(int64(3 * time.Second))
		defer e.fa.latency.Store(0)
		e.encrypt(t, "k1", []byte("hello"), nil)
	})
	t.Run("no fallback for client errors", func(t *testing.T) {
		r := e.encrypt(t, "k1", []byte("x"), nil)
		r.AuthenticationTag[0] ^= 1 // tampered: the fallback would refuse it the same way
		before := e.fb.calls.Load()
		st, b := e.post(t, keysPath+"k1/decrypt", decBody(r, nil))
		if st != 400 || errName(t, b) != "InvalidCiphertextException" || e.fb.calls.Load() != before {
			t.Errorf("status %d %s, fallback calls %d", st, b, e.fb.calls.Load()-before)
		}
	})
	t.Run("authorization refusal is policy", func(t *testing.T) {
		// A missing grant on the primary is returned as it is: the fallback's grants must not
		// override a refusal (without a Migration nothing says a grant is still being copied).
		before := e.fb.calls.Load()
		st, b := e.post(t, keysPath+"enc-only/decrypt", decBody(e.encrypt(t, "k1", []byte("x"), nil), nil))
		if st != 400 || errName(t, b) != "InvalidKeyUsageException" || e.fb.calls.Load() != before {
			t.Errorf("status %d %s, fallback calls %d", st, b, e.fb.calls.Load()-before)
		}
	})
	body := scrape(t, e)
	if !strings.Contains(body, `xks_fallback_total{from="a",to="b"} 4`) {
		t.Errorf("fallback metric:\n%s", grep(body, "xks_fallback"))
	}
}

func TestRouteSwapUnderLoad(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Health.Disabled = true }, relaxTimeouts)
	if err := e.p.SetRoute(Route{Epoch: 0, Primary: "b"}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("lower epoch: %v", err)
	}
	if err := e.p.SetRoute(Route{Epoch: 5, Primary: "zz"}); !errors.Is(err, ErrUnknownRoute) {
		t.Errorf("unknown backend: %v", err)
	}
	if err := e.p.SetRoute(Route{Epoch: 5, Primary: "a", Fallback: "zz"}); !errors.Is(err, ErrUnknownRoute) {
		t.Errorf("unknown fallback: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var failures, total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				st, b := e.post(t, keysPath+"k1/encrypt", encBody([]byte("payload"), nil))
				total.Add(1)
				if st != 200 {
					failures.Add(1)
					t.Logf("encrypt %d %s", st, b)
					continue
				}
				var r encReply
				_ = json.Unmarshal(b, &r)
				if st, b := e.post(t, keysPath+"k1/decrypt", decBody(r, nil)); st != 200 {
					failures.Add(1)
					t.Logf("decrypt %d %s", st, b)
				}
			}
		}()
	}
	var last uint64 = 1
	for epoch := uint64(2); ctx.Err() == nil; epoch++ {
		name := "a"
		if epoch%2 == 0 {
			name = "b"
		}
		if err := e.p.SetRoute(Route{Epoch: epoch, Primary: name}); err != nil {
			t.Fatal(err)
		}
		if got := e.p.Route().Epoch; got < last {
			t.Fatalf("epoch went back: %d < %d", got, last)
		}
		last = epoch
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	if failures.Load() != 0 || total.Load() == 0 || e.fa.calls.Load() == 0 || e.fb.calls.Load() == 0 {
		t.Errorf("failures %d of %d; calls a=%d b=%d", failures.Load(), total.Load(), e.fa.calls.Load(), e.fb.calls.Load())
	}
	if body := scrape(t, e); !strings.Contains(body, "xks_route_epoch ") {
		t.Errorf("no epoch metric")
	}
}

func TestCredentialRotation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Health.Disabled = true })
	e.client.Transport.(*http.Transport).ForceAttemptHTTP2 = false // one HTTP/1.1 keep-alive connection
	newSigner := mustSigner(t, credNew, time.Now)
	var conns, reused atomic.Int64
	send := func(s *sigv4.Signer) int {
		req := e.request(t, http.MethodPost, keysPath+"k1/encrypt", encBody([]byte("hello"), nil), s, styleKMS)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			conns.Add(1)
			if i.Reused {
				reused.Add(1)
			}
		}}))
		st, _, _ := e.send(t, req)
		return st
	}
	steps := []struct {
		creds    []sigv4.Credential
		old, new int
	}{
		{nil, 200, 401},
		{[]sigv4.Credential{credOld, credNew}, 200, 200},
		{[]sigv4.Credential{credNew}, 401, 200},
	}
	for i, s := range steps {
		if s.creds != nil {
			if err := e.p.SetCredentials("/aws", s.creds); err != nil {
				t.Fatal(err)
			}
		}
		if got := send(e.signer); got != s.old {
			t.Errorf("step %d: old credential %d, want %d", i, got, s.old)
		}
		if got := send(newSigner); got != s.new {
			t.Errorf("step %d: new credential %d, want %d", i, got, s.new)
		}
	}
	if conns.Load() != 6 || reused.Load() != 5 {
		t.Errorf("connections: %d requests, %d reused (want one connection throughout)", conns.Load(), reused.Load())
	}
	if err := e.p.SetCredentials("/nope", []sigv4.Credential{credNew}); !errors.Is(err, ErrUnknownPrefix) {
		t.Errorf("unknown prefix: %v", err)
	}
	if err := e.p.SetCredentials("/aws", nil); err == nil {
		t.Errorf("empty credential list accepted")
	}
	if body := scrape(t, e); !strings.Contains(body, `xks_sigv4_failures_total{prefix="/aws",reason="unknown_access_key"} 2`) {
		t.Errorf("sigv4 failure metric:\n%s", grep(body, "sigv4"))
	}
}

func TestHealthTransitions(t *testing.T) {
	e := newEnv(t, nil)
	status := func() (string, string) {
		h := e.p.Health()
		return h.EkmFleetDetails[0].HealthStatus, h.EkmFleetDetails[1].HealthStatus
	}
	check := func(wantA string) {
		t.Helper()
		if err := e.p.health.check(context.Background()); err != nil {
			t.Fatal(err)
		}
		if a, b := status(); a != wantA || b != xks.HealthActive {
			t.Errorf("a=%s b=%s, want a=%s b=ACTIVE\n%s", a, b, wantA, grep(e.logs.String(), "health"))
		}
	}
	check(xks.HealthActive)
	e.fa.latency.Store(int64(600 * time.Millisecond)) // 2 calls → ≥ 1.2 s > DegradedLatency
	check(xks.HealthDegraded)
	e.fa.latency.Store(0)
	check(xks.HealthActive)
	e.fa.down.Store(true)
	check(xks.HealthDegraded) // one failure after a success
	check(xks.HealthUnavailable)
	if body := scrape(t, e); !strings.Contains(body, `xks_backend_up{backend="a"} 0`) || !strings.Contains(body, `xks_backend_up{backend="b"} 1`) {
		t.Errorf("backend_up:\n%s", grep(body, "xks_backend_up"))
	}
	e.fa.down.Store(false)
	check(xks.HealthDegraded) // recovering
	check(xks.HealthActive)
}

func TestHealthCacheAge(t *testing.T) {
	e := newEnv(t, nil)
	first := e.p.HealthCheckedAt()
	body := []byte(`{"requestMetadata":{"kmsRequestId":"r1","kmsOperation":"KmsHealthCheck"}}`)
	before := e.fa.calls.Load()
	e.clock.Advance(59 * time.Second)
	if st, _ := e.post(t, "/aws/kms/xks/v1/health", body); st != 200 || e.fa.calls.Load() != before || !e.p.HealthCheckedAt().Equal(first) {
		t.Errorf("a fresh cache was not served as is")
	}
	e.clock.Advance(2 * time.Second) // 61 s: stale
	st, b := e.post(t, "/aws/kms/xks/v1/health", body)
	if st != 200 || e.fa.calls.Load() == before {
		t.Fatalf("stale cache: %d %s, backend calls %d", st, b, e.fa.calls.Load()-before)
	}
	if age := e.clock.Now().Sub(e.p.HealthCheckedAt()); age > maxHealthAge || age < 0 {
		t.Errorf("cache age %v", age)
	}
	if !strings.Contains(string(b), `"healthStatus":"ACTIVE"`) {
		t.Errorf("health %s", b)
	}
}

func TestHooksAndForward(t *testing.T) {
	var results []Result
	var mirrored, created atomic.Int64
	var mu sync.Mutex
	e := newEnv(t, func(c *Config) {
		c.Health.Disabled = true
		c.Migration = &hooks{
			onResult: func(r Result) { mu.Lock(); results = append(results, r); mu.Unlock() },
			mirror: func(r Result, req, resp []byte) {
				if r.Op == xks.OpDecrypt && bytes.Contains(resp, []byte("plaintext")) && bytes.Contains(req, []byte("ciphertext")) {
					mirrored.Add(1)
				}
			},
			onCreateKey: func(_ context.Context, ev CreateKeyEvent) {
				// No fallback, no migration: the primary alone answers it.
				if ev.KeyID == "new-key" && ev.Backend == "a" {
					created.Add(1)
				}
			},
		}
	})
	r := e.encrypt(t, "k1", []byte("hello"), nil)
	if st, _ := e.post(t, keysPath+"k1/decrypt", decBody(r, nil)); st != 200 {
		t.Fatal(st)
	}
	if st, _ := e.post(t, keysPath+"new-key/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`)); st != 200 {
		t.Fatal(st)
	}
	e.post(t, keysPath+"missing/encrypt", encBody([]byte("x"), nil))
	mu.Lock()
	if len(results) != 4 || results[3].ErrorName != xks.KeyNotFoundException || results[3].Status != 404 || results[0].Backend != "a" || results[0].KMSRequestID == "" {
		t.Errorf("results %+v", results)
	}
	mu.Unlock()
	if mirrored.Load() != 1 || created.Load() != 1 {
		t.Errorf("mirror %d, create %d", mirrored.Load(), created.Load())
	}
	st, resp, err := e.p.Forward(context.Background(), "b", xks.OpEncrypt, "k1", encBody([]byte("hello"), nil))
	if st != 200 || err != nil || !bytes.Contains(resp, []byte("ciphertext")) {
		t.Errorf("Forward: %d %s %v", st, resp, err)
	}
	st, _, err = e.p.Forward(context.Background(), "b", xks.OpEncrypt, "nokey", encBody([]byte("hello"), nil))
	if st != 404 || !errors.Is(err, xks.ErrKeyNotFound) {
		t.Errorf("Forward missing key: %d %v", st, err)
	}
}

// The migration is told each backend's own attempt time apart from the request's: the proxy's
// work around the attempt (here a CreateKey hook that takes 30 ms, and a failed primary attempt
// before a fallback) is in Latency, never in BackendLatency. InFlight counts this request.
func TestResultSeparatesTheBackendsTime(t *testing.T) {
	const hookTime = 30 * time.Millisecond
	var mu sync.Mutex
	var results []Result
	e := newEnv(t, func(c *Config) {
		c.Health.Disabled = true
		c.Route.Fallback = "b"
		c.Migration = &hooks{
			onResult:    func(r Result) { mu.Lock(); results = append(results, r); mu.Unlock() },
			onCreateKey: func(context.Context, CreateKeyEvent) { time.Sleep(hookTime) },
		}
	})
	e.fa.latency.Store(int64(20 * time.Millisecond))
	if st, _ := e.post(t, keysPath+"new-key/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`)); st != 200 {
		t.Fatal(st)
	}
	e.fa.latency.Store(0)
	e.fa.status.Store(http.StatusInternalServerError) // a falls, b answers
	e.encrypt(t, "k1", []byte("hello"), nil)
	mu.Lock()
	defer mu.Unlock()
	if len(results) != 2 {
		t.Fatalf("results %+v", results)
	}
	ck, fb := results[0], results[1]
	if ck.BackendLatency < 20*time.Millisecond || ck.Latency < ck.BackendLatency+hookTime || ck.InFlight != 1 {
		t.Errorf("CreateKey: backend %v, request %v (the hook's %v is not the backend's), in flight %d", ck.BackendLatency, ck.Latency, hookTime, ck.InFlight)
	}
	if fb.FellBackFrom != "a" || fb.Backend != "b" || fb.BackendLatency <= 0 || fb.Latency < fb.BackendLatency+fb.PrimaryLatency {
		t.Errorf("fallback: %+v: b's own attempt must exclude a's", fb)
	}
}

// During a migration a CreateKey asks whether the primary and the fallback hold the id at the
// same time: an id nobody holds costs one round trip, not two. The primary's answer waits here
// until the fallback has been asked; asked one after the other, the check would run out of its
// half of the budget and the CreateKey would be refused.
func TestCreateKeyAsksBothSidesAtOnce(t *testing.T) {
	fallbackAsked := make(chan struct{})
	rules := &askedRules{held: map[string]bool{}, release: map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}}
	close(rules.release["b"])
	e := newEnv(t, func(c *Config) {
		c.Health.Disabled = true
		c.Route = Route{Epoch: 1, Primary: "a", Fallback: "b"}
		c.Migration = &hooks{rules: rules}
	})
	go func() {
		for {
			if n, ok := rules.asked.Load("b"); ok && n.(*atomic.Int64).Load() > 0 {
				close(fallbackAsked)
				close(rules.release["a"])
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	a0, b0 := e.fa.calls.Load(), e.fb.calls.Load()
	st, body := e.post(t, keysPath+"fresh-id/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`))
	if st != 200 {
		t.Fatalf("CreateKey of an id neither side holds: %d %s", st, body)
	}
	<-fallbackAsked
	if a, b := e.fa.calls.Load()-a0, e.fb.calls.Load()-b0; a != 1 || b != 0 {
		t.Errorf("minted on a %d times, on b %d times: want the primary once", a, b)
	}
}

func TestMetricsScrape(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Route.Fallback = "b" })
	e.encrypt(t, "k1", []byte("hello"), nil)
	e.send(t, e.request(t, http.MethodPost, keysPath+"k1/encrypt", encBody([]byte("x"), nil), e.signer, styleNone))
	body := scrape(t, e)
	for _, name := range []string{
		`xks_requests_total{backend="a",error="none",operation="Encrypt",prefix="/aws"} 1`,
		`xks_requests_total{backend="proxy",error="AuthenticationFailedException",operation="Encrypt",prefix="/aws"} 1`,
		"xks_request_duration_seconds_bucket", "xks_backend_request_duration_seconds_bucket",
		"xks_in_flight_requests", `xks_sigv4_failures_total{prefix="/aws",reason="missing_authorization"} 1`,
		`xks_backend_up{backend="a"} 1`, "xks_backend_health_check_duration_seconds", "xks_route_epoch 1",
		`xks_route_info{fallback="b",primary="a"} 1`, `xks_build_info{version="xksproxy test"} 1`,
		// The runtime and process collectors share the listener.
		"\ngo_goroutines ", "\ngo_gc_duration_seconds", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("scrape lacks %s", name)
		}
	}
	if strings.Contains(body, "k1") || strings.Contains(body, "4112f4d6") || strings.Contains(body, "arn:aws") {
		t.Errorf("a key id, request id or ARN is a label")
	}
}

func TestAdmin(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef-token"
	mig := &hooks{
		admin: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/cutover/extra" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte("extra"))
		}),
		peer: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("peer " + r.Header.Get("Authorization")))
		}),
	}
	e := newEnv(t, func(c *Config) {
		c.Admin = AdminConfig{Listen: "127.0.0.1:0", Token: token}
		c.Health.Disabled = true
		c.Migration = mig
	})
	// The serving line names the ports the OS chose, not the configured ":0".
	serving := regexp.MustCompile(`"msg":"xksproxy serving","listen":"127\.0\.0\.1:[1-9]\d*","metrics":"127\.0\.0\.1:[1-9]\d*","admin":"127\.0\.0\.1:[1-9]\d*"`)
	if !serving.MatchString(e.logs.String()) {
		t.Errorf("serving line without the bound ports:\n%s", e.logs.String())
	}
	get := func(path, auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+e.p.AdminAddr().String()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	for _, tc := range []struct {
		name, path, auth string
		status           int
		contains         string
	}{
		{"no token", "/v1/route", "", 401, ""},
		{"wrong token", "/v1/route", "Bearer " + strings.Repeat("x", len(token)), 401, ""},
		{"basic", "/v1/route", "Basic " + token, 401, ""},
		{"route", "/v1/route", "Bearer " + token, 200, `"epoch": 1`},
		{"health", "/v1/health", "Bearer " + token, 200, `"ekmFleetDetails"`},
		{"extra", "/v1/cutover/extra", "Bearer " + token, 200, "extra"},
		{"extra without token", "/v1/cutover/extra", "", 401, ""},
		// Peer handlers authenticate their callers themselves; nothing else is reachable
		// through their path space without the token.
		{"peer without token", "/v1/fleet/cutover/x", "", 200, "peer "},
		{"peer with a trailing slash", "/v1/fleet/cutover/", "", 200, "peer "},
		{"double slash", "/v1/fleet/cutover//x", "", 401, ""},
		{"peer path not served", "/v1/fleet/other", "", 401, ""},
		{"dot-dot out of the peer space", "/v1/fleet/cutover/../../route", "", 401, ""},
		{"escaped slash", "/v1/fleet/cutover/..%2F..%2Froute", "", 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, b := get(tc.path, tc.auth)
			if st != tc.status || !strings.Contains(b, tc.contains) {
				t.Errorf("%d %s", st, b)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tlsCfg, _ := selfSignedTLS(t)
	base := func() Config {
		return Config{
			TLS:      tlsCfg,
			Prefixes: []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}},
			Backends: []BackendConfig{{Name: "a", XKSURL: "https://kms-a:9998/aws", Region: "eu-west-1", Credential: credBackend}},
			Route:    Route{Primary: "a"},
		}
	}
	cases := []struct {
		name   string
		mutate func(*Config)
	}{
		{"no tls", func(c *Config) { c.TLS = nil }},
		{"no prefix", func(c *Config) { c.Prefixes = nil }},
		{"bad prefix", func(c *Config) { c.Prefixes[0].Path = "aws" }},
		{"dup prefix", func(c *Config) { c.Prefixes = append(c.Prefixes, c.Prefixes[0]) }},
		{"no creds", func(c *Config) { c.Prefixes[0].Credentials = nil }},
		{"no backend", func(c *Config) { c.Backends = nil }},
		{"bad backend name", func(c *Config) { c.Backends[0].Name = "A" }},
		{"dup backend", func(c *Config) { c.Backends = append(c.Backends, c.Backends[0]) }},
		{"backend url suffix", func(c *Config) { c.Backends[0].XKSURL = "https://kms-a:9998/aws/kms/xks/v1" }},
		{"backend url scheme", func(c *Config) { c.Backends[0].XKSURL = "ftp://kms-a/aws" }},
		{"backend cred", func(c *Config) { c.Backends[0].Credential.Secret = "x" }},
		{"backend timeout", func(c *Config) { c.Backends[0].Timeout = time.Second }},
		{"route unknown", func(c *Config) { c.Route.Primary = "z" }},
		{"route fallback same", func(c *Config) { c.Route.Fallback = "a" }},
		{"no route", func(c *Config) { c.Route.Primary = "" }},
		{"budget", func(c *Config) { c.Limits.Budget = time.Second }},
		{"health interval", func(c *Config) { c.Health.Interval = time.Minute }},
		{"admin remote", func(c *Config) { c.Admin = AdminConfig{Listen: "0.0.0.0:0", Token: strings.Repeat("t", 32)} }},
		{"admin no token", func(c *Config) { c.Admin = AdminConfig{Listen: "127.0.0.1:0"} }},
		{"admin short token", func(c *Config) { c.Admin = AdminConfig{Listen: "127.0.0.1:0", Token: "short"} }},
		{"payload below spec", func(c *Config) { c.Limits.XKS.MaxPayload = 100 }},
		{"read timeout of hours", func(c *Config) { c.Limits.ReadTimeout = 1000 * time.Hour }},
		{"idle timeout of days", func(c *Config) { c.Limits.IdleTimeout = 48 * time.Hour }},
		{"body timeout over 10s", func(c *Config) { c.Limits.BodyTimeout = time.Minute }},
		{"slow-body grace over the body timeout", func(c *Config) { c.Limits.BodyTimeout, c.Limits.SlowBodyAfter = time.Second, 2*time.Second }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			if _, err := New(c); !errors.Is(err, ErrConfig) {
				t.Errorf("got %v", err)
			}
		})
	}
	c := base()
	c.Admin = AdminConfig{Listen: "0.0.0.0:0", Token: strings.Repeat("t", 32), AllowRemote: true}
	if _, err := New(c); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "clear text") {
		t.Errorf("AllowRemote without TLS: %v", err)
	}
	c = base()
	c.Admin = AdminConfig{Listen: "0.0.0.0:0", Token: strings.Repeat("t", 32), AllowRemote: true, TLS: c.TLS}
	if _, err := New(c); err != nil {
		t.Errorf("AllowRemote with TLS: %v", err)
	}
}

func scrape(t testing.TB, e *env) string {
	t.Helper()
	resp, err := http.Get("http://" + e.p.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestALPNOrder(t *testing.T) {
	for _, prefer := range []bool{false, true} {
		e := newEnv(t, func(c *Config) { c.PreferHTTP1 = prefer })
		for _, tc := range []struct {
			offer []string
			want  string
		}{
			{[]string{"h2", "http/1.1"}, map[bool]string{false: "h2", true: "http/1.1"}[prefer]},
			{[]string{"http/1.1", "h2"}, map[bool]string{false: "h2", true: "http/1.1"}[prefer]},
			{[]string{"h2"}, "h2"},
			{[]string{"http/1.1"}, "http/1.1"},
		} {
			t.Run(fmt.Sprintf("prefer=%v/offer=%v", prefer, tc.offer), func(t *testing.T) {
				cfg := e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
				cfg.NextProtos = tc.offer
				c, err := tls.Dial("tcp", e.p.Addr().String(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
					t.Fatalf("negotiated %q, want %q", got, tc.want)
				}
			})
		}
	}
}

// TestTLSPolicyOnHandedConfig: a bare configuration (as a certificate source hands it over: a
// certificate and nothing else) is served with the proxy's policy: TLS 1.2 at least, the AEAD
// suites, h2 and HTTP/1.1.
func TestTLSPolicyOnHandedConfig(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		bare := &tls.Config{GetCertificate: c.TLS.GetCertificate}
		c.TLS = bare
	})
	base := e.client.Transport.(*http.Transport).TLSClientConfig
	for _, tc := range []struct {
		name string
		mod  func(*tls.Config)
		ok   bool
	}{
		{"TLS 1.1 refused", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, false},
		{"TLS 1.2 CBC suite refused", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}, false},
		{"TLS 1.2 AES-256-GCM", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
		}, true},
		{"TLS 1.3 with h2", func(c *tls.Config) { c.NextProtos = []string{"h2"} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base.Clone()
			tc.mod(cfg)
			c, err := tls.Dial("tcp", e.p.Addr().String(), cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil {
				if len(cfg.NextProtos) > 0 && c.ConnectionState().NegotiatedProtocol != cfg.NextProtos[0] {
					t.Errorf("negotiated %q", c.ConnectionState().NegotiatedProtocol)
				}
				c.Close()
			}
		})
	}
}

// TestShutdownLines: Run says when it starts shutting down, why, and when it has stopped.
func TestShutdownLines(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Health.Disabled = true })
	cfg := e.p.cfg
	logs := newSyncBuffer()
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	cfg.Registry = prometheus.NewRegistry()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", MetricsDisabled
	cfg.Limits.Budget = 0 // the env raised it past the 250ms bound after New
	cfg.Backends = slices.Clone(cfg.Backends)
	for i := range cfg.Backends {
		cfg.Backends[i].Timeout = 0
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	out := logs.String()
	for _, want := range []string{`"msg":"xksproxy serving"`, `"metrics":"off"`, `"msg":"xksproxy shutting down","reason":"context canceled"`, `"msg":"xksproxy stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}
