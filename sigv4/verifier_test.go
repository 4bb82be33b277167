package sigv4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const xksBody = `{"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsOperation":"KmsHealthCheck"}}`

func newTestVerifier(t testing.TB, now func() time.Time, creds ...Credential) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{Region: "us-east-1", Now: now, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// kmsRequest is what AWS KMS sends: POST, host;x-amz-date signed.
func kmsRequest(t testing.TB, c Credential, at time.Time, body []byte) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "https://xks.example.com/kms/xks/v1/keys/key-1/encrypt", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	refSign(r, body, c, "us-east-1", "kms-xks-proxy", at)
	return r
}

func TestNewVerifierConfig(t *testing.T) {
	dupe := []Credential{credA, credA}
	many := make([]Credential, MaxCredentials+1)
	for i := range many {
		many[i] = Credential{AccessKeyID: fmt.Sprintf("AKIAXKSPROXYTEST%04d", i), Secret: credA.Secret}
	}
	tests := []struct {
		name string
		cfg  VerifierConfig
		ok   bool
	}{
		{"ok", VerifierConfig{Region: "eu-west-3", Credentials: []Credential{credA}}, true},
		{"sixteen", VerifierConfig{Region: "eu-west-3", Credentials: many[:MaxCredentials]}, true},
		{"no region", VerifierConfig{Credentials: []Credential{credA}}, false},
		{"bad region", VerifierConfig{Region: "EU WEST", Credentials: []Credential{credA}}, false},
		{"bad service", VerifierConfig{Region: "eu-west-3", Service: "a/b", Credentials: []Credential{credA}}, false},
		{"negative skew", VerifierConfig{Region: "eu-west-3", MaxSkew: -time.Second, Credentials: []Credential{credA}}, false},
		{"no credentials", VerifierConfig{Region: "eu-west-3"}, false},
		{"too many", VerifierConfig{Region: "eu-west-3", Credentials: many}, false},
		{"duplicate", VerifierConfig{Region: "eu-west-3", Credentials: dupe}, false},
		{"invalid credential", VerifierConfig{Region: "eu-west-3", Credentials: []Credential{{AccessKeyID: "short", Secret: "s3cr3t-value"}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("not ErrConfig: %v", err)
				}
				if strings.Contains(err.Error(), credA.Secret) {
					t.Fatal("error leaks the secret")
				}
				return
			}
			if v.service != DefaultService || v.maxSkew != DefaultMaxSkew || v.now == nil {
				t.Fatalf("defaults not filled: %q %v", v.service, v.maxSkew)
			}
		})
	}
}

func TestVerifyKMSStyle(t *testing.T) {
	v := newTestVerifier(t, fixedClock(testTime), credA)
	body := []byte(xksBody)
	r := kmsRequest(t, credA, testTime, body)
	id, err := v.Verify(r, body)
	if err != nil || id != credA.AccessKeyID {
		t.Fatalf("id=%q err=%v", id, err)
	}
}

// TestVerifyCurlStyle is the request shape of curl 7.88 --aws-sigv4 (AWS's conformance
// client): content-type;host;x-amz-date, "Content-Type:application/json" without a space,
// Host with a port, no x-amz-content-sha256.
func TestVerifyCurlStyle(t *testing.T) {
	v := newTestVerifier(t, fixedClock(testTime), credA)
	body := []byte(xksBody)
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:18555/kms/xks/v1/health", bytes.NewReader(body))
	r.Host = "127.0.0.1:18555"
	r.Header["Content-Type"] = []string{"application/json"}
	refSign(r, body, credA, "us-east-1", "kms-xks-proxy", testTime, "content-type")
	if !strings.Contains(r.Header.Get("Authorization"), "SignedHeaders=content-type;host;x-amz-date,") {
		t.Fatalf("unexpected header %q", r.Header.Get("Authorization"))
	}
	if _, err := v.Verify(r, body); err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/jsonx")
	if _, err := v.Verify(r, body); reasonOf(err) != ReasonBadSignature {
		t.Fatalf("changed content-type: %v", err)
	}
}

// TestVerifyRealCurl runs the installed curl against a loopback server, if curl has
// --aws-sigv4 (7.75+).
func TestVerifyRealCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	if out, _ := exec.Command(curl, "--help", "all").Output(); !bytes.Contains(out, []byte("--aws-sigv4")) {
		t.Skip("curl has no --aws-sigv4")
	}
	v := newTestVerifier(t, time.Now, credA)
	srv := verifyServer(t, v)
	for _, tc := range []struct {
		name, secret string
		want         string
	}{
		{"good", credA.Secret, "ok " + credA.AccessKeyID},
		{"wrong secret", credB.Secret, "401 " + ReasonBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "5",
				"--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy",
				"--user", credA.AccessKeyID+":"+tc.secret,
				"-H", "Content-Type:application/json",
				"-d", xksBody, srv.URL+"/kms/xks/v1/health").CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v: %s", err, out)
			}
			if string(out) != tc.want {
				t.Fatalf("got %q, want %q", out, tc.want)
			}
		})
	}
}

