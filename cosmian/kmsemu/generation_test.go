package kmsemu

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSigV4Generations: 5.26 answers some SigV4 failures in plain text; the newer generation
// answers every one as a JSON AuthenticationFailedException and checks the replay window first.
func TestSigV4Generations(t *testing.T) {
	body := []byte(`{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}`)
	const health = "/aws/kms/xks/v1/health"
	type want struct {
		json bool   // JSON AuthenticationFailedException (else plain-text 401)
		msg  string // part of the message
	}
	cases := []struct {
		name  string
		req   func(e *env) *http.Request
		w526  want
		wNext want
	}{
		{"clock skew", func(e *env) *http.Request {
			return e.xksRequest(health, body, signAWSKMS, time.Now().Add(-6*time.Minute))
		}, want{true, "Signature v4 verification failed"}, want{true, "Signature v4 request timestamp exceeds the 5-minute XKS replay window"}},
		{"tampered body", func(e *env) *http.Request {
			req := e.xksRequest(health, body, signAWSKMS, time.Now())
			req.Body, req.ContentLength = http.NoBody, 0
			return req
		}, want{true, "Signature v4 verification failed"}, want{true, "Signature v4 verification failed"}},
		{"unknown access key", func(e *env) *http.Request {
			req := e.xksRequest(health, body, signAWSKMS, time.Now())
			req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), testAKID, "AKIAOTHERKEY00000000", 1))
			return req
		}, want{true, "Access key id AKIAOTHERKEY00000000 not found"}, want{true, "Signature v4 verification failed: Access key id AKIAOTHERKEY00000000 not found"}},
		{"malformed authorization", func(e *env) *http.Request {
			req := e.xksRequest(health, body, signAWSKMS, time.Now())
			req.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
			return req
		}, want{false, "AWS4-HMAC-SHA256"}, want{true, "Signature v4 verification failed"}},
		{"no date", func(e *env) *http.Request {
			req := e.xksRequest(health, body, signAWSKMS, time.Now())
			req.Header.Del("X-Amz-Date")
			return req
		}, want{false, ""}, want{true, "Missing SigV4 request timestamp"}},
	}
	for _, g := range Generations {
		e := authEnv(t, g)
		for _, tc := range cases {
			t.Run(string(g)+"/"+tc.name, func(t *testing.T) {
				w := tc.wNext
				if g == Cosmian526 {
					w = tc.w526
				}
				r := e.send(tc.req(e))
				if !w.json {
					if r.status != 401 || r.ctype == "application/json" || !strings.Contains(string(r.body), w.msg) {
						t.Fatalf("want plain-text 401 with %q, got %d %q %s", w.msg, r.status, r.ctype, r.body)
					}
					return
				}
				wantXKSError(t, r, 401, "AuthenticationFailedException", w.msg)
			})
		}
	}
}

// TestCreateKeyOverNonXKSKey: the newer generation refuses to grant XKS access on an existing
// key without the aws-xks tag; 5.26 answers with the metadata and grants nothing.
func TestCreateKeyOverNonXKSKey(t *testing.T) {
	for _, g := range Generations {
		t.Run(string(g), func(t *testing.T) {
			e := authEnv(t, g)
			if err := e.s.CreateKey("admin", "plain", KeyOptions{Tags: []string{"not-xks"}}); err != nil {
				t.Fatal(err)
			}
			m := meta("CreateKey")
			delete(m, "kmsKeyArn")
			r := e.xks(keysPath+"plain/metadata", map[string]any{"requestMetadata": m})
			if g == Cosmian526 {
				if r.status != 200 || len(e.s.Access("plain")) != 0 {
					t.Fatalf("5.26: %d %s, grants %v", r.status, r.body, e.s.Access("plain"))
				}
				return
			}
			wantXKSError(t, r, 500, "InternalException", "Key plain already exists and is not an AWS XKS key; refusing to grant XKS access")
			if got := e.s.Access("plain"); len(got) != 0 {
				t.Fatalf("grants %v", got)
			}
		})
	}
}

// TestSharedStore: two nodes over one store see the same objects and grants, and a node of the
// newer generation starting over a store runs the start-up migration.
func TestSharedStore(t *testing.T) {
	a := authEnv(t, Cosmian526)
	if err := a.s.CreateKey("admin", "k1", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	cfg := a.s.cfg
	cfg.CosmianVersion = CosmianXKSService
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Store() != a.s.Store() {
		t.Fatal("not one store")
	}
	if got := a.s.Access("k1")[XKSServiceUser]; strings.Join(got, ",") != "decrypt,encrypt,getattributes" {
		t.Fatalf("start-up migration on the shared store: %v", got)
	}
	node, err := b.Node()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.RevokeKey("k1", "Unspecified"); err != nil {
		t.Fatal(err)
	}
	if info, _ := a.s.Object("k1"); info.State != stateDeactivated {
		t.Fatalf("revocation through one node not seen through the other: %s", info.State)
	}
	if eq, err := a.s.KeyMaterialEqual("k1", node); err != nil || !eq {
		t.Fatalf("material %v %v", eq, err)
	}
}
