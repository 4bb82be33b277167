package kmsemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

const keysPath = "/aws/kms/xks/v1/keys/"

func encBody(plaintext, aad []byte) map[string]any {
	b := map[string]any{"requestMetadata": meta("Encrypt"), "plaintext": base64.StdEncoding.EncodeToString(plaintext), "encryptionAlgorithm": "AES_GCM"}
	if aad != nil {
		b["additionalAuthenticatedData"] = base64.StdEncoding.EncodeToString(aad)
	}
	return b
}

type encOut struct {
	Ciphertext                   string  `json:"ciphertext"`
	CiphertextMetadata           *string `json:"ciphertextMetadata"`
	InitializationVector         string  `json:"initializationVector"`
	AuthenticationTag            string  `json:"authenticationTag"`
	CiphertextDataIntegrityValue *string `json:"ciphertextDataIntegrityValue"`
}

func decBody(o encOut, aad []byte) map[string]any {
	b := map[string]any{"requestMetadata": meta("Decrypt"), "ciphertext": o.Ciphertext, "encryptionAlgorithm": "AES_GCM",
		"initializationVector": o.InitializationVector, "authenticationTag": o.AuthenticationTag}
	if o.CiphertextMetadata != nil {
		b["ciphertextMetadata"] = *o.CiphertextMetadata
	}
	if aad != nil {
		b["additionalAuthenticatedData"] = base64.StdEncoding.EncodeToString(aad)
	}
	return b
}

func decodeEnc(t *testing.T, r reply) encOut {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("encrypt: %d %s", r.status, r.body)
	}
	var o encOut
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestXKSRoundTrip(t *testing.T) {
	for _, style := range []struct {
		name  string
		style signStyle
	}{{"aws-kms host;x-amz-date", signAWSKMS}, {"curl content-type;host;x-amz-date", signCurl}} {
		t.Run(style.name, func(t *testing.T) {
			e := authEnv(t, Cosmian526)
			if err := e.s.CreateKey("admin", "k1", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
				t.Fatal(err)
			}
			if err := e.s.GrantAccess("admin", "k1", testARN, "encrypt", "decrypt", "getattributes"); err != nil {
				t.Fatal(err)
			}
			send := func(path string, body any) reply {
				b, _ := json.Marshal(body)
				req := e.xksRequest(path, b, style.style, time.Now())
				want := map[signStyle]string{signAWSKMS: "SignedHeaders=host;x-amz-date,", signCurl: "SignedHeaders=content-type;host;x-amz-date,"}[style.style]
				if signed := req.Header.Get("Authorization"); !strings.Contains(signed, want) {
					t.Fatalf("Authorization %q lacks %q", signed, want)
				}
				return e.send(req)
			}
			aad := []byte("project=nile")
			body := encBody([]byte("hello xks"), aad)
			body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
			r := send(keysPath+"k1/encrypt", body)
			o := decodeEnc(t, r)
			// Optional fields are JSON null, not omitted.
			if !bytes.Contains(r.body, []byte(`"ciphertextMetadata":null`)) {
				t.Fatalf("ciphertextMetadata must be null: %s", r.body)
			}
			iv, _ := base64.StdEncoding.DecodeString(o.InitializationVector)
			tag, _ := base64.StdEncoding.DecodeString(o.AuthenticationTag)
			ct, _ := base64.StdEncoding.DecodeString(o.Ciphertext)
			if len(iv) != 12 || len(tag) != 16 || len(ct) != len("hello xks") {
				t.Fatalf("iv %d tag %d ct %d", len(iv), len(tag), len(ct))
			}
			h := sha256.New()
			h.Write(aad)
			h.Write(iv)
			h.Write(ct)
			h.Write(tag)
			if o.CiphertextDataIntegrityValue == nil || *o.CiphertextDataIntegrityValue != base64.StdEncoding.EncodeToString(h.Sum(nil)) {
				t.Fatalf("CDIV %v", o.CiphertextDataIntegrityValue)
			}
			r = send(keysPath+"k1/decrypt", decBody(o, aad))
			if r.status != 200 || string(r.body) != `{"plaintext":"`+base64.StdEncoding.EncodeToString([]byte("hello xks"))+`"}` {
				t.Fatalf("decrypt: %d %s", r.status, r.body)
			}
			// Raw AAD: a KMIP Decrypt with the same AAD bytes (no length prefixes) succeeds.
			if err := e.s.GrantAccess("admin", "k1", ownerUser, "decrypt"); err != nil {
				t.Fatal(err)
			}
			d := e.kmipOK(ownerToken, ttlv.Struct("Decrypt", uidNode("k1"), ttlv.Bytes("Data", ct), ttlv.Bytes("IVCounterNonce", iv),
				ttlv.Bytes("AuthenticatedEncryptionAdditionalData", aad), ttlv.Bytes("AuthenticatedEncryptionTag", tag)))
			if string(child(t, d, "Data").Bytes) != "hello xks" {
				t.Fatal("KMIP decrypt with raw AAD")
			}
		})
	}
}

