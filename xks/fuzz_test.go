package xks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// refValidate is the straightforward reference for Validate: encoding/json into maps of raw
// members (exact, case-sensitive names; the last duplicate wins), then per-member decoding.
// It returns the error name Validate must give ("" for accepted) and the metadata.
func refValidate(op Operation, body []byte, lim Limits) (ErrorName, Validated) {
	lim = lim.effective()
	if len(body) > lim.MaxBody {
		return UnsupportedOperationException, Validated{}
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return ValidationException, Validated{}
	}
	present := func(m map[string]json.RawMessage, k string) bool {
		r, ok := m[k]
		return ok && string(r) != "null"
	}
	str := func(m map[string]json.RawMessage, k string) (string, bool) {
		var s string
		if !present(m, k) {
			return "", true
		}
		return s, json.Unmarshal(m[k], &s) == nil
	}
	// Syntax and type errors first.
	var meta map[string]json.RawMessage
	if present(top, "requestMetadata") {
		if json.Unmarshal(top["requestMetadata"], &meta) != nil {
			return ValidationException, Validated{}
		}
	}
	var md RequestMetadata
	for k, p := range map[string]*string{"awsPrincipalArn": &md.AWSPrincipalArn, "kmsKeyArn": &md.KMSKeyArn,
		"kmsOperation": &md.KMSOperation, "kmsRequestId": &md.KMSRequestID, "awsSourceVpc": &md.AWSSourceVpc,
		"awsSourceVpce": &md.AWSSourceVpce, "kmsViaService": &md.KMSViaService} {
		var ok bool
		if *p, ok = str(meta, k); !ok {
			return ValidationException, Validated{}
		}
	}
	var strs, bins []string
	var required []string
	switch op {
	case OpEncrypt:
		strs = []string{"encryptionAlgorithm", "ciphertextDataIntegrityValueAlgorithm"}
		bins = []string{"plaintext", "additionalAuthenticatedData"}
		required = []string{"plaintext", "encryptionAlgorithm"}
	case OpDecrypt:
		strs = []string{"encryptionAlgorithm"}
		bins = []string{"ciphertext", "initializationVector", "authenticationTag", "ciphertextMetadata", "additionalAuthenticatedData"}
		required = []string{"ciphertext", "encryptionAlgorithm", "initializationVector", "authenticationTag"}
	}
	sv := map[string]string{}
	for _, k := range append(strs, bins...) {
		s, ok := str(top, k)
		if !ok {
			return ValidationException, Validated{}
		}
		sv[k] = s
	}
	// Missing members.
	if meta == nil {
		return ValidationException, Validated{}
	}
	req := []string{"kmsOperation", "kmsRequestId"}
	if op != OpHealth {
		req = append(req, "awsPrincipalArn")
	}
	if op == OpEncrypt || op == OpDecrypt {
		req = append(req, "kmsKeyArn")
	}
	for _, k := range req {
		if !present(meta, k) {
			return ValidationException, Validated{}
		}
	}
	for _, k := range required {
		if !present(top, k) {
			return ValidationException, Validated{}
		}
	}
	// Invalid values.
	n := map[string]int{}
	for _, k := range bins {
		s := sv[k]
		if strings.ContainsAny(s, "\r\n") {
			return ValidationException, Validated{}
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return ValidationException, Validated{}
		}
		n[k] = len(b)
	}
	v := Validated{Op: op, Metadata: md}
	switch op {
	case OpEncrypt:
		v.PayloadLen, v.AADLen = n["plaintext"], n["additionalAuthenticatedData"]
		v.WantCDIV = present(top, "ciphertextDataIntegrityValueAlgorithm")
		if v.PayloadLen == 0 || sv["encryptionAlgorithm"] != "AES_GCM" || (v.WantCDIV && sv["ciphertextDataIntegrityValueAlgorithm"] != "SHA_256") {
			return ValidationException, Validated{}
		}
	case OpDecrypt:
		v.PayloadLen, v.AADLen = n["ciphertext"], n["additionalAuthenticatedData"]
		iv := n["initializationVector"]
		if v.PayloadLen == 0 || sv["encryptionAlgorithm"] != "AES_GCM" || (iv != 12 && iv != 16) ||
			n["authenticationTag"] != 16 || n["ciphertextMetadata"] > 20 {
			return ValidationException, Validated{}
		}
	}
	for _, s := range []string{md.AWSPrincipalArn, md.KMSKeyArn, md.KMSOperation, md.KMSRequestID, md.AWSSourceVpc, md.AWSSourceVpce, md.KMSViaService} {
		if utf8.RuneCountInString(s) > 2048 {
			return ValidationException, Validated{}
		}
	}
	if v.PayloadLen > lim.MaxPayload || v.AADLen > lim.MaxAAD {
		return UnsupportedOperationException, Validated{}
	}
	return "", v
}

