package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/certs"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

var (
	credOld     = sigv4.Credential{AccessKeyID: "AKIAXKSPROXYTESTKEY1", Secret: "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQtb2xk"}
	credNew     = sigv4.Credential{AccessKeyID: "AKIAXKSPROXYTESTKEY2", Secret: "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQtbmV3"}
	credBackend = sigv4.Credential{AccessKeyID: "AKIACOSMIANBACKEND01", Secret: "YmFja2VuZC1zZWNyZXQtYmFja2VuZC1zZWNyZXQtYmFja2Vu"}
	sharedKey   = bytes.Repeat([]byte{7}, 32)
)

const testRegion = "us-east-1"

// clock is an adjustable injected clock: real time plus an offset.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

type env struct {
	p      *Proxy
	fa, fb *fakeKMS
	url    string
	client *http.Client
	signer *sigv4.Signer
	clock  *clock
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chan struct{}, 1)} }
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

func startFake(t testing.TB, f *fakeKMS) (*httptest.Server, *tls.Config) {
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// newEnv runs a proxy over real TLS on 127.0.0.1:0 in front of two fake Cosmian backends.
func newEnv(t testing.TB, mutate func(*Config), post ...func(*Proxy)) *env {
	t.Helper()
	e := &env{fa: newFakeKMS(credBackend), fb: newFakeKMS(credBackend), clock: &clock{}, logs: newSyncBuffer()}
	for _, f := range []*fakeKMS{e.fa, e.fb} {
		f.addKey("k1", true, true, sharedKey)
		f.addKey("enc-only", true, false, nil)
	}
	sa, ta := startFake(t, e.fa)
	sb, tb := startFake(t, e.fb)
	backends := []BackendConfig{
		{Name: "a", XKSURL: sa.URL + "/aws", Region: "eu-west-1", Credential: credBackend, TLS: ta, Timeout: 240 * time.Millisecond},
		{Name: "b", XKSURL: sb.URL + "/aws", Region: "eu-west-1", Credential: credBackend, TLS: tb, Timeout: 240 * time.Millisecond},
	}
	e.start(t, backends, mutate, post...)
	return e
}

// start runs a proxy over real TLS on 127.0.0.1:0 in front of backends.
func (e *env) start(t testing.TB, backends []BackendConfig, mutate func(*Config), post ...func(*Proxy)) {
	t.Helper()
	if e.clock == nil {
		e.clock = &clock{}
	}
	if e.logs == nil {
		e.logs = newSyncBuffer()
	}
	serverTLS, cert := selfSignedTLS(t, "localhost", "127.0.0.1")
	cfg := Config{
		Listen:        "127.0.0.1:0",
		MetricsListen: "127.0.0.1:0",
		TLS:           serverTLS,
		Prefixes:      []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}},
		Backends:      backends,
		Route:         Route{Epoch: 1, Primary: "a"},
		Version:       "xksproxy test",
		Logger:        slog.New(slog.NewJSONHandler(e.logs, nil)),
		Now:           e.clock.Now,
	}
	// Health statuses must not depend on the host's load: "slow" is a full second here.
	cfg.Health.DegradedLatency = time.Second
	cfg.Health.ProbeTimeout = 5 * time.Second
	cfg.Limits.XKS = xks.Limits{MaxBody: 64 << 10}
	cfg.Limits.MaxBodyBytes = 64 << 10
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	// Tests run with -race on a shared, loaded host: a 240 ms timeout there fails requests
	// that are not meant to fail. Tests that need a timeout inject seconds of latency.
	p.cfg.Limits.Budget = 4 * time.Second
	for _, b := range p.order {
		b.cfg.Timeout = 2 * time.Second
	}
	for _, f := range post {
		f(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	if !cfg.Health.Disabled {
		// Wait for the first deep health check so that later call counts are stable.
		for i := 0; p.HealthCheckedAt().IsZero(); i++ {
			if i > 500 {
				t.Fatal("no health check")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	e.url = "https://" + p.Addr().String()
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}
	t.Cleanup(e.client.CloseIdleConnections)
	e.signer = mustSigner(t, credOld, time.Now)
}

func mustSigner(t testing.TB, c sigv4.Credential, now func() time.Time) *sigv4.Signer {
	s, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: c, Region: testRegion, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type signStyle int

const (
	styleKMS  signStyle = iota // host;x-amz-date, Content-Type added after signing (as AWS KMS)
	styleCurl                  // content-type;host;x-amz-date (curl --aws-sigv4)
	styleNone                  // unsigned
)

// request builds a request for path with body, signed by s in the given style.
func (e *env) request(t testing.TB, method, path string, body []byte, s *sigv4.Signer, style signStyle) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if style == styleCurl {
		req.Header.Set("Content-Type", "application/json")
	}
	if style != styleNone {
		if err := s.Sign(context.Background(), req, body); err != nil {
			t.Fatal(err)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

func (e *env) send(t testing.TB, req *http.Request) (int, []byte, http.Header) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

func (e *env) post(t testing.TB, path string, body []byte) (int, []byte) {
	st, b, _ := e.send(t, e.request(t, http.MethodPost, path, body, e.signer, styleKMS))
	return st, b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func meta(op string) string {
	return `{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/abc","kmsOperation":"` + op + `","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"}`
}

func encBody(pt, aad []byte) []byte {
	s := `{"requestMetadata":` + meta("Encrypt") + `,"plaintext":"` + b64(pt) + `","encryptionAlgorithm":"AES_GCM"`
	if aad != nil {
		s += `,"additionalAuthenticatedData":"` + b64(aad) + `"`
	}
	return []byte(s + "}")
}

type encReply struct {
	Ciphertext, InitializationVector, AuthenticationTag []byte
	CiphertextMetadata                                  []byte
}

func decBody(r encReply, aad []byte) []byte {
	s := `{"requestMetadata":` + meta("Decrypt") + `,"ciphertext":"` + b64(r.Ciphertext) + `","initializationVector":"` + b64(r.InitializationVector) +
		`","authenticationTag":"` + b64(r.AuthenticationTag) + `","encryptionAlgorithm":"AES_GCM"`
	if aad != nil {
		s += `,"additionalAuthenticatedData":"` + b64(aad) + `"`
	}
	return []byte(s + "}")
}

func errName(t testing.TB, body []byte) string {
	t.Helper()
	var v struct {
		ErrorName *string `json:"errorName"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.ErrorName == nil {
		t.Fatalf("not an XKS error body: %q", body)
	}
	return *v.ErrorName
}

const keysPath = "/aws/kms/xks/v1/keys/"

// encryptAtOnce sends n Encrypts for key at the same time and returns their statuses.
func (e *env) encryptAtOnce(t testing.TB, n int, key string) []int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { statuses[i], _ = e.post(t, keysPath+key+"/encrypt", encBody([]byte("pt"), nil)) })
	}
	wg.Wait()
	return statuses
}

func (e *env) encrypt(t testing.TB, key string, pt, aad []byte) encReply {
	t.Helper()
	st, b := e.post(t, keysPath+key+"/encrypt", encBody(pt, aad))
	if st != 200 {
		t.Fatalf("encrypt: %d %s", st, b)
	}
	var r encReply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("null in reply: %s", b)
	}
	return r
}

type tls_Conn = tls.Conn

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// relaxTimeouts lifts the budget and backend timeouts beyond what Config allows, for tests that
// check correctness under concurrency on a loaded host, not latency.
func relaxTimeouts(p *Proxy) {
	p.cfg.Limits.Budget = 20 * time.Second
	for _, b := range p.order {
		b.cfg.Timeout = 10 * time.Second
	}
}

// selfSignedTLS is a development certificate from the certs package (the source serve --dev
// and self-signed mode use), as the proxy is handed it.
func selfSignedTLS(tb testing.TB, hosts ...string) (*tls.Config, *x509.Certificate) {
	tb.Helper()
	src, err := certs.SelfSigned(hosts...)
	if err != nil {
		tb.Fatal(err)
	}
	return src.TLSConfig(), src.Certificate()
}
