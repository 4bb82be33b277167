package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/allocguard"
	"github.com/xksproxy/xksproxy/sigv4"
)

// The allocation guards of the request path (internal/allocguard): exact counts per request,
// so that a change that adds an allocation fails CI. .ci/run runs them without -race.

var (
	allocEncryptReply = []byte(`{"ciphertext":"` + b64(make([]byte, 32)) + `","ciphertextMetadata":null,"initializationVector":"` + b64(make([]byte, 12)) +
		`","authenticationTag":"` + b64(make([]byte, 16)) + `","ciphertextDataIntegrityValue":null}`)
	allocDecryptReply  = []byte(`{"plaintext":"` + b64(make([]byte, 32)) + `"}`)
	allocMetadataReply = []byte(`{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}`)
)

type allocCase struct {
	name, path  string
	body, reply []byte
}

func allocCases() []allocCase {
	dec := decBody(encReply{Ciphertext: make([]byte, 32), InitializationVector: make([]byte, 12), AuthenticationTag: make([]byte, 16)}, []byte("aad"))
	md := []byte(`{"requestMetadata":` + meta("DescribeKey") + `}`)
	return []allocCase{
		{"encrypt", keysPath + "k1/encrypt", encBody(make([]byte, 32), []byte("aad")), allocEncryptReply},
		{"decrypt", keysPath + "k1/decrypt", dec, allocDecryptReply},
		{"metadata", keysPath + "k1/metadata", md, allocMetadataReply},
	}
}

// TestHandlerAllocs: the XKS handler in process, with the backend's reply from memory: the
// proxy's own work per request (route, body, SigV4 verify, validation, re-signing, the backend
// request, normalisation, the reply, metrics), as configured for production (log level warn).
func TestHandlerAllocs(t *testing.T) {
	// The counts include the test's own per request: the canned reply (its http.Response,
	// header and body reader) and the request body's reader. GetKeyMetadata's reply is
	// checked with encoding/json (xks.normalizeMetadata): 16 more. Re-signing the backend
	// request with aws-sdk-go-v2's v4 signer (the project's rule: its signer, not our own) is
	// 42 of each: a signer of our own measured 2, see bench/README.md, round 5.
	want := map[string]int{"encrypt": 67, "decrypt": 66, "metadata": 83}
	for _, tc := range allocCases() {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg, _ := selfSignedTLS(t)
			p, err := New(Config{
				TLS:      tlsCfg,
				Prefixes: []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}},
				Backends: []BackendConfig{{Name: "a", XKSURL: "https://kms-a.invalid:9998/aws", Region: "eu-west-1", Credential: credBackend}},
				Route:    Route{Primary: "a"},
				Health:   HealthConfig{Disabled: true},
				Logger:   slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			if err != nil {
				t.Fatal(err)
			}
			p.order[0].client.Transport = cannedRT{tc.reply}
			req, _ := http.NewRequest(http.MethodPost, "https://xks.example.com"+tc.path, nil)
			if err := mustSigner(t, credOld, time.Now).Sign(context.Background(), req, tc.body); err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.ContentLength = int64(len(tc.body))
			h := p.Handler()
			rd := bytes.NewReader(tc.body)
			w := &discardRW{h: http.Header{}}
			allocguard.Exact(t, "handler "+tc.name, want[tc.name], 200, func() {
				rd.Reset(tc.body)
				req.Body = io.NopCloser(rd)
				clear(w.h)
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					t.Fatalf("status %d", w.code)
				}
			})
		})
	}
}

// TestProxyPathAllocs: the whole path over loopback TLS and HTTP/1.1, as AWS KMS and Cosmian
// see it: client → proxy (net/http server, handler, net/http transport) → a backend that
// answers from memory. The proxy's share is the process's allocations per request through the
// proxy minus those of the same client calling the backend directly.
func TestProxyPathAllocs(t *testing.T) {
	// Most of these are net/http's (server and transport), so a Go release can move them:
	// re-measure then, and say so in the commit.
	// The SDK signer's 42 are in these too (see TestHandlerAllocs).
	want := map[string]int{"encrypt": 140, "decrypt": 139, "metadata": 156}
	for _, tc := range allocCases() {
		t.Run(tc.name, func(t *testing.T) {
			backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				h := w.Header()
				h["Content-Type"] = appJSON
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(tc.reply)
			}))
			backend.StartTLS()
			t.Cleanup(backend.Close)
			pool := x509.NewCertPool()
			pool.AddCert(backend.Certificate())
			backendTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			e := &env{}
			e.start(t, []BackendConfig{{Name: "a", XKSURL: backend.URL + "/aws", Region: "eu-west-1", Credential: credBackend, TLS: backendTLS}},
				func(c *Config) {
					c.Health.Disabled = true
					c.MetricsListen = MetricsDisabled
					c.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
				}, func(p *Proxy) {
					p.order[0].transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1, as to Cosmian
				})
			h1 := func(c *tls.Config) *http.Client {
				return &http.Client{Transport: &http.Transport{TLSClientConfig: c, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
			}
			viaProxy, direct := h1(e.client.Transport.(*http.Transport).TLSClientConfig), h1(backendTLS)
			t.Cleanup(viaProxy.CloseIdleConnections)
			t.Cleanup(direct.CloseIdleConnections)
			call := func(c *http.Client, base string) func() {
				rd := bytes.NewReader(tc.body)
				return func() {
					rd.Reset(tc.body)
					req, _ := http.NewRequest(http.MethodPost, base+tc.path, rd)
					if err := e.signer.Sign(context.Background(), req, tc.body); err != nil {
						t.Fatal(err)
					}
					req.Header["Content-Type"] = appJSON
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d", resp.StatusCode)
					}
				}
			}
			// The backend ignores the signature and the prefix: the same request reaches it
			// directly. Warm both paths (connections, pools) before counting.
			proxied, straight := call(viaProxy, e.url), call(direct, backend.URL+"/aws")
			for range 50 {
				proxied()
				straight()
			}
			allocguard.SkipUnderRace(t)
			base := testing.AllocsPerRun(300, straight)
			got := testing.AllocsPerRun(300, proxied) - base
			t.Logf("process allocations per request: %v through the proxy, %v direct", got+base, base)
			allocguard.Equal(t, "proxy path "+tc.name, want[tc.name], got)
		})
	}
}
