package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/sigv4"
)

// TestBackendAuthFailureBothGenerations: whatever form a backend's SigV4 refusal takes (5.26's
// plain text for a malformed Authorization, the newer generation's JSON), AWS gets the same
// InternalException naming a backend authentication failure.
func TestBackendAuthFailureBothGenerations(t *testing.T) {
	for _, g := range kmsemu.Generations {
		for _, tc := range []struct {
			name       string
			cred       sigv4.Credential
			mangleAuth bool // a middlebox breaks the Authorization header: 5.26 answers in plain text
		}{
			{"wrong secret", sigv4.Credential{AccessKeyID: credBackend.AccessKeyID, Secret: "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy1zZWNy"}, false},
			{"unparsable authorization", credBackend, true},
		} {
			t.Run(string(g)+"/"+tc.name, func(t *testing.T) {
				s, err := kmsemu.New(kmsemu.Config{
					XKS:            &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: credBackend.AccessKeyID, SecretAccessKey: credBackend.Secret},
					CosmianVersion: g,
				})
				if err != nil {
					t.Fatal(err)
				}
				front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if tc.mangleAuth {
						r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=broken")
					}
					s.ServeHTTP(w, r)
				}))
				front.StartTLS()
				t.Cleanup(front.Close)
				pool := x509.NewCertPool()
				pool.AddCert(front.Certificate())
				e := &env{}
				e.start(t, []BackendConfig{{
					Name: "a", XKSURL: front.URL + "/aws", Region: "eu-west-1", Credential: tc.cred,
					TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond,
				}}, nil)
				st, b := e.post(t, keysPath+"k1/encrypt", encBody([]byte("hello"), nil))
				want := `{"errorName":"InternalException","errorMessage":"key manager refused the proxy's request with AuthenticationFailedException (HTTP 401); check the proxy's backend configuration"}`
				if st != 500 || string(b) != want {
					t.Fatalf("got %d %s\nwant 500 %s", st, b, want)
				}
			})
		}
	}
}

// TestCreateKeyRefusalNotRetried: during a migration to a newer-generation B, a CreateKey for an
// id B holds as a non-XKS key is refused by B; the proxy returns the refusal, reports it, and
// never retries it on A (which would mint a second key under that id).
func TestCreateKeyRefusalNotRetried(t *testing.T) {
	servers := map[string]*kmsemu.Server{}
	var backends []BackendConfig
	for _, b := range []struct {
		name string
		gen  kmsemu.Generation
	}{{"a", kmsemu.Cosmian526}, {"b", kmsemu.CosmianXKSService}} {
		s, err := kmsemu.New(kmsemu.Config{
			XKS:            &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: credBackend.AccessKeyID, SecretAccessKey: credBackend.Secret},
			CosmianVersion: b.gen,
		})
		if err != nil {
			t.Fatal(err)
		}
		run, err := s.Start("127.0.0.1:0", true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = run.Close() })
		servers[b.name] = s
		backends = append(backends, BackendConfig{Name: b.name, XKSURL: run.URL + "/aws", Region: "eu-west-1", Credential: credBackend,
			TLS: &tls.Config{RootCAs: run.CertPool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond})
	}
	if err := servers["b"].CreateKey("admin", "clash", kmsemu.KeyOptions{Tags: []string{"not-xks"}}); err != nil {
		t.Fatal(err)
	}
	type refusal struct{ key, backend, msg string }
	got := make(chan refusal, 4)
	e := &env{}
	e.start(t, backends, func(c *Config) {
		c.Route = Route{Primary: "b", Fallback: "a"}
		c.Migration = &hooks{onCreateKeyRefused: func(k, b, m string) { got <- refusal{k, b, m} }}
	})
	st, b := e.post(t, keysPath+"clash/metadata", []byte(`{"requestMetadata":`+meta("CreateKey")+`}`))
	if st != 500 || errName(t, b) != "InternalException" {
		t.Fatalf("%d %s", st, b)
	}
	if _, ok := servers["a"].Object("clash"); ok {
		t.Fatal("CreateKey was retried on A: a second key now exists under the id")
	}
	select {
	case r := <-got:
		if r.key != "clash" || r.backend != "b" || !strings.Contains(r.msg, "is not an AWS XKS key") {
			t.Fatalf("hook got %+v", r)
		}
	default:
		t.Fatal("OnCreateKeyRefused not called")
	}
}
