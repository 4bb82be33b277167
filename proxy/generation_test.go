package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
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
