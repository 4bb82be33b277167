package xks

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// Replies shaped like Cosmian KMS 5.26 (crate/server/src/routes/aws_xks): Option members
// serialised as null, XKS errors with 401/418 statuses, plain-text 401 from actix.
func TestNormalizeResponse(t *testing.T) {
	ct32, iv12, tag16 := b64n(32), b64n(12), b64n(16)
	cosmianEnc := `{"ciphertext":"` + ct32 + `","ciphertextMetadata":null,"initializationVector":"` + iv12 +
		`","authenticationTag":"` + tag16 + `","ciphertextDataIntegrityValue":null}`
	specEnc := `{"ciphertext":"` + ct32 + `","initializationVector":"` + iv12 + `","authenticationTag":"` + tag16 + `"}`
	enc := Validated{Op: OpEncrypt, PayloadLen: 32}
	encCDIV := Validated{Op: OpEncrypt, PayloadLen: 32, WantCDIV: true}
	dec := Validated{Op: OpDecrypt, PayloadLen: 32}
	cdiv := b64n(32)
	cases := []struct {
		name       string
		op         Operation
		status     int
		body       string
		v          Validated
		wantStatus int
		wantBody   string // exact, or "" to skip
		wantErr    ErrorName
		wantText   string // substring of the body
	}{
		{"cosmian encrypt with nulls", OpEncrypt, 200, cosmianEnc, enc, 200, specEnc, "", ""},
		{"encrypt whitespace and unknown members", OpEncrypt, 200, " {\n \"x\": [1, {\"y\": null}], " + specEnc[1:] + "\n", enc, 200, specEnc, "", ""},
		{"encrypt with metadata", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextMetadata":null`, `"ciphertextMetadata":"`+b64n(20)+`"`, 1), enc, 200,
			`{"ciphertext":"` + ct32 + `","initializationVector":"` + iv12 + `","authenticationTag":"` + tag16 + `","ciphertextMetadata":"` + b64n(20) + `"}`, "", ""},
		{"encrypt empty metadata dropped", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextMetadata":null`, `"ciphertextMetadata":""`, 1), enc, 200, specEnc, "", ""},
		{"encrypt metadata 21", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextMetadata":null`, `"ciphertextMetadata":"`+b64n(21)+`"`, 1), enc, 500, "", InternalException, "ciphertextMetadata"},
		{"encrypt with cdiv", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextDataIntegrityValue":null`, `"ciphertextDataIntegrityValue":"`+cdiv+`"`, 1), encCDIV, 200,
			`{"ciphertext":"` + ct32 + `","initializationVector":"` + iv12 + `","authenticationTag":"` + tag16 + `","ciphertextDataIntegrityValue":"` + cdiv + `"}`, "", ""},
		{"encrypt cdiv missing", OpEncrypt, 200, cosmianEnc, encCDIV, 500, "", InternalException, "missing ciphertextDataIntegrityValue"},
		{"encrypt cdiv 31 bytes", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextDataIntegrityValue":null`, `"ciphertextDataIntegrityValue":"`+b64n(31)+`"`, 1), encCDIV, 500, "", InternalException, "32 bytes"},
		{"encrypt unrequested cdiv dropped", OpEncrypt, 200, strings.Replace(cosmianEnc, `"ciphertextDataIntegrityValue":null`, `"ciphertextDataIntegrityValue":"`+cdiv+`"`, 1), enc, 200, specEnc, "", ""},
		{"encrypt iv 16", OpEncrypt, 201, strings.Replace(cosmianEnc, `"initializationVector":"`+iv12, `"initializationVector":"`+b64n(16), 1), enc, 200, "", "", ""},
		{"encrypt wrong iv length", OpEncrypt, 200, strings.Replace(cosmianEnc, `"initializationVector":"`+iv12, `"initializationVector":"`+b64n(13), 1), enc, 500, "", InternalException, "initializationVector"},
		{"encrypt wrong tag length", OpEncrypt, 200, strings.Replace(cosmianEnc, `"authenticationTag":"`+tag16, `"authenticationTag":"`+b64n(15), 1), enc, 500, "", InternalException, "authenticationTag"},
		{"encrypt ciphertext length differs", OpEncrypt, 200, cosmianEnc, Validated{Op: OpEncrypt, PayloadLen: 33}, 500, "", InternalException, "ciphertext length"},
		{"encrypt length unknown", OpEncrypt, 200, cosmianEnc, Validated{Op: OpEncrypt}, 200, specEnc, "", ""},
		{"encrypt missing tag", OpEncrypt, 200, `{"ciphertext":"` + ct32 + `","initializationVector":"` + iv12 + `"}`, enc, 500, "", InternalException, "missing authenticationTag"},
		{"encrypt bad base64", OpEncrypt, 200, strings.Replace(cosmianEnc, ct32, "-_"+ct32[2:], 1), enc, 500, "", InternalException, "ciphertext is not canonical"},
		{"encrypt escaped base64 rewritten", OpEncrypt, 200, strings.Replace(specEnc, `"initializationVector":"`+iv12, `"initializationVector":"\u0041AAAAAAAAAAAAAAA`, 1), enc, 200,
			strings.Replace(specEnc, `"initializationVector":"`+iv12, `"initializationVector":"AAAAAAAAAAAAAAAA`, 1), "", ""},
		{"encrypt duplicate member", OpEncrypt, 200, strings.TrimSuffix(specEnc, "}") + `,"ciphertext":"` + ct32 + `"}`, enc, 500, "", InternalException, "not a valid JSON"},
		{"encrypt trailing data", OpEncrypt, 200, specEnc + "{}", enc, 500, "", InternalException, "not a valid JSON"},
		{"decrypt", OpDecrypt, 200, `{"plaintext":"` + ct32 + `"}`, dec, 200, `{"plaintext":"` + ct32 + `"}`, "", ""},
		{"decrypt wrong length", OpDecrypt, 200, `{"plaintext":"` + b64n(31) + `"}`, dec, 500, "", InternalException, "plaintext length"},
		{"decrypt null plaintext", OpDecrypt, 200, `{"plaintext":null}`, dec, 500, "", InternalException, "missing plaintext"},
		{"cosmian metadata", OpMetadata, 200, `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}`, Validated{Op: OpMetadata}, 200,
			`{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}`, "", ""},
		{"metadata with nulls and unknowns", OpMetadata, 200, `{"keySpec":"AES_256","x":null,"keyUsage":["ENCRYPT",null,"DECRYPT"],"keyStatus":"DISABLED","y":1}`, Validated{}, 200,
			`{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"DISABLED"}`, "", ""},
		{"metadata bad status", OpMetadata, 200, `{"keySpec":"AES_256","keyUsage":["ENCRYPT"],"keyStatus":"PENDING"}`, Validated{}, 500, "", InternalException, "keyStatus"},
		{"metadata empty usage", OpMetadata, 200, `{"keySpec":"AES_256","keyUsage":[],"keyStatus":"ENABLED"}`, Validated{}, 500, "", InternalException, "keyUsage"},
		{"metadata 11 usages", OpMetadata, 200, `{"keySpec":"AES_256","keyUsage":["A","B","C","D","E","F","G","H","I","J","K"],"keyStatus":"ENABLED"}`, Validated{}, 500, "", InternalException, "keyUsage"},
		{"metadata missing spec", OpMetadata, 200, `{"keySpec":null,"keyUsage":["ENCRYPT"],"keyStatus":"ENABLED"}`, Validated{}, 500, "", InternalException, "missing keySpec"},
		{"cosmian health", OpHealth, 200, `{"xksProxyFleetSize":1,"xksProxyVendor":"Cosmian","xksProxyModel":"Cosmian KMS 5.26.0","ekmVendor":"Cosmian","ekmFleetDetails":[{"id":"1","model":"Cosmian KMS 5.26.0","healthStatus":"ACTIVE"}]}`, Validated{}, 200,
			`{"xksProxyFleetSize":1,"xksProxyVendor":"Cosmian","xksProxyModel":"Cosmian KMS 5.26.0","ekmVendor":"Cosmian","ekmFleetDetails":[{"id":"1","model":"Cosmian KMS 5.26.0","healthStatus":"ACTIVE"}]}`, "", ""},
		{"health fleet 0", OpHealth, 200, `{"xksProxyFleetSize":0,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e","ekmFleetDetails":[{"id":"1","model":"m","healthStatus":"ACTIVE"}]}`, Validated{}, 500, "", InternalException, "xksProxyFleetSize"},
		{"health fleet 1.5", OpHealth, 200, `{"xksProxyFleetSize":1.5,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e","ekmFleetDetails":[{"id":"1","model":"m","healthStatus":"ACTIVE"}]}`, Validated{}, 500, "", InternalException, ""},
		{"health no ekm", OpHealth, 200, `{"xksProxyFleetSize":1,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e","ekmFleetDetails":[]}`, Validated{}, 500, "", InternalException, "ekmFleetDetails"},
		{"health bad status", OpHealth, 200, `{"xksProxyFleetSize":1,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e","ekmFleetDetails":[{"id":"1","model":"m","healthStatus":"OK"}]}`, Validated{}, 500, "", InternalException, "healthStatus"},
		{"health missing vendor", OpHealth, 200, `{"xksProxyFleetSize":1,"xksProxyModel":"m","ekmVendor":"e","ekmFleetDetails":[{"id":"1","model":"m","healthStatus":"ACTIVE"}]}`, Validated{}, 500, "", InternalException, "xksProxyVendor"},

		// Error replies.
		{"cosmian 401 validation", OpEncrypt, 401, `{"errorName":"ValidationException","errorMessage":"JSON deserialize error: missing field"}`, enc, 400,
			`{"errorName":"ValidationException","errorMessage":"JSON deserialize error: missing field"}`, ValidationException, ""},
		{"cosmian 401 invalid ciphertext", OpDecrypt, 401, `{"errorName":"InvalidCiphertextException","errorMessage":"decryption failed"}`, dec, 400, "", InvalidCiphertextException, "decryption failed"},
		{"cosmian 401 invalid state", OpDecrypt, 401, `{"errorName":"InvalidStateException"}`, dec, 400, `{"errorName":"InvalidStateException"}`, InvalidStateException, ""},
		{"cosmian 418 key not found", OpEncrypt, 418, `{"errorName":"KeyNotFoundException","errorMessage":"Item not found: k1"}`, enc, 404, "", KeyNotFoundException, "Item not found"},
		{"501 unsupported", OpMetadata, 501, `{"errorName":"UnsupportedOperationException","errorMessage":null}`, Validated{}, 501, `{"errorName":"UnsupportedOperationException"}`, UnsupportedOperationException, ""},
		{"429 throttling", OpEncrypt, 429, `{"errorName":"ThrottlingException","errorMessage":7}`, enc, 429, `{"errorName":"ThrottlingException"}`, ThrottlingException, ""},
		{"message sanitised", OpEncrypt, 400, `{"errorName":"InvalidKeyUsageException","errorMessage":"bad\u0000key é\n\"q\""}`, enc, 400,
			`{"errorName":"InvalidKeyUsageException","errorMessage":"bad?key ??\"q\""}`, InvalidKeyUsageException, ""},
		{"backend auth failure", OpEncrypt, 401, `{"errorName":"AuthenticationFailedException","errorMessage":"Signature v4 verification failed"}`, enc, 500, "", InternalException, "AuthenticationFailedException (HTTP 401)"},
		{"backend bad path", OpEncrypt, 404, `{"errorName":"InvalidUriPathException"}`, enc, 500, "", InternalException, "InvalidUriPathException"},
		{"cosmian 401 plain text", OpEncrypt, 401, `Credential must be AKID/yyyymmdd/region/service/aws4_request`, enc, 500,
			`{"errorName":"InternalException","errorMessage":"key manager refused the proxy's request with AuthenticationFailedException (HTTP 401); check the proxy's backend configuration"}`, InternalException, ""},
		{"html body", OpEncrypt, 502, `<html><body><h1>502 Bad Gateway</h1></body></html>`, enc, 500, "", InternalException, "HTTP 502"},
		{"empty body", OpEncrypt, 500, ``, enc, 500, "", InternalException, "HTTP 500"},
		{"unknown name", OpEncrypt, 400, `{"errorName":"SomethingException","errorMessage":"secret-ish"}`, enc, 500, "", InternalException, "not understood"},
		{"lower-case name", OpEncrypt, 400, `{"errorName":"validationexception"}`, enc, 500, "", InternalException, "not understood"},
		{"missing name", OpEncrypt, 400, `{"errorMessage":"x"}`, enc, 500, "", InternalException, "not understood"},
		{"2xx error body", OpEncrypt, 200, `{"errorName":"KeyNotFoundException"}`, enc, 500, "", InternalException, "missing ciphertext"},
		{"2xx empty body", OpDecrypt, 200, ``, dec, 500, "", InternalException, "not a valid JSON"},
		{"2xx html", OpHealth, 200, `<html></html>`, Validated{}, 500, "", InternalException, "not a valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("PREFIX")
			st, out, err := NormalizeResponse(prefix, tc.op, tc.status, []byte(tc.body), tc.v)
			if string(out[:6]) != "PREFIX" {
				t.Fatalf("dst not appended to: %q", out)
			}
			out = out[6:]
			if st != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %s, err %v)", st, tc.wantStatus, out, err)
			}
			if tc.wantBody != "" && string(out) != tc.wantBody {
				t.Errorf("body =\n%s\nwant\n%s", out, tc.wantBody)
			}
			if tc.wantText != "" && !strings.Contains(string(out), tc.wantText) {
				t.Errorf("body %s lacks %q", out, tc.wantText)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not JSON: %s", out)
			}
			if NameOf(err) != tc.wantErr {
				t.Errorf("err = %v, want name %q", err, tc.wantErr)
			}
			if err != nil {
				var w struct{ ErrorName, ErrorMessage string }
				if jerr := json.Unmarshal(out, &w); jerr != nil || ErrorName(w.ErrorName) != NameOf(err) || w.ErrorName == "" {
					t.Errorf("error body %s does not carry %s (%v)", out, NameOf(err), jerr)
				}
				if st != NameOf(err).Status() {
					t.Errorf("status %d is not the spec status of %s", st, NameOf(err))
				}
				if !isClean(w.ErrorMessage) {
					t.Errorf("message not sanitised: %q", w.ErrorMessage)
				}
			}
		})
	}
}