func TestXKSBehaviour(t *testing.T) {
	e := authEnv(t, Cosmian526)
	for _, k := range []struct {
		id   string
		mask int32
		tags []string
	}{{"k1", DefaultUsageMask, []string{"aws-xks"}}, {"enc-only", maskEncrypt, nil}, {"dec-only", maskDecrypt, nil}, {"none", maskWrapKey, nil}, {"tagged", DefaultUsageMask, []string{"blue"}}} {
		if err := e.s.CreateKey("admin", k.id, KeyOptions{UsageMask: k.mask, Tags: k.tags}); err != nil {
			t.Fatal(err)
		}
		if err := e.s.GrantAccess("admin", k.id, testARN, "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.CreateKey("admin", "nogrant", KeyOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("health", func(t *testing.T) {
		r := e.xks("/aws/kms/xks/v1/health", map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}})
		want := `{"xksProxyFleetSize":1,"xksProxyVendor":"Cosmian","xksProxyModel":"Cosmian KMS 5.26.0","ekmVendor":"Cosmian","ekmFleetDetails":[{"id":"1","model":"Cosmian KMS 5.26.0","healthStatus":"ACTIVE"}]}`
		if r.status != 200 || string(r.body) != want {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("metadata", func(t *testing.T) {
		r := e.xks(keysPath+"k1/metadata", map[string]any{"requestMetadata": meta("GetKeyMetadata")})
		if r.status != 200 || string(r.body) != `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}` {
			t.Fatalf("%d %s", r.status, r.body)
		}
		wantXKSError(t, e.xks(keysPath+"nope/metadata", map[string]any{"requestMetadata": meta("DescribeKey")}), 418, "KeyNotFoundException", "Object_Not_Found: object not found for identifier nope")
		wantXKSError(t, e.xks(keysPath+"nogrant/metadata", map[string]any{"requestMetadata": meta("GetKeyMetadata")}), 418, "KeyNotFoundException", "not found")
		wantXKSError(t, e.xks(keysPath+"k1/metadata", map[string]any{"requestMetadata": meta("SomethingNew")}), 501, "UnsupportedOperationException", "Unsupported kmsOperation: SomethingNew")
		// keyStatus stays ENABLED even for a revoked key.
		if err := e.s.CreateKey("admin", "revoked", KeyOptions{}); err != nil {
			t.Fatal(err)
		}
		_ = e.s.GrantAccess("admin", "revoked", testARN, "getattributes", "encrypt", "decrypt")
		_ = e.s.RevokeKey("revoked", "Unspecified")
		r = e.xks(keysPath+"revoked/metadata", map[string]any{"requestMetadata": meta("GetKeyMetadata")})
		if r.status != 200 || !strings.Contains(string(r.body), `"keyStatus":"ENABLED"`) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		wantXKSError(t, e.xks(keysPath+"revoked/encrypt", encBody([]byte("x"), nil)), 401, "InvalidKeyUsageException", "is in state Deactivated")
	})
	t.Run("usage-limited keys", func(t *testing.T) {
		// A key without the needed usage bit is skipped by Cosmian's key selection, which then
		// reports "not found": KeyNotFoundException (418), not InvalidKeyUsageException.
		wantXKSError(t, e.xks(keysPath+"dec-only/encrypt", encBody([]byte("x"), nil)), 418, "KeyNotFoundException", "Encrypt: key id: dec-only, not found")
		wantXKSError(t, e.xks(keysPath+"none/encrypt", encBody([]byte("x"), nil)), 418, "KeyNotFoundException", "Encrypt: key id: none, not found")
		o := decodeEnc(t, e.xks(keysPath+"enc-only/encrypt", encBody([]byte("x"), nil)))
		wantXKSError(t, e.xks(keysPath+"enc-only/decrypt", decBody(o, nil)), 418, "KeyNotFoundException", "Decrypt: failed to retrieve the key: enc-only")
		wantXKSError(t, e.xks(keysPath+"none/decrypt", decBody(o, nil)), 418, "KeyNotFoundException", "Decrypt: failed to retrieve the key: none")
		// No grant at all: InvalidKeyUsageException (401).
		wantXKSError(t, e.xks(keysPath+"nogrant/encrypt", encBody([]byte("x"), nil)), 401, "InvalidKeyUsageException", "does not have permission to encrypt")
	})
	t.Run("tag lookup sets ciphertextMetadata", func(t *testing.T) {
		o := decodeEnc(t, e.xks(keysPath+`%5B%22blue%22%5D/encrypt`, encBody([]byte("by tag"), nil)))
		if o.CiphertextMetadata == nil || *o.CiphertextMetadata != base64.StdEncoding.EncodeToString([]byte("tagged")) {
			t.Fatalf("ciphertextMetadata %v", o.CiphertextMetadata)
		}
		// Decrypt honours the metadata whatever the path id.
		r := e.xks(keysPath+"k1/decrypt", decBody(o, nil))
		if r.status != 200 || !strings.Contains(string(r.body), base64.StdEncoding.EncodeToString([]byte("by tag"))) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("crypto errors", func(t *testing.T) {
		o := decodeEnc(t, e.xks(keysPath+"k1/encrypt", encBody([]byte("secret"), []byte("aad"))))
		wantXKSError(t, e.xks(keysPath+"k1/decrypt", decBody(o, []byte("other"))), 401, "InvalidCiphertextException", "CRYPTO: error")
		wantXKSError(t, e.xks(keysPath+"missing/encrypt", encBody([]byte("x"), nil)), 418, "KeyNotFoundException", "Encrypt: key id: missing, not found")
		b := encBody([]byte("x"), nil)
		b["plaintext"] = "!!!!"
		wantXKSError(t, e.xks(keysPath+"k1/encrypt", b), 500, "InternalException", "Conversion Error: Invalid symbol 33, offset 0.")
	})
	t.Run("validation", func(t *testing.T) {
		m := meta("Encrypt")
		delete(m, "kmsKeyArn")
		wantXKSError(t, e.xks(keysPath+"k1/encrypt", map[string]any{"requestMetadata": m, "plaintext": "AA==", "encryptionAlgorithm": "AES_GCM"}), 401, "ValidationException", "JSON deserialize error: missing field `kmsKeyArn`")
		b := encBody([]byte("x"), nil)
		b["encryptionAlgorithm"] = "AES_CBC"
		wantXKSError(t, e.xks(keysPath+"k1/encrypt", b), 401, "ValidationException", "unknown variant `AES_CBC`, expected `AES_GCM`")
		wantXKSError(t, e.xks(keysPath+"k1/encrypt", []byte(`{`)), 401, "ValidationException", "JSON deserialize error: EOF while parsing")
		wantXKSError(t, e.xks("/aws/kms/xks/v1/health", map[string]any{"requestMetadata": map[string]any{}}), 401, "ValidationException", "missing field `kmsRequestId`")
		// Extra fields are ignored.
		b = encBody([]byte("x"), nil)
		b["futureField"] = 1
		if r := e.xks(keysPath+"k1/encrypt", b); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// Content-Type must be JSON.
		raw, _ := json.Marshal(encBody([]byte("x"), nil))
		req := e.xksRequest(keysPath+"k1/encrypt", raw, signAWSKMS, time.Now())
		req.Header.Set("Content-Type", "text/plain")
		wantXKSError(t, e.send(req), 401, "ValidationException", "Unknown error")
	})
	t.Run("routing", func(t *testing.T) {
		wantXKSError(t, e.xks("/aws/kms/xks/v1/keys/k1/sign", map[string]any{}), 404, "InvalidUriPathException", "Resource not found: /aws/kms/xks/v1/keys/k1/sign")
		wantXKSError(t, e.xks("/aws/other", map[string]any{}), 404, "InvalidUriPathException", "Resource not found")
		req := e.xksRequestMethod(http.MethodGet, "/aws/kms/xks/v1/health", nil, signAWSKMS, time.Now())
		wantXKSError(t, e.send(req), 404, "InvalidUriPathException", "")
		// The /aws scope ignores bearer tokens: SigV4 only.
		r := e.do(http.MethodPost, "/aws/kms/xks/v1/health", ownerToken, "application/json", []byte(`{}`))
		if r.status != 401 || r.ctype == "application/json" {
			t.Fatalf("unsigned request: %d %q %s", r.status, r.ctype, r.body)
		}
	})
	t.Run("sigv4", func(t *testing.T) {
		body := []byte(`{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}`)
		// Clock skew beyond 5 minutes.
		wantXKSError(t, e.send(e.xksRequest("/aws/kms/xks/v1/health", body, signAWSKMS, time.Now().Add(-6*time.Minute))), 401, "AuthenticationFailedException", "Signature v4 verification failed")
		// Tampered body.
		req := e.xksRequest("/aws/kms/xks/v1/health", body, signAWSKMS, time.Now())
		req.Body = http.NoBody
		req.ContentLength = 0
		wantXKSError(t, e.send(req), 401, "AuthenticationFailedException", "Signature v4 verification failed")
		// Unknown access key id.
		req = e.xksRequest("/aws/kms/xks/v1/health", body, signAWSKMS, time.Now())
		req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), testAKID, "AKIAOTHERKEY00000000", 1))
		wantXKSError(t, e.send(req), 401, "AuthenticationFailedException", "Access key id AKIAOTHERKEY00000000 not found")
		// Malformed Authorization: plain-text 401, not XKS JSON.
		req = e.xksRequest("/aws/kms/xks/v1/health", body, signAWSKMS, time.Now())
		req.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
		r := e.send(req)
		if r.status != 401 || r.ctype == "application/json" {
			t.Fatalf("malformed: %d %q %s", r.status, r.ctype, r.body)
		}
	})
}

