package xks

import (
	"errors"
	"strings"
	"testing"
)

type vcase struct {
	name     string
	op       Operation
	body     string
	wantErr  ErrorName // "" = accepted
	wantText string    // substring of the error message
}

func runValidateCases(t *testing.T, cases []vcase, lim Limits) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Validate(tc.op, []byte(tc.body), lim)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if v.Op != tc.op {
					t.Errorf("Op = %v, want %v", v.Op, tc.op)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error %s", err, tc.wantErr)
			}
			if e.Name != tc.wantErr {
				t.Fatalf("Name = %s (%v), want %s", e.Name, err, tc.wantErr)
			}
			if !strings.Contains(e.Message, tc.wantText) {
				t.Errorf("Message = %q, want it to contain %q", e.Message, tc.wantText)
			}
		})
	}
}

func TestValidateRequiredMembers(t *testing.T) {
	var cases []vcase
	// Every required requestMetadata member, per operation.
	for _, c := range []struct {
		op   Operation
		kvs  []kv
		meta []kv
		req  []string
	}{
		{OpHealth, nil, healthMetaKVs(), []string{"kmsRequestId", "kmsOperation"}},
		{OpMetadata, nil, without(metaKVs("CreateKey"), "kmsKeyArn"), []string{"awsPrincipalArn", "kmsOperation", "kmsRequestId"}},
		{OpEncrypt, encKVs(32), metaKVs("Encrypt"), []string{"awsPrincipalArn", "kmsOperation", "kmsRequestId", "kmsKeyArn"}},
		{OpDecrypt, decKVs(32), metaKVs("Decrypt"), []string{"awsPrincipalArn", "kmsOperation", "kmsRequestId", "kmsKeyArn"}},
	} {
		top := func(meta []kv) string {
			return obj(with(c.kvs, "requestMetadata", obj(meta...))...)
		}
		cases = append(cases, vcase{c.op.String() + "/complete", c.op, top(c.meta), "", ""})
		cases = append(cases, vcase{c.op.String() + "/no requestMetadata", c.op, obj(without(c.kvs, "requestMetadata")...), ValidationException, "missing requestMetadata"})
		cases = append(cases, vcase{c.op.String() + "/null requestMetadata", c.op, obj(with(c.kvs, "requestMetadata", "null")...), ValidationException, "missing requestMetadata"})
		cases = append(cases, vcase{c.op.String() + "/empty requestMetadata", c.op, top(nil), ValidationException, "missing requestMetadata."})
		cases = append(cases, vcase{c.op.String() + "/requestMetadata not an object", c.op, obj(with(c.kvs, "requestMetadata", `"x"`)...), ValidationException, "requestMetadata must be an object"})
		for _, r := range c.req {
			cases = append(cases,
				vcase{c.op.String() + "/missing " + r, c.op, top(without(c.meta, r)), ValidationException, "missing requestMetadata." + r},
				vcase{c.op.String() + "/null " + r, c.op, top(with(c.meta, r, "null")), ValidationException, "missing requestMetadata." + r},
				vcase{c.op.String() + "/empty " + r, c.op, top(with(c.meta, r, `""`)), "", ""},
				vcase{c.op.String() + "/number " + r, c.op, top(with(c.meta, r, `1`)), ValidationException, "requestMetadata." + r + " must be a string"},
			)
		}
	}
	for _, r := range []string{"plaintext", "encryptionAlgorithm"} {
		cases = append(cases, vcase{"Encrypt/missing " + r, OpEncrypt, obj(without(encKVs(32), r)...), ValidationException, "missing " + r})
	}
	for _, r := range []string{"ciphertext", "encryptionAlgorithm", "initializationVector", "authenticationTag"} {
		cases = append(cases, vcase{"Decrypt/missing " + r, OpDecrypt, obj(without(decKVs(32), r)...), ValidationException, "missing " + r})
		cases = append(cases, vcase{"Decrypt/null " + r, OpDecrypt, obj(with(decKVs(32), r, "null")...), ValidationException, "missing " + r})
	}
	for _, o := range []string{"additionalAuthenticatedData", "ciphertextDataIntegrityValueAlgorithm"} {
		cases = append(cases, vcase{"Encrypt/without optional " + o, OpEncrypt, obj(without(encKVs(32), o)...), "", ""})
	}
	for _, o := range []string{"additionalAuthenticatedData", "ciphertextMetadata"} {
		cases = append(cases, vcase{"Decrypt/without optional " + o, OpDecrypt, obj(without(decKVs(32), o)...), "", ""})
		cases = append(cases, vcase{"Decrypt/null optional " + o, OpDecrypt, obj(with(decKVs(32), o, "null")...), "", ""})
	}
	runValidateCases(t, cases, DefaultLimits())
}