func TestNormalizeResponseWrapsBackendAuthError(t *testing.T) {
	_, _, err := NormalizeResponse(nil, OpEncrypt, 401, []byte(`{"errorName":"AuthenticationFailedException"}`), Validated{})
	if NameOf(err) != InternalException || !errors.Is(err, ErrAuthenticationFailed) || !errors.Is(err, ErrInternal) {
		t.Fatalf("err = %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.HTTPStatus != 401 {
		t.Fatalf("HTTPStatus missing: %#v", e)
	}
	// The body of an unparseable reply never reaches the message.
	_, out, _ := NormalizeResponse(nil, OpDecrypt, 500, []byte(`plaintext-leak`), Validated{})
	if strings.Contains(string(out), "leak") {
		t.Fatalf("body echoed: %s", out)
	}
}

func TestCDIVVector(t *testing.T) {
	// Spec Appendix C vector (xks-api.md §1.6, recomputed there with sha256sum).
	dec := func(s string) []byte {
		var b []byte
		if err := json.Unmarshal([]byte(`"`+s+`"`), &b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	got := CDIV([]byte("project=nile,department=marketing"), []byte("key_version=1"),
		dec("HMrlRw85cAJUd5Ax"), dec("ghxkK1txeDNn3q8Y"), dec("vBxN2ncH1oEkR8WVXpmyYQ=="))
	enc, _ := json.Marshal(got)
	if want := `"qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="`; string(enc) != want {
		t.Fatalf("CDIV = %s, want %s", enc, want)
	}
	if len(CDIV(nil, nil, nil, nil, nil)) != 32 {
		t.Fatal("CDIV length")
	}
}