func FuzzValidate(f *testing.F) {
	seeds := []string{
		obj(encKVs(32)...),
		obj(with(encKVs(5), "ciphertextDataIntegrityValueAlgorithm", q("SHA_256"))...),
		obj(decKVs(48)...),
		obj(kv{"requestMetadata", obj(healthMetaKVs()...)}),
		obj(kv{"requestMetadata", obj(without(metaKVs("CreateKey"), "kmsKeyArn")...)}),
		obj(with(encKVs(3), "plaintext", q(`\/\/\/\/`))...),
		obj(with(encKVs(3), "requestMetadata", obj(with(metaKVs("Encrypt"), "kmsRequestId", q(`\ud83d\ude00\ud800x\u00e9`))...))...),
		obj(with(decKVs(3), "x", `[{"a":[1.5e3,-0,true,false,null,"s"]}]`)...),
		`{"requestMetadata":null}`, `{}`, `[]`, `null`, ``, `{"a":1}x`,
		obj(with(decKVs(3), "initializationVector", q(b64n(13)))...),
		obj(with(encKVs(3), "plaintext", q("QR=="))...),
	}
	for _, s := range seeds {
		for _, op := range []Operation{OpHealth, OpMetadata, OpEncrypt, OpDecrypt} {
			f.Add(uint8(op), []byte(s))
		}
	}
	// Small limits make the 501 paths reachable; they are raised to the spec minimums anyway.
	lim := Limits{MaxPayload: SpecMinPayload, MaxAAD: SpecMinAAD}
	f.Fuzz(func(t *testing.T, opb uint8, body []byte) {
		op := Operation(opb%4 + 1)
		v, err := Validate(op, body, lim)
		var got ErrorName
		if err != nil {
			e, ok := err.(*Error)
			if !ok || !e.Name.Known() || !isClean(Sanitize(e.Message)) {
				t.Fatalf("bad error %T %v", err, err)
			}
			got = e.Name
			// Deliberate strictness beyond encoding/json.
			if strings.Contains(e.Message, "duplicate member") || strings.Contains(e.Message, "nested deeper") ||
				strings.Contains(e.Message, "invalid UTF-8") || strings.Contains(e.Message, "lone surrogate") {
				return
			}
		}
		if !utf8.Valid(body) {
			if err == nil {
				t.Fatalf("invalid UTF-8 accepted")
			}
			return
		}
		want, rv := refValidate(op, body, lim)
		if got != want {
			t.Fatalf("Validate = %v (%q), reference = %q\nbody %q", err, got, want, body)
		}
		if err == nil && v != rv {
			t.Fatalf("Validate = %+v\nreference %+v\nbody %q", v, rv, body)
		}
	})
}

