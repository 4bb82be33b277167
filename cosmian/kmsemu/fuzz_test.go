package kmsemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

func fuzzServer(f *testing.F) *Server {
	f.Helper()
	s, err := New(Config{XKS: &XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret}, MaxBody: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		f.Fatal(err)
	}
	if err := s.GrantAccess("admin", "k1", "*", "encrypt", "decrypt", "getattributes"); err != nil {
		f.Fatal(err)
	}
	return s
}

// FuzzKMIP posts arbitrary bodies to /kmip/2_1: no panic, and every reply is either JSON TTLV
// (200) or a Cosmian-style text error.
func FuzzKMIP(f *testing.F) {
	_ = filepath.WalkDir("testdata/vectors", func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".json") {
			b, _ := os.ReadFile(p)
			f.Add(bytes.ReplaceAll(b, []byte("{{key_id}}"), []byte("k1")))
		}
		return nil
	})
	f.Add([]byte(`{"tag":"RequestMessage","value":[{"tag":"RequestHeader","value":[{"tag":"ProtocolVersion","value":[{"tag":"ProtocolVersionMajor","type":"Integer","value":2},{"tag":"ProtocolVersionMinor","type":"Integer","value":1}]}]},{"tag":"BatchItem","value":[{"tag":"Operation","type":"Enumeration","value":"Get"},{"tag":"RequestPayload","value":[{"tag":"UniqueIdentifier","type":"TextString","value":"k1"}]}]}]}`))
	f.Add([]byte(`{"tag":"Encrypt","value":[{"tag":"UniqueIdentifier","type":"TextString","value":"[\"aws-xks\"]"},{"tag":"Data","type":"ByteString","value":"00"}]}`))
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/kmip/2_1", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		s.ServeHTTP(rec, req)
		ct := rec.Header().Get("Content-Type")
		switch {
		case rec.Code == 200:
			if ct != "application/json" {
				t.Fatalf("200 with %q", ct)
			}
			if _, err := ttlv.Unmarshal(rec.Body.Bytes()); err != nil {
				t.Fatalf("200 reply is not JSON TTLV: %v", err)
			}
		case rec.Code == 422 || rec.Code == 401 || rec.Code == 404 || rec.Code == 500:
			if ct != "text/html; charset=utf-8" || rec.Body.Len() == 0 {
				t.Fatalf("%d with %q %q", rec.Code, ct, rec.Body.String())
			}
			if rec.Code == 500 && rec.Body.String() != "Internal server error" {
				t.Fatalf("500 leaks details: %q", rec.Body.String())
			}
		case rec.Code == 400 || rec.Code == 413:
		default:
			t.Fatalf("unexpected status %d", rec.Code)
		}
	})
}

// FuzzXKS posts arbitrary, correctly signed bodies to the XKS routes: no panic, and every reply
// is either a 200 JSON object or an XKS error JSON with Cosmian's status for its name.
func FuzzXKS(f *testing.F) {
	seeds := []string{
		`{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}`,
		`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"b","kmsOperation":"Encrypt","kmsRequestId":"c"},"plaintext":"aGVsbG8=","encryptionAlgorithm":"AES_GCM","additionalAuthenticatedData":"YQ==","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`,
		`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"b","kmsOperation":"Decrypt","kmsRequestId":"c"},"ciphertext":"AAAA","encryptionAlgorithm":"AES_GCM","initializationVector":"AAAAAAAAAAAAAAAA","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA==","ciphertextMetadata":"azE="}`,
		`{"requestMetadata":{"awsPrincipalArn":"a","kmsOperation":"CreateKey","kmsRequestId":"c"}}`,
		`{"requestMetadata":null}`, `[]`, `{`, ``,
	}
	for i, sd := range seeds {
		f.Add([]byte(sd), uint8(i))
	}
	s := fuzzServer(f)
	paths := []string{"/aws/kms/xks/v1/health", keysPath + "k1/encrypt", keysPath + "k1/decrypt", keysPath + "k1/metadata", keysPath + "new/metadata", keysPath + "%5B%22aws-xks%22%5D/encrypt", "/aws/kms/xks/v1/keys/k1/other"}
	creds := aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret}
	signer := v4.NewSigner()
	f.Fuzz(func(t *testing.T, body []byte, route uint8) {
		req := httptest.NewRequest(http.MethodPost, "http://kms.test"+paths[int(route)%len(paths)], bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		sum := sha256.Sum256(body)
		n := req.ContentLength
		req.ContentLength = 0
		if err := signer.SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms-xks-proxy", testRegion, time.Now()); err != nil {
			t.Fatal(err)
		}
		req.ContentLength = n
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d reply is not JSON: %q", rec.Code, rec.Body.String())
		}
		var obj map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil {
			t.Fatalf("reply is not a JSON object: %v", err)
		}
		if rec.Code == 200 {
			return
		}
		name, _ := obj["errorName"].(string)
		if _, ok := obj["errorMessage"]; !ok || name == "" || xksStatus(name) != rec.Code {
			t.Fatalf("bad error reply %d %s", rec.Code, rec.Body.String())
		}
	})
}

func BenchmarkXKSEncrypt(b *testing.B) {
	s, err := New(Config{XKS: &XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret}})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", KeyOptions{}); err != nil {
		b.Fatal(err)
	}
	if err := s.GrantAccess("admin", "k1", "*", "encrypt"); err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(encBody(bytes.Repeat([]byte{7}, 4300), []byte("aad")))
	sum := sha256.Sum256(body)
	req := httptest.NewRequest(http.MethodPost, "http://kms.test"+keysPath+"k1/encrypt", nil)
	n := req.ContentLength
	req.ContentLength = 0
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testAKID, SecretAccessKey: testSecret}, req, hex.EncodeToString(sum[:]), "kms-xks-proxy", testRegion, time.Now()); err != nil {
		b.Fatal(err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/json")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := req.Clone(context.Background())
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

func BenchmarkKMIPEncrypt(b *testing.B) {
	s, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", KeyOptions{}); err != nil {
		b.Fatal(err)
	}
	body, _ := ttlv.Marshal(encryptReq("k1", bytes.Repeat([]byte{7}, 4300)))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/kmip/2_1", bytes.NewReader(body)))
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