func TestValidateSizes(t *testing.T) {
	lim := Limits{MaxPayload: 6144, MaxAAD: 8192}
	enc := func(k string, n int) string { return obj(with(encKVs(32), k, q(b64n(n)))...) }
	dec := func(k string, n int) string { return obj(with(decKVs(32), k, q(b64n(n)))...) }
	cases := []vcase{
		{"plaintext 1", OpEncrypt, enc("plaintext", 1), "", ""},
		{"plaintext 0", OpEncrypt, enc("plaintext", 0), ValidationException, "plaintext is empty"},
		{"plaintext spec minimum 4300", OpEncrypt, enc("plaintext", 4300), "", ""},
		{"plaintext at limit", OpEncrypt, enc("plaintext", 6144), "", ""},
		{"plaintext one past limit", OpEncrypt, enc("plaintext", 6145), UnsupportedOperationException, "plaintext larger than 6144"},
		{"aad 0", OpEncrypt, enc("additionalAuthenticatedData", 0), "", ""},
		{"aad at limit", OpEncrypt, enc("additionalAuthenticatedData", 8192), "", ""},
		{"aad one past limit", OpEncrypt, enc("additionalAuthenticatedData", 8193), UnsupportedOperationException, "additionalAuthenticatedData larger than 8192"},
		{"ciphertext 0", OpDecrypt, dec("ciphertext", 0), ValidationException, "ciphertext is empty"},
		{"ciphertext at limit", OpDecrypt, dec("ciphertext", 6144), "", ""},
		{"ciphertext one past limit", OpDecrypt, dec("ciphertext", 6145), UnsupportedOperationException, "ciphertext larger than 6144"},
		{"decrypt aad at limit", OpDecrypt, dec("additionalAuthenticatedData", 8192), "", ""},
		{"decrypt aad one past limit", OpDecrypt, dec("additionalAuthenticatedData", 8193), UnsupportedOperationException, "additionalAuthenticatedData"},
		{"cm 0", OpDecrypt, dec("ciphertextMetadata", 0), "", ""},
		{"cm 20", OpDecrypt, dec("ciphertextMetadata", 20), "", ""},
		{"cm 21", OpDecrypt, dec("ciphertextMetadata", 21), ValidationException, "ciphertextMetadata longer than 20"},
		{"tag 16", OpDecrypt, dec("authenticationTag", 16), "", ""},
		{"tag 15", OpDecrypt, dec("authenticationTag", 15), ValidationException, "authenticationTag must be 16"},
		{"tag 17", OpDecrypt, dec("authenticationTag", 17), ValidationException, "authenticationTag must be 16"},
		{"tag 0", OpDecrypt, dec("authenticationTag", 0), ValidationException, "authenticationTag must be 16"},
		// Missing members are reported before unsupported sizes.
		{"missing wins over size", OpEncrypt, obj(with(without(encKVs(32), "encryptionAlgorithm"), "plaintext", q(b64n(7000)))...), ValidationException, "missing encryptionAlgorithm"},
		{"invalid wins over size", OpEncrypt, obj(with(with(encKVs(32), "encryptionAlgorithm", q("AES_CBC")), "plaintext", q(b64n(7000)))...), ValidationException, "encryptionAlgorithm"},
	}
	for _, n := range []int{12, 16} {
		cases = append(cases, vcase{"iv ok " + itoa(n), OpDecrypt, dec("initializationVector", n), "", ""})
	}
	for _, n := range []int{0, 11, 13, 15, 17, 32} {
		cases = append(cases, vcase{"iv bad " + itoa(n), OpDecrypt, dec("initializationVector", n), ValidationException, "initializationVector must be 12 or 16"})
	}
	// String bounds: 2048 characters accepted, 2049 refused; multi-byte characters count once.
	long := strings.Repeat("a", 2048)
	cases = append(cases,
		vcase{"arn 2048", OpEncrypt, obj(with(encKVs(32), "requestMetadata", obj(with(metaKVs("Encrypt"), "awsPrincipalArn", q(long))...))...), "", ""},
		vcase{"arn 2049", OpEncrypt, obj(with(encKVs(32), "requestMetadata", obj(with(metaKVs("Encrypt"), "kmsKeyArn", q(long+"b"))...))...), ValidationException, "requestMetadata.kmsKeyArn longer than 2048"},
		vcase{"arn 2048 runes", OpEncrypt, obj(with(encKVs(32), "requestMetadata", obj(with(metaKVs("Encrypt"), "awsPrincipalArn", q(strings.Repeat("é", 2048)))...))...), "", ""},
		vcase{"request id 2049", OpEncrypt, obj(with(encKVs(32), "requestMetadata", obj(with(metaKVs("Encrypt"), "kmsRequestId", q(long+"b"))...))...), ValidationException, "kmsRequestId"},
	)
	runValidateCases(t, cases, lim)

	t.Run("larger limits", func(t *testing.T) {
		big := Limits{MaxPayload: 65536, MaxAAD: 16384}
		if _, err := Validate(OpEncrypt, []byte(enc("plaintext", 65536)), big); err != nil {
			t.Fatal(err)
		}
		if _, err := Validate(OpEncrypt, []byte(enc("plaintext", 65537)), big); NameOf(err) != UnsupportedOperationException {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("limits below spec minimum are raised", func(t *testing.T) {
		small := Limits{MaxPayload: 100, MaxAAD: 100, MaxBody: 100}
		if _, err := Validate(OpEncrypt, []byte(obj(with(with(encKVs(32), "plaintext", q(b64n(4300))), "additionalAuthenticatedData", q(b64n(8192)))...)), small); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("body larger than MaxBody", func(t *testing.T) {
		body := obj(with(encKVs(32), "junk", q(strings.Repeat("x", DefaultLimits().MaxBody)))...)
		_, err := Validate(OpEncrypt, []byte(body), DefaultLimits())
		if NameOf(err) != UnsupportedOperationException {
			t.Fatalf("err = %v", err)
		}
	})
}

func itoa(n int) string {
	return strings.TrimLeft(string([]byte{byte('0' + n/10), byte('0' + n%10)}), "0")
}

func TestValidateFormat(t *testing.T) {
	encP := func(v string) string { return obj(with(encKVs(32), "plaintext", v)...) }
	cases := []vcase{
		{"url-safe base64", OpEncrypt, encP(q("-_-_")), ValidationException, "plaintext is not canonical"},
		{"unpadded base64", OpEncrypt, encP(q("QUJD" + "QQ")), ValidationException, "plaintext is not canonical"},
		{"one pad of two", OpEncrypt, encP(q("QUJDQQ=")), ValidationException, "plaintext is not canonical"},
		{"three pads", OpEncrypt, encP(q("QUJDQ===")), ValidationException, "plaintext is not canonical"},
		{"pad in the middle", OpEncrypt, encP(q("QQ==QUJD")), ValidationException, "plaintext is not canonical"},
		{"non-canonical trailing bits", OpEncrypt, encP(q("QR==")), ValidationException, "plaintext is not canonical"},
		{"non-canonical trailing bits, one pad", OpEncrypt, encP(q("QUJ=")), ValidationException, "plaintext is not canonical"},
		{"whitespace inside base64", OpEncrypt, encP(q("QUJD QUJD")), ValidationException, "plaintext is not canonical"},
		{"escaped newline inside base64", OpEncrypt, encP(q(`QUJD\nQUJD`)), ValidationException, "plaintext is not canonical"},
		{"escaped slash is fine", OpEncrypt, encP(q(`\/\/\/\/`)), "", ""},
		{"unicode-escaped base64 is fine", OpEncrypt, encP(q(`\u0051UJD`)), "", ""},
		{"plaintext number", OpEncrypt, encP("12"), ValidationException, "plaintext must be a string"},
		{"plaintext array", OpEncrypt, encP(`["QUJD"]`), ValidationException, "plaintext must be a string"},
		{"wrong algorithm", OpEncrypt, obj(with(encKVs(32), "encryptionAlgorithm", q("AES_CBC"))...), ValidationException, "encryptionAlgorithm must be AES_GCM"},
		{"algorithm lower case", OpEncrypt, obj(with(encKVs(32), "encryptionAlgorithm", q("aes_gcm"))...), ValidationException, "encryptionAlgorithm must be AES_GCM"},
		{"algorithm escaped", OpEncrypt, obj(with(encKVs(32), "encryptionAlgorithm", q(`AES\u005fGCM`))...), "", ""},
		{"decrypt wrong algorithm", OpDecrypt, obj(with(decKVs(32), "encryptionAlgorithm", q(""))...), ValidationException, "encryptionAlgorithm must be AES_GCM"},
		{"cdiv SHA_256", OpEncrypt, obj(with(encKVs(32), "ciphertextDataIntegrityValueAlgorithm", q("SHA_256"))...), "", ""},
		{"cdiv null", OpEncrypt, obj(with(encKVs(32), "ciphertextDataIntegrityValueAlgorithm", "null")...), "", ""},
		{"cdiv wrong", OpEncrypt, obj(with(encKVs(32), "ciphertextDataIntegrityValueAlgorithm", q("SHA_512"))...), ValidationException, "ciphertextDataIntegrityValueAlgorithm must be SHA_256"},
		{"unknown members", OpEncrypt, obj(append(encKVs(32), kv{"futureField", `{"a":[1,2,{"b":null}],"c":true}`}, kv{"plaintextX", `"!!"`})...), "", ""},
		{"unknown metadata members", OpEncrypt, obj(with(encKVs(32), "requestMetadata", obj(append(metaKVs("Encrypt"), kv{"sourceIdentity", q("x")}, kv{"nitro", `{"pcr":[0,1]}`})...))...), "", ""},
		{"unknown kmsOperation", OpMetadata, obj(kv{"requestMetadata", obj(with(metaKVs("SomethingNew"), "kmsOperation", q("SomethingNew"))...)}), "", ""},
		{"health with extra metadata", OpHealth, obj(kv{"requestMetadata", obj(metaKVs("KmsHealthCheck")...)}), "", ""},
		{"not an object", OpEncrypt, `["requestMetadata"]`, ValidationException, "not a JSON object"},
		{"empty body", OpEncrypt, ``, ValidationException, "not a JSON object"},
		{"json null", OpHealth, `null`, ValidationException, "not a JSON object"},
		{"trailing garbage", OpEncrypt, obj(encKVs(32)...) + `x`, ValidationException, "unexpected data after"},
		{"two objects", OpEncrypt, obj(encKVs(32)...) + obj(encKVs(32)...), ValidationException, "unexpected data after"},
		{"trailing whitespace", OpEncrypt, " \n" + obj(encKVs(32)...) + "\r\n\t ", "", ""},
		{"truncated", OpEncrypt, obj(encKVs(32)...)[:100], ValidationException, "malformed JSON"},
		{"trailing comma", OpEncrypt, strings.TrimSuffix(obj(encKVs(32)...), "}") + ",}", ValidationException, "malformed JSON"},
		{"single quotes", OpHealth, `{'requestMetadata':{}}`, ValidationException, "malformed JSON"},
		{"control char in string", OpHealth, obj(kv{"requestMetadata", obj(with(healthMetaKVs(), "kmsRequestId", "\"a\x01b\"")...)}), ValidationException, "malformed JSON"},
		{"invalid utf-8 in string", OpHealth, obj(kv{"requestMetadata", obj(with(healthMetaKVs(), "kmsRequestId", "\"a\xffb\"")...)}), ValidationException, "invalid UTF-8"},
		{"bad escape", OpHealth, obj(kv{"requestMetadata", obj(with(healthMetaKVs(), "kmsRequestId", `"a\qb"`)...)}), ValidationException, "malformed JSON"},
		{"bad number in unknown", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", "01"}), ValidationException, "malformed JSON"},
		{"duplicate plaintext", OpEncrypt, obj(append(encKVs(32), kv{"plaintext", q("QUJD")})...), ValidationException, "duplicate member plaintext"},
		{"duplicate metadata member", OpHealth, obj(kv{"requestMetadata", obj(append(healthMetaKVs(), kv{"kmsRequestId", q("x")})...)}), ValidationException, "duplicate member requestMetadata.kmsRequestId"},
		{"duplicate unknown is fine", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", "1"}, kv{"x", "2"}), "", ""},
		{"deep junk within bound", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", strings.Repeat("[", 30) + strings.Repeat("]", 30)}), "", ""},
		{"deep junk beyond bound", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", strings.Repeat("[", 20000) + strings.Repeat("]", 20000)}), ValidationException, "nested deeper"},
		{"deep objects beyond bound", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)}), ValidationException, "nested deeper"},
		{"deep junk in metadata beyond bound", OpHealth, obj(kv{"requestMetadata", obj(append(healthMetaKVs(), kv{"x", strings.Repeat("[", 31) + strings.Repeat("]", 31)})...)}), ValidationException, "nested deeper"},
		{"unbalanced junk", OpHealth, obj(kv{"requestMetadata", obj(healthMetaKVs()...)}, kv{"x", "[[[]]"}), ValidationException, "malformed JSON"},
		{"case-sensitive names", OpEncrypt, obj(with(without(encKVs(32), "plaintext"), "Plaintext", q("QUJD"))...), ValidationException, "missing plaintext"},
		{"lone high surrogate", OpEncrypt, obj(with(encKVs(3), "requestMetadata", obj(with(metaKVs("Encrypt"), "kmsRequestId", q(`a\ud800b`))...))...), "ValidationException", "lone surrogate"},
		{"lone low surrogate", OpEncrypt, obj(with(encKVs(3), "requestMetadata", obj(with(metaKVs("Encrypt"), "kmsRequestId", q(`a\udc00`))...))...), "ValidationException", "lone surrogate"},
		{"escaped member name", OpEncrypt, obj(with(without(encKVs(32), "plaintext"), `pl\u0061intext`, q("QUJD"))...), "", ""},
	}
	runValidateCases(t, cases, DefaultLimits())
}

func TestValidateResult(t *testing.T) {
	meta := with(metaKVs("GenerateDataKey"), "awsSourceVpc", q("vpc-1"))
	meta = with(meta, "awsSourceVpce", q("vpce-2"))
	meta = with(meta, "kmsRequestId", q(`id-\u00e9\ud83d\ude00-\"x\"`))
	body := obj(with(with(encKVs(100), "requestMetadata", obj(meta...)), "ciphertextDataIntegrityValueAlgorithm", q("SHA_256"))...)
	v, err := Validate(OpEncrypt, []byte(body), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := Validated{
		Op: OpEncrypt,
		Metadata: RequestMetadata{
			AWSPrincipalArn: testPrincipal, KMSKeyArn: testKeyArn, KMSOperation: "GenerateDataKey",
			KMSRequestID: "id-é😀-\"x\"", AWSSourceVpc: "vpc-1", AWSSourceVpce: "vpce-2", KMSViaService: "ebs",
		},
		PayloadLen: 100, AADLen: 33, WantCDIV: true,
	}
	if v != want {
		t.Fatalf("got %+v\nwant %+v", v, want)
	}

	d, err := Validate(OpDecrypt, []byte(obj(decKVs(4300)...)), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if d.PayloadLen != 4300 || d.AADLen != 33 || d.WantCDIV || d.Metadata.KMSOperation != "Decrypt" {
		t.Fatalf("decrypt: %+v", d)
	}
	h, err := Validate(OpHealth, []byte(obj(kv{"requestMetadata", obj(healthMetaKVs()...)})), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata != (RequestMetadata{KMSRequestID: testRequestID, KMSOperation: "KmsHealthCheck"}) {
		t.Fatalf("health: %+v", h.Metadata)
	}
	if _, err := Validate(Operation(9), []byte("{}"), Limits{}); NameOf(err) != InternalException {
		t.Fatalf("unknown op: %v", err)
	}
}

// The metadata strings must not alias the body: the proxy pools and reuses body buffers.
func TestValidateDoesNotAliasBody(t *testing.T) {
	body := []byte(obj(kv{"requestMetadata", obj(healthMetaKVs()...)}))
	v, err := Validate(OpHealth, body, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if v.Metadata.KMSRequestID != testRequestID || v.Metadata.KMSOperation != "KmsHealthCheck" {
		t.Fatalf("metadata changed with the body: %+v", v.Metadata)
	}
}

// Error messages name members but never echo values.
func TestValidateMessagesDoNotEchoValues(t *testing.T) {
	secret := "U0VDUkVUU0VDUkVU" // base64 of "SECRETSECRET"
	bodies := []string{
		obj(with(encKVs(32), "plaintext", q(secret+"!"))...),
		obj(with(encKVs(32), "encryptionAlgorithm", q(secret))...),
		obj(with(encKVs(32), "ciphertextDataIntegrityValueAlgorithm", q(secret))...),
		obj(with(encKVs(32), secret, q(secret+"\x01"))...),
	}
	for i, b := range bodies {
		_, err := Validate(OpEncrypt, []byte(b), Limits{})
		if err == nil {
			t.Fatalf("body %d accepted", i)
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), secret) {
			t.Errorf("body %d: message echoes the value: %v", i, err)
		}
	}
}

func TestLimitsCheckAndSetDefaults(t *testing.T) {
	var l Limits
	if err := l.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if l != DefaultLimits() {
		t.Fatalf("defaults: %+v vs %+v", l, DefaultLimits())
	}
	for _, bad := range []Limits{{MaxPayload: 4299}, {MaxAAD: 8191}, {MaxBody: 1000}} {
		if err := bad.CheckAndSetDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	ok := Limits{MaxPayload: 4300, MaxAAD: 8192}
	if err := ok.CheckAndSetDefaults(); err != nil || ok.MaxBody < len(obj(with(encKVs(4300), "additionalAuthenticatedData", q(b64n(8192)))...)) {
		t.Fatalf("%+v: %v", ok, err)
	}
}
