package xks

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testXKS is a minimal XKS endpoint over AES-256-GCM for client tests. It uses this package's
// ParsePath, Validate and WriteError, and Cosmian's quirks when cosmian is set.
type testXKS struct {
	aead    cipher.AEAD
	cosmian bool          // 418 for KeyNotFound, 401 for Validation, nulls in Encrypt replies
	reply   func() []byte // if set, a raw 200 reply
	block   chan struct{} // if set, handlers wait on it (or on the request's end)
	signed  atomic.Int32
	lastHdr atomic.Value
}

func newTestXKS(t *testing.T) *testXKS {
	t.Helper()
	block, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &testXKS{aead: aead}
}

func (x *testXKS) fail(w http.ResponseWriter, e *Error) {
	if !x.cosmian {
		WriteError(w, e)
		return
	}
	st := e.Status()
	switch e.Name {
	case KeyNotFoundException:
		st = 418
	case ValidationException, InvalidCiphertextException:
		st = 401
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	w.Write(AppendErrorBody(nil, e.Name, e.Message))
}

func (x *testXKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if x.block != nil {
		select {
		case <-x.block:
		case <-r.Context().Done():
		}
		return
	}
	x.lastHdr.Store(r.Header.Clone())
	if r.Header.Get("X-Test-Signature") == "ok" {
		x.signed.Add(1)
	}
	if r.Header.Get("Content-Type") != "application/json" {
		x.fail(w, Errorf(ValidationException, "content type"))
		return
	}
	prefix, op, keyID, ok, err := ParsePath(r.URL.Path)
	if !ok || prefix != "/aws" {
		x.fail(w, Errorf(InvalidUriPathException, "no route"))
		return
	}
	if err != nil {
		x.fail(w, err.(*Error))
		return
	}
	body, _ := io.ReadAll(r.Body)
	if _, err := Validate(op, body, Limits{}); err != nil {
		x.fail(w, err.(*Error))
		return
	}
	if keyID == "missing" {
		x.fail(w, Errorf(KeyNotFoundException, "Item not found"))
		return
	}
	if x.reply != nil {
		w.Write(x.reply())
		return
	}
	var resp any
	switch op {
	case OpHealth:
		resp = HealthResponse{XksProxyFleetSize: 1, XksProxyVendor: "test", XksProxyModel: "test 1", EkmVendor: "test",
			EkmFleetDetails: []EKMDetail{{ID: "1", Model: "m", HealthStatus: HealthActive}}}
	case OpMetadata:
		resp = MetadataResponse{KeySpec: "AES_256", KeyUsage: []string{"ENCRYPT", "DECRYPT"}, KeyStatus: KeyStatusEnabled}
	case OpEncrypt:
		var req EncryptRequest
		json.Unmarshal(body, &req)
		iv := bytes.Repeat([]byte{1}, 12)
		sealed := x.aead.Seal(nil, iv, req.Plaintext, req.AdditionalAuthenticatedData)
		ct, tag := sealed[:len(req.Plaintext)], sealed[len(req.Plaintext):]
		if x.cosmian {
			out := map[string]any{"ciphertext": ct, "initializationVector": iv, "authenticationTag": tag,
				"ciphertextMetadata": nil, "ciphertextDataIntegrityValue": nil}
			if req.CiphertextDataIntegrityValueAlgorithm != "" {
				out["ciphertextDataIntegrityValue"] = CDIV(req.AdditionalAuthenticatedData, nil, iv, ct, tag)
			}
			resp = out
		} else {
			er := EncryptResponse{Ciphertext: ct, InitializationVector: iv, AuthenticationTag: tag}
			if req.CiphertextDataIntegrityValueAlgorithm != "" {
				er.CiphertextDataIntegrityValue = CDIV(req.AdditionalAuthenticatedData, nil, iv, ct, tag)
			}
			resp = er
		}
	case OpDecrypt:
		var req DecryptRequest
		json.Unmarshal(body, &req)
		pt, err := x.aead.Open(nil, req.InitializationVector, append(req.Ciphertext, req.AuthenticationTag...), req.AdditionalAuthenticatedData)
		if err != nil {
			x.fail(w, Errorf(InvalidCiphertextException, "authentication failed"))
			return
		}
		resp = DecryptResponse{Plaintext: pt}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

type headerSigner struct{ err error }

func (s headerSigner) Sign(_ context.Context, r *http.Request, body []byte) error {
	if s.err != nil {
		return s.err
	}
	if len(body) == 0 || r.Header.Get("Content-Type") != "application/json" {
		return errors.New("signer saw no body or content type")
	}
	r.Header.Set("X-Test-Signature", "ok")
	return nil
}

func startClient(t *testing.T, x *testXKS, cfg ClientConfig) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(x)
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("server not on loopback: %s", srv.URL)
	}
	cfg.BaseURL = srv.URL + "/aws/kms/xks/v1"
	cfg.HTTP = srv.Client()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testMD(op string) RequestMetadata {
	return RequestMetadata{AWSPrincipalArn: testPrincipal, KMSKeyArn: testKeyArn, KMSOperation: op, KMSRequestID: testRequestID}
}

func TestClientRoundTrip(t *testing.T) {
	for _, cosmian := range []bool{false, true} {
		name := "spec"
		if cosmian {
			name = "cosmian"
		}
		t.Run(name, func(t *testing.T) {
			x := newTestXKS(t)
			x.cosmian = cosmian
			c := startClient(t, x, ClientConfig{Signer: headerSigner{}, Header: http.Header{"X-Extra": {"1"}}})
			ctx := context.Background()

			h, err := c.Health(ctx, RequestMetadata{KMSRequestID: "r", KMSOperation: "KmsHealthCheck"})
			if err != nil || h.XksProxyFleetSize != 1 || len(h.EkmFleetDetails) != 1 || h.EkmFleetDetails[0].HealthStatus != HealthActive {
				t.Fatalf("Health = %+v, %v", h, err)
			}
			m, err := c.Metadata(ctx, "k1", testMD("CreateKey"))
			if err != nil || m.KeySpec != "AES_256" || len(m.KeyUsage) != 2 || m.KeyStatus != "ENABLED" {
				t.Fatalf("Metadata = %+v, %v", m, err)
			}
			pt := []byte("a data key of 32 bytes..........")
			aad := []byte("project=nile")
			e, err := c.Encrypt(ctx, "k1", &EncryptRequest{RequestMetadata: testMD("Encrypt"), Plaintext: pt,
				AdditionalAuthenticatedData: aad, CiphertextDataIntegrityValueAlgorithm: CDIVAlgSHA256})
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Ciphertext) != len(pt) || len(e.InitializationVector) != 12 || len(e.AuthenticationTag) != 16 ||
				!bytes.Equal(e.CiphertextDataIntegrityValue, CDIV(aad, nil, e.InitializationVector, e.Ciphertext, e.AuthenticationTag)) {
				t.Fatalf("Encrypt = %+v", e)
			}
			d, err := c.Decrypt(ctx, "k1", &DecryptRequest{RequestMetadata: testMD("Decrypt"), Ciphertext: e.Ciphertext,
				InitializationVector: e.InitializationVector, AuthenticationTag: e.AuthenticationTag, AdditionalAuthenticatedData: aad})
			if err != nil || !bytes.Equal(d.Plaintext, pt) {
				t.Fatalf("Decrypt = %+v, %v", d, err)
			}
			if x.signed.Load() != 4 {
				t.Errorf("signed requests: %d", x.signed.Load())
			}
			if hdr := x.lastHdr.Load().(http.Header); hdr.Get("X-Extra") != "1" {
				t.Errorf("extra header missing: %v", hdr)
			}

			// Errors carry the backend's name, even with Cosmian's statuses.
			_, err = c.Decrypt(ctx, "k1", &DecryptRequest{RequestMetadata: testMD("Decrypt"), Ciphertext: e.Ciphertext,
				InitializationVector: e.InitializationVector, AuthenticationTag: e.AuthenticationTag, AdditionalAuthenticatedData: []byte("other")})
			wantStatus := 400
			if cosmian {
				wantStatus = 401
			}
			var xe *Error
			if !errors.As(err, &xe) || xe.Name != InvalidCiphertextException || xe.HTTPStatus != wantStatus {
				t.Fatalf("bad AAD: %v", err)
			}
			_, err = c.Metadata(ctx, "missing", testMD("DescribeKey"))
			wantStatus = 404
			if cosmian {
				wantStatus = 418
			}
			if !errors.As(err, &xe) || !errors.Is(err, ErrKeyNotFound) || xe.HTTPStatus != wantStatus {
				t.Fatalf("missing key: %v", err)
			}
			// A request the server refuses as invalid (empty requestMetadata).
			_, err = c.Encrypt(ctx, "k1", &EncryptRequest{Plaintext: pt})
			if !errors.Is(err, ErrValidation) {
				t.Fatalf("invalid request: %v", err)
			}
		})
	}
}

func TestClientBadReplies(t *testing.T) {
	req := &EncryptRequest{RequestMetadata: testMD("Encrypt"), Plaintext: make([]byte, 32)}
	cases := []struct {
		name  string
		reply string
	}{
		{"wrong iv length", `{"ciphertext":"` + b64n(32) + `","initializationVector":"` + b64n(13) + `","authenticationTag":"` + b64n(16) + `"}`},
		{"short ciphertext", `{"ciphertext":"` + b64n(31) + `","initializationVector":"` + b64n(12) + `","authenticationTag":"` + b64n(16) + `"}`},
		{"not json", `Unauthorized`},
		{"empty", ``},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newTestXKS(t)
			x.reply = func() []byte { return []byte(tc.reply) }
			c := startClient(t, x, ClientConfig{})
			_, err := c.Encrypt(context.Background(), "k1", req)
			var xe *Error
			if !errors.As(err, &xe) || xe.Name != InternalException || xe.HTTPStatus != 200 {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestClientRawDo(t *testing.T) {
	x := newTestXKS(t)
	c := startClient(t, x, ClientConfig{})
	st, body, err := c.Do(context.Background(), OpHealth, "", []byte(`{"requestMetadata":{"kmsRequestId":"","kmsOperation":"x"}}`))
	if err != nil || st != 200 || !bytes.Contains(body, []byte(`"xksProxyFleetSize":1`)) {
		t.Fatalf("Do = %d %s %v", st, body, err)
	}
	st, body, err = c.Do(context.Background(), OpEncrypt, "k1", []byte(`{}`))
	if err != nil || st != 400 || !bytes.Contains(body, []byte(ValidationException)) {
		t.Fatalf("Do = %d %s %v", st, body, err)
	}
	if _, _, err := c.Do(context.Background(), OpEncrypt, "bad/id", nil); !errors.Is(err, ErrValidation) {
		t.Fatalf("bad key id: %v", err)
	}
	if _, _, err := c.Do(context.Background(), Operation(0), "", nil); err == nil {
		t.Fatal("unknown op accepted")
	}
}

func TestClientTimeoutAndErrors(t *testing.T) {
	x := newTestXKS(t)
	x.block = make(chan struct{})
	defer close(x.block)
	c := startClient(t, x, ClientConfig{Timeout: 50 * time.Millisecond})
	_, err := c.Health(context.Background(), RequestMetadata{KMSRequestID: "r", KMSOperation: "KmsHealthCheck"})
	if !errors.Is(err, context.DeadlineExceeded) || NameOf(err) != DependencyTimeoutException {
		t.Fatalf("timeout: %v", err)
	}
	// The caller's own deadline also applies.
	c2 := startClient(t, x, ClientConfig{Timeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := c2.Do(ctx, OpHealth, "", []byte("{}")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ctx timeout: %v", err)
	}

	sigErr := errors.New("no credentials")
	c3 := startClient(t, newTestXKS(t), ClientConfig{Signer: headerSigner{err: sigErr}})
	if _, err := c3.Health(context.Background(), RequestMetadata{}); !errors.Is(err, sigErr) {
		t.Fatalf("signer error: %v", err)
	}

	// Connection refused: a closed server.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	base := srv.URL + "/kms/xks/v1"
	srv.Close()
	c4, err := NewClient(ClientConfig{BaseURL: base, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c4.Do(context.Background(), OpHealth, "", nil); err == nil || NameOf(err) != InternalException {
		t.Fatalf("refused: %v", err)
	}
}

func TestNewClientConfig(t *testing.T) {
	for _, bad := range []string{"", "ftp://h/kms/xks/v1", "https:///kms/xks/v1", "https://h/aws", "https://h/a.b/kms/xks/v1",
		"https://h/kms/xks/v1?x=1", "https://u:p@h/kms/xks/v1", "://"} {
		if _, err := NewClient(ClientConfig{BaseURL: bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := NewClient(ClientConfig{BaseURL: "https://h/kms/xks/v1", Timeout: -1}); err == nil {
		t.Error("negative timeout accepted")
	}
	c, err := NewClient(ClientConfig{BaseURL: "https://h:8443/aws/kms/xks/v1/"})
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != DefaultClientTimeout || c.http == nil {
		t.Errorf("defaults not set: %+v", c)
	}
	for op, want := range map[Operation]string{
		OpHealth: "https://h:8443/aws/kms/xks/v1/health", OpMetadata: "https://h:8443/aws/kms/xks/v1/keys/k1/metadata",
		OpEncrypt: "https://h:8443/aws/kms/xks/v1/keys/k1/encrypt", OpDecrypt: "https://h:8443/aws/kms/xks/v1/keys/k1/decrypt",
	} {
		if got, err := c.URL(op, "k1"); err != nil || got != want {
			t.Errorf("URL(%v) = %q, %v", op, got, err)
		}
	}
}
