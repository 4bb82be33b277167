package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

type countingRT struct {
	n     atomic.Int64
	inner http.RoundTripper
}

func (c *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.inner.RoundTrip(r)
}

// FuzzHandler drives the XKS handler with arbitrary methods, paths and bodies, signed or not:
// it must never panic, must answer /ping or an XKS JSON error/success, and must never call
// the backend for an unsigned request.
func FuzzHandler(f *testing.F) {
	tlsCfg, _ := selfSignedTLS(f)
	p, err := New(Config{
		TLS:      tlsCfg,
		Prefixes: []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}, {Path: "", Region: testRegion, Credentials: []sigv4.Credential{credNew}}},
		Backends: []BackendConfig{{Name: "a", XKSURL: "https://kms-a.invalid/aws", Region: "eu-west-1", Credential: credBackend}},
		Route:    Route{Primary: "a"},
		Health:   HealthConfig{Disabled: true},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	reply := []byte(`{"ciphertext":"` + b64(make([]byte, 5)) + `","ciphertextMetadata":null,"initializationVector":"` + b64(make([]byte, 12)) +
		`","authenticationTag":"` + b64(make([]byte, 16)) + `","ciphertextDataIntegrityValue":null}`)
	rt := &countingRT{inner: cannedRT{reply}}
	p.order[0].client.Transport = rt
	signer := mustSigner(f, credOld, time.Now)

	f.Add("POST", keysPath+"k1/encrypt", encBody([]byte("hello"), nil), true)
	f.Add("POST", keysPath+"k1/decrypt", []byte(`{"requestMetadata":{}}`), true)
	f.Add("GET", "/aws/kms/xks/v1/health", []byte(nil), false)
	f.Add("POST", "/kms/xks/v1/keys/a/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`), false)
	f.Add("PUT", "/ping", []byte("x"), false)
	f.Add("POST", "/aws/kms/xks/v1/keys/../encrypt", []byte("{}"), true)
	f.Fuzz(func(t *testing.T, method, path string, body []byte, sign bool) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " ?#\x00\r\n\t%") || method == "" || strings.ContainsAny(method, " \t\r\n/()<>@,;:\\\"[]?={}") {
			return
		}
		req, err := http.NewRequestWithContext(context.Background(), method, "https://xks.example.com"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		if sign {
			if err := signer.Sign(context.Background(), req, body); err != nil {
				return
			}
		}
		req.Header.Set("Content-Type", "application/json")
		before := rt.n.Load()
		w := httptest.NewRecorder()
		p.Handler().ServeHTTP(w, req)
		if !sign && rt.n.Load() != before {
			t.Fatalf("unsigned request reached the backend: %s %s", method, path)
		}
		if path == "/ping" {
			return
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q for %s %s (%d)", ct, method, path, w.Code)
		}
		var v map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("reply is not JSON: %q", w.Body.Bytes())
		}
		if w.Code != 200 {
			if _, ok := v["errorName"].(string); !ok {
				t.Fatalf("error reply without errorName: %d %q", w.Code, w.Body.Bytes())
			}
		}
	})
}
