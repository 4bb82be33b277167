package xks

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readCDIV(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cdiv", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// specVector returns the spec's Encrypt request and its reply as the proxy normalises it.
func specVector(t *testing.T) (req, reply []byte, v Validated) {
	t.Helper()
	req = readCDIV(t, "encrypt_request.json")
	v, err := Validate(OpEncrypt, req, Limits{})
	if err != nil || !v.WantCDIV {
		t.Fatalf("spec request: %v %+v", err, v)
	}
	_, reply, err = NormalizeResponse(nil, OpEncrypt, 200, readCDIV(t, "encrypt_response.json"), v)
	if err != nil {
		t.Fatalf("spec reply: %v", err)
	}
	return req, reply, v
}

// TestCDIVSpecVector: Appendix C's bytes hash to its published value, CDIV computes it from the
// decoded fields, and CheckCDIV accepts the spec's reply to the spec's request.
func TestCDIVSpecVector(t *testing.T) {
	var raw []byte
	var wantHex, wantB64 string
	for _, line := range strings.Split(string(readCDIV(t, "appendix_c.txt")), "\n") {
		line, _, _ = strings.Cut(line, "//")
		switch f := strings.Fields(line); {
		case len(f) == 2 && f[0] == "sha256":
			wantHex = f[1]
		case len(f) == 2 && f[0] == "base64":
			wantB64 = f[1]
		default:
			b, err := hex.DecodeString(strings.Join(f, ""))
			if err != nil {
				t.Fatal(err)
			}
			raw = append(raw, b...)
		}
	}
	sum := sha256.Sum256(raw)
	if len(raw) != 86 || hex.EncodeToString(sum[:]) != wantHex || base64.StdEncoding.EncodeToString(sum[:]) != wantB64 {
		t.Fatalf("appendix bytes: %d bytes, sha256 %x", len(raw), sum)
	}
	dec := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := base64.StdEncoding.EncodeToString(CDIV([]byte("project=nile,department=marketing"), []byte("key_version=1"),
		dec("HMrlRw85cAJUd5Ax"), dec("ghxkK1txeDNn3q8Y"), dec("vBxN2ncH1oEkR8WVXpmyYQ=="))); got != wantB64 {
		t.Fatalf("CDIV %s, want %s", got, wantB64)
	}
	req, reply, _ := specVector(t)
	if err := CheckCDIV(req, reply); err != nil {
		t.Fatalf("CheckCDIV of the spec's example: %v", err)
	}
}

// TestCheckCDIVRefuses: any change to a hashed member, or a missing CDIV, is InternalException.
func TestCheckCDIVRefuses(t *testing.T) {
	req, reply, _ := specVector(t)
	flip := func(b []byte, old, repl string) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%q not in %s", old, b)
		}
		return bytes.Replace(b, []byte(old), []byte(repl), 1)
	}
	noCM := flip(reply, `,"ciphertextMetadata":"a2V5X3ZlcnNpb249MQ=="`, "")
	cases := []struct {
		name       string
		req, reply []byte
	}{
		{"cdiv", req, flip(reply, "qHA/", "qHB/")},
		{"ciphertext", req, flip(reply, "ghxkK1tx", "ghxkK1ty")},
		{"iv", req, flip(reply, "HMrlRw85", "HMrlRw86")},
		{"tag", req, flip(reply, "vBxN2ncH", "vBxN2ncI")},
		{"metadata dropped", req, noCM},
		{"aad differs", flip(req, "cHJvamVjdD1uaWxl", "cHJvamVjdD1uaWxm"), reply},
		{"aad absent", flip(req, `"additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",`, ""), reply},
		{"no cdiv", req, flip(reply, `,"ciphertextDataIntegrityValue":"qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="`, "")},
		{"cdiv too short", req, flip(reply, "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=", "qHA/ImC9")},
		{"reply not JSON", req, []byte("{")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCDIV(tc.req, tc.reply)
			if NameOf(err) != InternalException {
				t.Fatalf("err %v", err)
			}
			if strings.Contains(err.Error(), "qHA") || strings.Contains(err.Error(), "ghxk") {
				t.Fatalf("message echoes a value: %v", err)
			}
		})
	}
}

// TestAppendTrialDecrypt: the trial decrypt carries the reply's ciphertext, IV, tag and
// ciphertextMetadata, the request's AAD and requestMetadata, and is a valid Decrypt request.
func TestAppendTrialDecrypt(t *testing.T) {
	req, reply, v := specVector(t)
	body, err := AppendTrialDecrypt([]byte("prefix"), req, reply, v.Metadata)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(body, []byte("prefix")) {
		t.Fatal("dst not appended to")
	}
	body = body[len("prefix"):]
	dv, err := Validate(OpDecrypt, body, Limits{})
	if err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if dv.Metadata != v.Metadata || dv.PayloadLen != 12 || dv.AADLen != 33 {
		t.Fatalf("validated %+v", dv)
	}
	var d DecryptRequest
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	if string(d.AdditionalAuthenticatedData) != "project=nile,department=marketing" || string(d.CiphertextMetadata) != "key_version=1" ||
		base64.StdEncoding.EncodeToString(d.Ciphertext) != "ghxkK1txeDNn3q8Y" || base64.StdEncoding.EncodeToString(d.InitializationVector) != "HMrlRw85cAJUd5Ax" ||
		base64.StdEncoding.EncodeToString(d.AuthenticationTag) != "vBxN2ncH1oEkR8WVXpmyYQ==" || d.EncryptionAlgorithm != AlgorithmAESGCM ||
		d.RequestMetadata.KMSViaService != "ebs" || d.RequestMetadata.KMSOperation != "Encrypt" {
		t.Fatalf("trial decrypt %+v", d)
	}
	// Without AAD and ciphertextMetadata, neither member is sent.
	req2 := []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`)
	reply2 := []byte(`{"ciphertext":"ghxkK1txeDNn3q8Y","initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ=="}`)
	body2, err := AppendTrialDecrypt(nil, req2, reply2, RequestMetadata{AWSPrincipalArn: "a", KMSKeyArn: "k", KMSOperation: "Encrypt", KMSRequestID: "1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"1"},"ciphertext":"ghxkK1txeDNn3q8Y","encryptionAlgorithm":"AES_GCM","initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ=="}`
	if string(body2) != want {
		t.Fatalf("got  %s\nwant %s", body2, want)
	}
}

func TestSamePlaintext(t *testing.T) {
	req, _, _ := specVector(t)
	escaped := []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"1"},"plaintext":"ab\/+","encryptionAlgorithm":"AES_GCM"}`)
	for _, tc := range []struct {
		name       string
		req, reply []byte
		want       bool
	}{
		{"same", req, []byte(`{"plaintext":"SGVsbG8gV29ybGQh"}`), true},
		{"other", req, []byte(`{"plaintext":"SGVsbG8gV29ybGQi"}`), false},
		{"shorter", req, []byte(`{"plaintext":"SGVsbG8gV29y"}`), false},
		{"missing", req, []byte(`{}`), false},
		{"escaped in the request", escaped, []byte(`{"plaintext":"ab/+"}`), true},
		{"escaped in the reply", escaped, []byte(`{"plaintext":"ab\/+"}`), true},
		{"escaped, other", escaped, []byte(`{"plaintext":"ab/-"}`), false},
		{"not JSON", req, []byte(`{"plaintext":`), false},
	} {
		if got := SamePlaintext(tc.req, tc.reply); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