func TestXKSACLGenerations(t *testing.T) {
	otherARN := "arn:aws:iam::123456789012:role/Other"
	create := func(e *env, id, arn string) reply {
		m := meta("CreateKey")
		m["awsPrincipalArn"] = arn
		return e.xks(keysPath+id+"/metadata", map[string]any{"requestMetadata": m})
	}
	encAs := func(e *env, id, arn string) reply {
		b := encBody([]byte("x"), nil)
		b["requestMetadata"].(map[string]any)["awsPrincipalArn"] = arn
		return e.xks(keysPath+id+"/encrypt", b)
	}
	t.Run("arn (5.26)", func(t *testing.T) {
		e := authEnv(t, Cosmian526)
		if r := create(e, "new1", testARN); r.status != 200 || string(r.body) != `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}` {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		info, _ := e.s.Object("new1")
		if info.Owner != "admin" || info.UsageMask != 60 || strings.Join(info.Tags, ",") != "_kk,aws-xks" || info.State != stateActive {
			t.Fatalf("created %+v", info)
		}
		if got := e.s.Access("new1"); strings.Join(got[testARN], ",") != "decrypt,encrypt,getattributes" || len(got) != 1 {
			t.Fatalf("grants %v", got)
		}
		if r := encAs(e, "new1", testARN); r.status != 200 {
			t.Fatalf("creator encrypt: %d %s", r.status, r.body)
		}
		// Issue #1093: another principal cannot use the key.
		wantXKSError(t, encAs(e, "new1", otherARN), 401, "InvalidKeyUsageException", "does not have permission")
		// Idempotent: a second CreateKey succeeds and grants nothing new.
		if r := create(e, "new1", otherARN); r.status != 200 {
			t.Fatalf("second create: %d %s", r.status, r.body)
		}
		if got := e.s.Access("new1"); len(got) != 1 {
			t.Fatalf("grants after idempotent create %v", got)
		}
	})
	t.Run("service (PR #1107)", func(t *testing.T) {
		e := authEnv(t, CosmianXKSService)
		if err := e.s.CreateKey("admin", "legacy", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if r := create(e, "new2", testARN); r.status != 200 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		if got := e.s.Access("new2"); strings.Join(got[XKSServiceUser], ",") != "decrypt,encrypt,getattributes" || len(got) != 1 {
			t.Fatalf("grants %v", got)
		}
		for _, arn := range []string{testARN, otherARN} {
			if r := encAs(e, "new2", arn); r.status != 200 {
				t.Fatalf("encrypt as %s: %d %s", arn, r.status, r.body)
			}
		}
		// A key predating the migration is unusable until MigrateXKSAccess runs.
		wantXKSError(t, encAs(e, "legacy", testARN), 401, "InvalidKeyUsageException", "[aws-xks-service]")
		if n := e.s.MigrateXKSAccess(); n != 1 { // new2 already holds the grant
			t.Fatalf("migrated %d", n)
		}
		if n := e.s.MigrateXKSAccess(); n != 0 {
			t.Fatalf("second migration updated %d", n)
		}
		if r := encAs(e, "legacy", testARN); r.status != 200 {
			t.Fatalf("after migration: %d %s", r.status, r.body)
		}
		// The reserved identity cannot authenticate as a client.
		s2, err := New(Config{CosmianVersion: CosmianXKSService, Tokens: map[string]string{"t": XKSServiceUser}})
		if err != nil {
			t.Fatal(err)
		}
		rec := newEnvFrom(t, s2)
		if r := rec.do(http.MethodGet, "/me", "t", "", nil); r.status != 401 {
			t.Fatalf("reserved identity accepted: %d", r.status)
		}
		if _, err := New(Config{CosmianVersion: CosmianXKSService, DefaultUser: XKSServiceUser}); err == nil {
			t.Fatal("reserved default user accepted")
		}
	})
}

func newEnvFrom(t *testing.T, s *Server) *env {
	t.Helper()
	run, err := s.Start("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	return &env{t: t, s: s, url: run.URL, c: &http.Client{Timeout: 10 * time.Second}}
}

// TestCurlAWSSigV4 runs the real curl binary, as Cosmian's test client does, against Start.
func TestCurlAWSSigV4(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not on PATH; the curl --aws-sigv4 interoperability test needs it")
	}
	s, err := New(Config{XKS: &XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.GrantAccess("admin", "k1", "*", "encrypt", "decrypt", "getattributes"); err != nil {
		t.Fatal(err)
	}
	run, err := s.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = run.Close() }()
	call := func(path string, body any) []byte {
		t.Helper()
		b, _ := json.Marshal(body)
		cmd := exec.Command(curl, "-sS", "-k", "--aws-sigv4", "aws:amz:us-east-1:kms-xks-proxy", "--user", testAKID+":"+testSecret,
			"-H", "Content-Type:application/json", "-w", "\n%{http_code}", "--data-binary", "@-", run.URL+path)
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		i := bytes.LastIndexByte(out, '\n')
		if code := string(out[i+1:]); code != "200" {
			t.Fatalf("curl %s: HTTP %s: %s", path, code, out[:i])
		}
		return out[:i]
	}
	call("/aws/kms/xks/v1/health", map[string]any{"requestMetadata": map[string]string{"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}})
	var o encOut
	if err := json.Unmarshal(call(keysPath+"k1/encrypt", encBody([]byte("curl"), []byte("aad"))), &o); err != nil {
		t.Fatal(err)
	}
	var d struct{ Plaintext string }
	if err := json.Unmarshal(call(keysPath+"k1/decrypt", decBody(o, []byte("aad"))), &d); err != nil || d.Plaintext != base64.StdEncoding.EncodeToString([]byte("curl")) {
		t.Fatalf("decrypt %v %+v", err, d)
	}
}