func FuzzNormalizeResponse(f *testing.F) {
	enc := `{"ciphertext":"` + b64n(32) + `","ciphertextMetadata":null,"initializationVector":"` + b64n(12) +
		`","authenticationTag":"` + b64n(16) + `","ciphertextDataIntegrityValue":"` + b64n(32) + `"}`
	seeds := []struct {
		op     Operation
		status int
		body   string
	}{
		{OpEncrypt, 200, enc},
		{OpDecrypt, 200, `{"plaintext":"` + b64n(32) + `"}`},
		{OpMetadata, 200, `{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"],"keyStatus":"ENABLED"}`},
		{OpHealth, 200, `{"xksProxyFleetSize":1,"xksProxyVendor":"Cosmian","xksProxyModel":"Cosmian KMS 5.26.0","ekmVendor":"Cosmian","ekmFleetDetails":[{"id":"1","model":"Cosmian KMS 5.26.0","healthStatus":"ACTIVE"}]}`},
		{OpEncrypt, 401, `{"errorName":"ValidationException","errorMessage":"JSON deserialize error"}`},
		{OpEncrypt, 418, `{"errorName":"KeyNotFoundException","errorMessage":"Item not found"}`},
		{OpEncrypt, 401, `Unauthorized`},
		{OpDecrypt, 502, `<html></html>`},
		{OpDecrypt, 500, ``},
	}
	for _, s := range seeds {
		f.Add(uint8(s.op), uint16(s.status), []byte(s.body), uint16(32), true)
	}
	f.Fuzz(func(t *testing.T, opb uint8, status uint16, body []byte, plen uint16, cdiv bool) {
		op := Operation(opb%4 + 1)
		st := int(status%600) + 100
		v := Validated{Op: op, PayloadLen: int(plen % 8192), WantCDIV: cdiv}
		outStatus, out, err := NormalizeResponse([]byte("P"), op, st, body, v)
		if len(out) == 0 || out[0] != 'P' {
			t.Fatal("dst not kept")
		}
		out = out[1:]
		if !json.Valid(out) {
			t.Fatalf("output not JSON: %q", out)
		}
		if err != nil {
			var w struct {
				ErrorName    string
				ErrorMessage string
			}
			if json.Unmarshal(out, &w) != nil || ErrorName(w.ErrorName) != NameOf(err) || !NameOf(err).Known() ||
				outStatus != NameOf(err).Status() || !isClean(w.ErrorMessage) {
				t.Fatalf("error reply %d %q for %v", outStatus, out, err)
			}
			return
		}
		if outStatus != 200 || st < 200 || st > 299 {
			t.Fatalf("success with status %d from %d", outStatus, st)
		}
		// A normalised reply is a fixed point and decodes into the wire type.
		_, again, err2 := NormalizeResponse(nil, op, 200, out, v)
		if err2 != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q (%v)", out, again, err2)
		}
		var dst any
		switch op {
		case OpEncrypt:
			dst = &EncryptResponse{}
		case OpDecrypt:
			dst = &DecryptResponse{}
		case OpMetadata:
			dst = &MetadataResponse{}
		case OpHealth:
			dst = &HealthResponse{}
		}
		if err := json.Unmarshal(out, dst); err != nil {
			t.Fatalf("output does not decode: %v: %q", err, out)
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/kms/xks/v1/health", "/aws/kms/xks/v1/keys/k1/encrypt", "/kms/xks/v1/keys/a.b/metadata",
		"/x/kms/xks/v1/keys//decrypt", "/kms/xks/v1/keys/k%2F/encrypt", "//kms/xks/v1/health", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		prefix, op, keyID, ok, err := ParsePath(path)
		if !ok {
			if err != nil || prefix != "" || op != 0 || keyID != "" {
				t.Fatalf("not ok but %q %v %q %v", prefix, op, keyID, err)
			}
			return
		}
		if ValidPrefix(prefix) != nil {
			t.Fatalf("invalid prefix %q accepted", prefix)
		}
		rebuilt := prefix + APIPathSuffix + "/health"
		if op != OpHealth {
			if err != nil {
				if NameOf(err) != ValidationException || keyID != "" {
					t.Fatalf("bad key id result %q %v", keyID, err)
				}
				return
			}
			if ValidKeyID(keyID) != nil {
				t.Fatalf("invalid key id %q accepted", keyID)
			}
			rebuilt = prefix + APIPathSuffix + "/keys/" + keyID + "/" + op.pathSegment()
		}
		if err != nil || rebuilt != path {
			t.Fatalf("ParsePath(%q) = %q %v %q %v", path, prefix, op, keyID, err)
		}
	})
}

// FuzzAppendixC: whatever a backend replies to an Encrypt with a CDIV, once NormalizeResponse has
// accepted it the Appendix C helpers do not panic, and the trial decrypt they build is a valid
// Decrypt request.
func FuzzAppendixC(f *testing.F) {
	req := []byte(`{"requestMetadata":{"awsPrincipalArn":"a","kmsKeyArn":"k","kmsOperation":"Encrypt","kmsRequestId":"1"},"additionalAuthenticatedData":"YWFk","plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`)
	f.Add([]byte(`{"ciphertext":"ghxkK1txeDNn3q8Y","initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ==","ciphertextMetadata":"a2V5X3ZlcnNpb249MQ==","ciphertextDataIntegrityValue":"qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="}`), []byte(`{"plaintext":"SGVsbG8gV29ybGQh"}`))
	f.Add([]byte(`{"ciphertext":"ghxkK1txeDNn3q8Y","ciphertextMetadata":null,"initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ==","ciphertextDataIntegrityValue":"qHA\/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="}`), []byte(`{"plaintext":"SGVsbG8gV29ybGQ\/"}`))
	v, err := Validate(OpEncrypt, req, Limits{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, encReply, decReply []byte) {
		_, out, err := NormalizeResponse(nil, OpEncrypt, 200, encReply, v)
		if err != nil {
			return
		}
		_ = CheckCDIV(req, out)
		body, err := AppendTrialDecrypt(nil, req, out, v.Metadata)
		if err != nil {
			t.Fatalf("trial decrypt of an accepted reply: %v", err)
		}
		if _, err := Validate(OpDecrypt, body, Limits{}); err != nil {
			t.Fatalf("trial decrypt %s: %v", body, err)
		}
		dv := Validated{Op: OpDecrypt, PayloadLen: v.PayloadLen}
		if _, dout, err := NormalizeResponse(nil, OpDecrypt, 200, decReply, dv); err == nil {
			_ = SamePlaintext(req, dout)
		}
	})
}
