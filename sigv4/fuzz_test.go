package sigv4

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
	f.Add("AWS4-HMAC-SHA256 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31,Credential=AKIAXKSPROXYTESTAAAA/20260314/eu-west-3/kms-xks-proxy/aws4_request,SignedHeaders=content-type;host;x-amz-date")
	f.Add("AWS4-HMAC-SHA256 Credential=A/2/r/s/aws4_request, Credential=A/2/r/s/aws4_request")
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20150230/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
	f.Add("AWS4-HMAC-SHA256  ,,, =")
	f.Add("AWS AKID:sig")
	f.Add("")
	if dirs, err := os.ReadDir(suiteDir); err == nil {
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(suiteDir, d.Name(), "header-signed-request.txt")); err == nil {
				if i := bytes.Index(b, []byte("Authorization:")); i >= 0 {
					line, _, _ := bytes.Cut(b[i+len("Authorization:"):], []byte("\n"))
					f.Add(string(line))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthorization(s)
		if err != nil {
			var ae *AuthError
			if !errors.As(err, &ae) || !errors.Is(err, ErrAuth) || ae.Reason == "" {
				t.Fatalf("not an AuthError: %v", err)
			}
			for i := 0; i < len(ae.Message); i++ {
				if ae.Message[i] < 0x20 || ae.Message[i] > 0x7e {
					t.Fatalf("non-printable message %q", ae.Message)
				}
			}
			return
		}
		hs := a.Headers()
		if len(s) > MaxAuthorizationLen || len(hs) > MaxSignedHeaders || len(a.AccessKeyID) == 0 {
			t.Fatalf("accepted out-of-bounds input %q", s)
		}
		// Re-rendering the parsed value must parse to the same value.
		again := "AWS4-HMAC-SHA256 Credential=" + a.AccessKeyID + "/" + a.Scope + ", SignedHeaders=" + strings.Join(hs, ";") + ", Signature=" + hex.EncodeToString(a.Signature[:])
		b, err := ParseAuthorization(again)
		if err != nil || b != a {
			t.Fatalf("round trip of %q: %+v vs %+v (%v)", s, a, b, err)
		}
	})
}

// FuzzVerify feeds arbitrary request parts to Verify; it must never panic, always return an
// *AuthError on failure, and only succeed for the seeded valid request shape.
func FuzzVerify(f *testing.F) {
	body := []byte(xksBody)
	r := kmsRequest(f, credA, testTime, body)
	f.Add("POST", "/kms/xks/v1/keys/key-1/encrypt", "", "xks.example.com", r.Header.Get("X-Amz-Date"), r.Header.Get("Authorization"), "Content-Type: application/json", body)
	f.Add("POST", "/a%2Fb", "x=1&y", "h:1", "20260314T150926Z", "AWS4-HMAC-SHA256 Credential=AKIAXKSPROXYTESTAAAA/20260314/us-east-1/kms-xks-proxy/aws4_request, SignedHeaders=host;my-h;x-amz-content-sha256;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", "My-H: a  b\nX-Amz-Content-Sha256: UNSIGNED-PAYLOAD", []byte{})
	v := newTestVerifier(f, fixedClock(testTime), credA)
	f.Fuzz(func(t *testing.T, method, rawPath, rawQuery, host, amzDate, auth, headers string, body []byte) {
		req := &http.Request{Method: method, Host: host, URL: &url.URL{Path: rawPath, RawPath: rawPath, RawQuery: rawQuery}, Header: http.Header{}}
		for _, l := range strings.Split(headers, "\n") {
			if k, val, ok := strings.Cut(l, ":"); ok {
				req.Header.Add(k, val)
			}
		}
		req.Header.Set("X-Amz-Date", amzDate)
		req.Header.Set("Authorization", auth)
		_, err := v.Verify(req, body)
		if err != nil {
			var ae *AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("not an AuthError: %v", err)
			}
		}
	})
}