// verifyServer is a loopback HTTP server answering "ok <akid>" or "401 <reason>".
func verifyServer(t testing.TB, v *Verifier) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := v.Verify(r, body)
		if err != nil {
			var ae *AuthError
			if !errors.As(err, &ae) {
				fmt.Fprintf(w, "500 not an AuthError: %v", err)
				return
			}
			fmt.Fprintf(w, "401 %s", ae.Reason)
			return
		}
		fmt.Fprintf(w, "ok %s", id)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestVerifyClockSkew(t *testing.T) {
	body := []byte(xksBody)
	for _, tc := range []struct {
		name   string
		offset time.Duration
		ok     bool
	}{
		{"exact", 0, true},
		{"+5m", 5 * time.Minute, true},
		{"-5m", -5 * time.Minute, true},
		{"+5m1s", 5*time.Minute + time.Second, false},
		{"-5m1s", -5*time.Minute - time.Second, false},
		{"+1h", time.Hour, false},
		{"-1 day", -24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, fixedClock(testTime.Add(tc.offset)), credA)
			_, err := v.Verify(kmsRequest(t, credA, testTime, body), body)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && reasonOf(err) != ReasonClockSkew {
				t.Fatalf("want clock_skew, got %v", err)
			}
		})
	}
	// MaxSkew is configurable.
	v, err := NewVerifier(VerifierConfig{Region: "us-east-1", MaxSkew: time.Minute, Now: fixedClock(testTime.Add(2 * time.Minute)), Credentials: []Credential{credA}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(kmsRequest(t, credA, testTime, body), body); reasonOf(err) != ReasonClockSkew {
		t.Fatalf("MaxSkew=1m, 2m off: %v", err)
	}
}

// TestVerifyMidnight crosses the day boundary: the scope day is the request's, not the server's.
func TestVerifyMidnight(t *testing.T) {
	signed := time.Date(2026, 3, 14, 23, 58, 0, 0, time.UTC)
	now := signed.Add(4 * time.Minute) // 2026-03-15 00:02
	v := newTestVerifier(t, fixedClock(now), credA)
	body := []byte(xksBody)
	for _, at := range []time.Time{signed, now, signed.Add(time.Minute)} {
		if _, err := v.Verify(kmsRequest(t, credA, at, body), body); err != nil {
			t.Fatalf("signed at %v: %v", at, err)
		}
	}
}

func TestVerifyTwoCredentialsAndRotation(t *testing.T) {
	body := []byte(xksBody)
	v := newTestVerifier(t, fixedClock(testTime), credA, credB)
	for _, c := range []Credential{credA, credB} {
		id, err := v.Verify(kmsRequest(t, c, testTime, body), body)
		if err != nil || id != c.AccessKeyID {
			t.Fatalf("%s: id=%q err=%v", c.AccessKeyID, id, err)
		}
	}
	if got := v.AccessKeyIDs(); len(got) != 2 || got[0] != credA.AccessKeyID || got[1] != credB.AccessKeyID {
		t.Fatalf("AccessKeyIDs = %v", got)
	}
	if err := v.SetCredentials([]Credential{credB}); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(kmsRequest(t, credA, testTime, body), body)
	if reasonOf(err) != ReasonUnknownAccessKey || !strings.Contains(err.Error(), credA.AccessKeyID) {
		t.Fatalf("removed credential: %v", err)
	}
	if _, err := v.Verify(kmsRequest(t, credB, testTime, body), body); err != nil {
		t.Fatalf("kept credential: %v", err)
	}
	// Same access key id, new secret: old signatures stop verifying.
	rotated := Credential{AccessKeyID: credB.AccessKeyID, Secret: credC.Secret}
	if err := v.SetCredentials([]Credential{rotated}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(kmsRequest(t, credB, testTime, body), body); reasonOf(err) != ReasonBadSignature {
		t.Fatalf("old secret: %v", err)
	}
	if _, err := v.Verify(kmsRequest(t, rotated, testTime, body), body); err != nil {
		t.Fatalf("new secret: %v", err)
	}
	// Invalid sets are refused and leave the current set in place.
	for _, bad := range [][]Credential{nil, {rotated, rotated}, {{AccessKeyID: "x", Secret: "y"}}} {
		if err := v.SetCredentials(bad); !errors.Is(err, ErrConfig) {
			t.Fatalf("SetCredentials(%v) = %v", bad, err)
		}
	}
	if _, err := v.Verify(kmsRequest(t, rotated, testTime, body), body); err != nil {
		t.Fatalf("after refused update: %v", err)
	}
}

func TestVerifyConcurrentRotation(t *testing.T) {
	body := []byte(xksBody)
	v := newTestVerifier(t, fixedClock(testTime), credA, credB)
	ra := kmsRequest(t, credA, testTime, body)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := v.Verify(ra, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 200 {
		other := credB
		if i%2 == 1 {
			other = credC
		}
		if err := v.SetCredentials([]Credential{credA, other}); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Verify during rotation: %v", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	body := []byte(xksBody)
	v := newTestVerifier(t, fixedClock(testTime), credA)
	good := func() *http.Request { return kmsRequest(t, credA, testTime, body) }
	withAuth := func(f func(string) string) *http.Request {
		r := good()
		r.Header.Set("Authorization", f(r.Header.Get("Authorization")))
		return r
	}
	tests := []struct {
		name string
		r    *http.Request
		want string
	}{
		{"no authorization", func() *http.Request { r := good(); r.Header.Del("Authorization"); return r }(), ReasonMissingAuthorization},
		{"two authorizations", func() *http.Request {
			r := good()
			r.Header.Add("Authorization", r.Header.Get("Authorization"))
			return r
		}(), ReasonMalformedAuthorization},
		{"too long", withAuth(func(s string) string { return s + strings.Repeat(" ", MaxAuthorizationLen) }), ReasonMalformedAuthorization},
		{"presigned style", withAuth(func(string) string { return "AWS4-HMAC-SHA256" }), ReasonMalformedAuthorization},
		{"sigv2", withAuth(func(string) string { return "AWS AKIAXKSPROXYTESTAAAA:c2ln" }), ReasonUnsupportedAlgorithm},
		{"sigv4a", withAuth(func(s string) string { return strings.Replace(s, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1) }), ReasonUnsupportedAlgorithm},
		{"uppercase signature", withAuth(func(s string) string {
			i := strings.Index(s, "Signature=") + len("Signature=")
			return s[:i] + strings.ToUpper(s[i:])
		}), ReasonMalformedAuthorization},
		{"wrong region", withAuth(func(s string) string { return strings.Replace(s, "/us-east-1/", "/eu-west-1/", 1) }), ReasonWrongRegion},
		{"wrong service", withAuth(func(s string) string { return strings.Replace(s, "/kms-xks-proxy/", "/kms/", 1) }), ReasonWrongService},
		{"host not signed", withAuth(func(s string) string { return strings.Replace(s, "host;x-amz-date", "x-amz-date", 1) }), ReasonHostNotSigned},
		{"unsorted signed headers", withAuth(func(s string) string { return strings.Replace(s, "host;x-amz-date", "x-amz-date;host", 1) }), ReasonMalformedAuthorization},
		{"content hash mismatch", func() *http.Request {
			r := good()
			r.Header.Set("X-Amz-Content-Sha256", sha256Hex([]byte("other")))
			refSign(r, body, credA, "us-east-1", "kms-xks-proxy", testTime, "x-amz-content-sha256")
			return r
		}(), ReasonBadSignature},
		{"unsigned payload", func() *http.Request {
			r := good()
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			refSign(r, body, credA, "us-east-1", "kms-xks-proxy", testTime, "x-amz-content-sha256")
			return r
		}(), ReasonBadSignature},
		{"long signed header absent", withAuth(func(s string) string {
			return strings.Replace(s, "host;x-amz-date", "host;x-"+strings.Repeat("a", 3000)+";x-amz-date", 1)
		}), ReasonSignedHeaderMissing},
		{"two x-amz-date", func() *http.Request { r := good(); r.Header.Add("X-Amz-Date", r.Header.Get("X-Amz-Date")); return r }(), ReasonBadDate},
		{"x-amz-date hour 24", func() *http.Request { r := good(); r.Header.Set("X-Amz-Date", "20260314T240000Z"); return r }(), ReasonBadDate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.r, body)
			var ae *AuthError
			if !errors.As(err, &ae) || !errors.Is(err, ErrAuth) {
				t.Fatalf("want *AuthError, got %v", err)
			}
			if ae.Reason != tc.want {
				t.Fatalf("reason = %s (%s), want %s", ae.Reason, ae.Message, tc.want)
			}
			checkMessage(t, ae.Message, tc.r)
		})
	}
}

// checkMessage: printable ASCII, below the XKS 512-character limit, no signature value.
func checkMessage(t *testing.T, msg string, r *http.Request) {
	t.Helper()
	if len(msg) == 0 || len(msg) >= 512 {
		t.Fatalf("message length %d", len(msg))
	}
	for i := 0; i < len(msg); i++ {
		if msg[i] < 0x20 || msg[i] > 0x7e {
			t.Fatalf("non-printable byte in %q", msg)
		}
	}
	if a, err := ParseAuthorization(r.Header.Get("Authorization")); err == nil {
		if strings.Contains(msg, fmt.Sprintf("%x", a.Signature[:8])) {
			t.Fatalf("message %q contains the signature", msg)
		}
	}
}

func TestVerifySignedContentSHA256(t *testing.T) {
	body := []byte(xksBody)
	v := newTestVerifier(t, fixedClock(testTime), credA)
	r := kmsRequest(t, credA, testTime, body)
	r.Header.Set("X-Amz-Content-Sha256", sha256Hex(body))
	refSign(r, body, credA, "us-east-1", "kms-xks-proxy", testTime, "content-type", "x-amz-content-sha256")
	if _, err := v.Verify(r, body); err != nil {
		t.Fatal(err)
	}
}
