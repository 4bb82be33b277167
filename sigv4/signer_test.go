package sigv4

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

func TestNewSignerConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SignerConfig
		ok   bool
	}{
		{"ok", SignerConfig{Credential: credA, Region: "us-east-1"}, true},
		{"no region", SignerConfig{Credential: credA}, false},
		{"bad credential", SignerConfig{Credential: Credential{AccessKeyID: credA.AccessKeyID, Secret: "short"}, Region: "us-east-1"}, false},
		{"bad service", SignerConfig{Credential: credA, Region: "us-east-1", Service: "KMS XKS"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSigner(tc.cfg)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), tc.cfg.Credential.Secret) {
					t.Fatalf("bad error %v", err)
				}
				return
			}
			if s.service != DefaultService {
				t.Fatalf("service default %q", s.service)
			}
		})
	}
}

// TestSignHeaderSet: only host, x-amz-date and content-type are signed whatever else r carries,
// the result equals an independent implementation, and it verifies.
func TestSignHeaderSet(t *testing.T) {
	s, err := NewSigner(SignerConfig{Credential: credA, Region: "us-east-1", Now: fixedClock(testTime)})
	if err != nil {
		t.Fatal(err)
	}
	v := newTestVerifier(t, fixedClock(testTime), credA)
	body := []byte(xksBody)
	for _, tc := range []struct {
		name, url, contentType, wantSigned, wantHost string
	}{
		{"json", "https://kms.internal:9998/kms/xks/v1/health", "application/json", "content-type;host;x-amz-date", "kms.internal:9998"},
		{"no content type", "https://kms.internal:9998/kms/xks/v1/health", "", "host;x-amz-date", "kms.internal:9998"},
		{"default port dropped", "https://kms.internal:443/kms/xks/v1/keys/k/decrypt", "application/json", "content-type;host;x-amz-date", "kms.internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequestWithContext(context.Background(), http.MethodPost, tc.url, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			r.Header.Set("User-Agent", "xksproxy")
			r.Header.Set("X-Request-Id", "abc")
			r.Header.Set("Authorization", "stale")
			if err := s.Sign(context.Background(), r, body); err != nil {
				t.Fatal(err)
			}
			a, err := ParseAuthorization(r.Header.Get("Authorization"))
			if err != nil {
				t.Fatal(err)
			}
			if a.SignedHeaders != tc.wantSigned || r.Host != tc.wantHost {
				t.Fatalf("signed %q host %q", a.SignedHeaders, r.Host)
			}
			if a.Scope != "20260314/us-east-1/kms-xks-proxy/aws4_request" || r.Header.Get("X-Amz-Date") != "20260314T150926Z" {
				t.Fatalf("scope %q date %q", a.Scope, r.Header.Get("X-Amz-Date"))
			}
			ref := r.Clone(context.Background())
			var names []string
			if tc.contentType != "" {
				names = append(names, "content-type")
			}
			refSign(ref, body, credA, "us-east-1", "kms-xks-proxy", testTime, names...)
			if ref.Header.Get("Authorization") != r.Header.Get("Authorization") {
				t.Fatalf("SDK and reference differ:\n%s\n%s", r.Header.Get("Authorization"), ref.Header.Get("Authorization"))
			}
			if _, err := v.Verify(r, body); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSignErrors(t *testing.T) {
	s, err := NewSigner(SignerConfig{Credential: credA, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sign(context.Background(), &http.Request{Method: "POST", Header: http.Header{}}, nil); err == nil {
		t.Fatal("no URL: want error")
	}
	if err := s.Sign(context.Background(), &http.Request{Method: "POST", URL: &url.URL{Path: "/"}}, nil); err == nil {
		t.Fatal("no host: want error")
	}
}

// TestPropertyLoopback signs random requests with Signer and directly with the aws-sdk-go-v2
// signer, sends them over a real loopback HTTP connection and checks that they verify, and that
// flipping any one bit of the body makes them fail.
func TestPropertyLoopback(t *testing.T) {
	v := newTestVerifier(t, time.Now, credA)
	srv := verifyServer(t, v)
	host := strings.TrimPrefix(srv.URL, "http://")
	ours, err := NewSigner(SignerConfig{Credential: credA, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	sdk := v4.NewSigner()
	sdkCreds := aws.Credentials{AccessKeyID: credA.AccessKeyID, SecretAccessKey: credA.Secret}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 42))
	n := 150
	if testing.Short() {
		n = 30
	}
	for i := range n {
		for _, useSDK := range []bool{false, true} {
			body := randBytes(rng, rng.IntN(3000))
			u := &url.URL{Scheme: "http", Host: host, Path: randPath(rng)}
			if rng.IntN(4) == 0 { // a valid but non-default encoding of the same path
				u.RawPath = strings.ReplaceAll(u.EscapedPath(), "a", "%61")
			}
			hdr := http.Header{}
			if rng.IntN(2) == 0 {
				hdr.Set("Content-Type", "application/json")
			}
			if useSDK {
				for j := range rng.IntN(4) {
					for range 1 + rng.IntN(2) {
						hdr.Add("X-Prop-"+string(rune('a'+j)), randHeaderValue(rng))
					}
				}
				if rng.IntN(3) == 0 {
					q := url.Values{}
					for range 1 + rng.IntN(3) {
						q.Add(randString(rng, 1+rng.IntN(5)), randString(rng, rng.IntN(5)))
					}
					u.RawQuery = q.Encode()
				}
			}
			for _, flip := range []bool{false, true} {
				if flip && len(body) == 0 {
					continue
				}
				sent := body
				if flip {
					sent = bytes.Clone(body)
					sent[rng.IntN(len(sent))] ^= 1 << rng.IntN(8)
				}
				r, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u.String(), bytes.NewReader(sent))
				if err != nil {
					t.Fatal(err)
				}
				r.URL = u
				r.Header = hdr.Clone()
				if useSDK {
					err = sdk.SignHTTP(context.Background(), sdkCreds, r, sha256Hex(body), "kms-xks-proxy", "us-east-1", time.Now())
				} else {
					err = ours.Sign(context.Background(), r, body)
				}
				if err != nil {
					t.Fatal(err)
				}
				got := send(t, r)
				want := "ok " + credA.AccessKeyID
				if flip {
					want = "401 " + ReasonBadSignature
				}
				if got != want {
					t.Fatalf("iteration %d sdk=%v flip=%v path=%q raw=%q query=%q headers=%v: got %q want %q",
						i, useSDK, flip, u.Path, u.RawPath, u.RawQuery, hdr, got, want)
				}
			}
		}
	}
}

func send(t *testing.T, r *http.Request) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

var pathPieces = []string{"a", "b", "Z", "9", "-", ".", "_", "~", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", ":", "@",
	" ", "%", "\"", "<", "é", "ሴ", "..", "kms", "xks", "v1", "keys", "encrypt"}

func randPath(rng *rand.Rand) string {
	var sb strings.Builder
	for range 1 + rng.IntN(6) {
		sb.WriteByte('/')
		for range rng.IntN(4) {
			sb.WriteString(pathPieces[rng.IntN(len(pathPieces))])
		}
	}
	return sb.String()
}

func randString(rng *rand.Rand, n int) string {
	const alpha = "abcXYZ019-_.~ !*'()&=+/%?é"
	var sb strings.Builder
	for range n {
		sb.WriteString(string([]rune(alpha)[rng.IntN(len([]rune(alpha)))]))
	}
	return sb.String()
}

// randHeaderValue is printable ASCII with runs of inner spaces.
func randHeaderValue(rng *rand.Rand) string {
	b := make([]byte, 1+rng.IntN(30))
	for i := range b {
		if rng.IntN(5) == 0 {
			b[i] = ' '
		} else {
			b[i] = byte(0x21 + rng.IntN(0x7e-0x21+1))
		}
	}
	return string(b)
}
