package loadgen

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"testing"

	"github.com/xksproxy/xksproxy/xks"
)

func testMD() md {
	m := md{principal: "arn:aws:iam::111122223333:role/x\"y", keyArn: "arn:aws:kms:eu-west-1:111122223333:key/abc", operation: "Encrypt"}
	formatUUID(&m.requestID, 1, 2)
	return m
}

// The hand-built bodies must be what the proxy's own validator accepts and what encoding/json
// decodes to the same values.
func TestBodiesValidate(t *testing.T) {
	m := testMD()
	pt := bytes.Repeat([]byte{7}, 4300)
	aad := []byte("aad\x00\xff")
	s := &Sealed{Ciphertext: pt[:32], IV: make([]byte, 12), Tag: make([]byte, 16), CiphertextMetadata: []byte("v1"), AAD: aad}
	tests := []struct {
		name string
		op   xks.Operation
		body []byte
	}{
		{"encrypt", xks.OpEncrypt, appendEncryptBody(nil, &m, pt, aad, true)},
		{"encrypt no aad", xks.OpEncrypt, appendEncryptBody(nil, &m, pt[:32], nil, false)},
		{"decrypt", xks.OpDecrypt, appendDecryptBody(nil, &m, s)},
		{"metadata", xks.OpMetadata, appendShortBody(nil, &m)},
		{"health", xks.OpHealth, appendShortBody(nil, &md{operation: "KmsHealthCheck", requestID: m.requestID})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := xks.Validate(tc.op, tc.body, xks.DefaultLimits())
			if err != nil {
				t.Fatalf("Validate: %v\n%s", err, tc.body)
			}
			if v.Metadata.KMSRequestID != string(m.requestID[:]) || v.Metadata.KMSOperation == "" {
				t.Fatalf("metadata %+v", v.Metadata)
			}
			if tc.op == xks.OpEncrypt || tc.op == xks.OpDecrypt {
				if v.Metadata.AWSPrincipalArn != m.principal {
					t.Fatalf("principal %q", v.Metadata.AWSPrincipalArn)
				}
			}
		})
	}
	var er xks.EncryptRequest
	if err := json.Unmarshal(tests[0].body, &er); err != nil || !bytes.Equal(er.Plaintext, pt) || !bytes.Equal(er.AdditionalAuthenticatedData, aad) {
		t.Fatalf("encoding/json disagrees: %v", err)
	}
}

func TestUUIDFormat(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	rng := rand.New(rand.NewPCG(1, 1))
	seen := map[[36]byte]bool{}
	for i := 0; i < 1000; i++ {
		var u [36]byte
		formatUUID(&u, rng.Uint64(), rng.Uint64())
		if !re.Match(u[:]) || seen[u] {
			t.Fatalf("bad or repeated uuid %s", u[:])
		}
		seen[u] = true
	}
}

func TestScanObject(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		bad  bool
	}{
		{"flat", `{"ciphertext":"AAEC","authenticationTag":"x\/y"}`, map[string]string{"ciphertext": "AAEC", "authenticationTag": `x\/y`}, false},
		{"spaces and nested", " {\n \"a\" : {\"b\":[1,\"}\"]} , \"c\":\"d\", \"n\":null, \"e\":12.5e3 } ", map[string]string{"a": `{"b":[1,"}"]}`, "c": "d", "n": "null", "e": "12.5e3 "}, false},
		{"empty", `{}`, map[string]string{}, false},
		{"not object", `[1]`, nil, true},
		{"unterminated", `{"a":"b`, nil, true},
		{"missing colon", `{"a" "b"}`, nil, true},
		{"trailing comma", `{"a":"b",}`, nil, true},
		{"unbalanced", `{"a":{"b":1}`, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			err := scanObject([]byte(tc.in), func(k, v []byte, _ bool) { got[string(k)] = string(v) })
			if (err != nil) != tc.bad {
				t.Fatalf("err = %v, want bad=%v", err, tc.bad)
			}
			if tc.bad {
				return
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestDecodeB64(t *testing.T) {
	raw := []byte{0xfb, 0xff, 0xbf, 1, 2}
	enc := base64.StdEncoding.EncodeToString(raw) // contains '/' and '+'
	escaped := bytes.ReplaceAll([]byte(enc), []byte("/"), []byte(`\/`))
	for _, in := range [][]byte{[]byte(enc), escaped} {
		got, ok := decodeB64(nil, in)
		if !ok || !bytes.Equal(got, raw) {
			t.Fatalf("decodeB64(%s) = %x %v", in, got, ok)
		}
	}
	for _, in := range []string{`AA\nA`, "A", "AA=A", `\`} {
		if _, ok := decodeB64(nil, []byte(in)); ok {
			t.Errorf("decodeB64(%q) accepted", in)
		}
	}
}

func TestErrorClass(t *testing.T) {
	for in, want := range map[string]string{
		`{"errorName":"InternalException","errorMessage":"injected"}`: "InternalException",
		`{"errorMessage":"x","errorName":"ThrottlingException"}`:      "ThrottlingException",
		`{"errorName":"NoSuchThing"}`:                                 ErrUnknownError,
		`Unauthorized`:                                                ErrUnknownError,
		``:                                                            ErrUnknownError,
	} {
		if got := errorClass([]byte(in)); got != want {
			t.Errorf("errorClass(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzScanObject(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"ciphertext":"AAEC","x":[1,{"y":"]"}],"n":null}`, `{`, `{"a":`, `{"a":"\"}`, `{"a":{"b":{"c":[[[]]]}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		valid := json.Valid(b)
		var n int
		err := scanObject(b, func(k, v []byte, isString bool) {
			n++
			_, _ = decodeB64(nil, v)
		})
		// Everything encoding/json accepts as an object must scan.
		if valid && len(bytes.TrimSpace(b)) > 0 && bytes.TrimSpace(b)[0] == '{' && err != nil {
			t.Fatalf("valid object %q rejected: %v", b, err)
		}
		_ = errorClass(b)
	})
}

func FuzzParseMixSizes(f *testing.F) {
	for _, s := range []string{"encrypt=0.45,decrypt=0.45,metadata=0.09,createkey=0.01", "32:0.95,4300:0.05", "1,2,3", "x=", ":", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseMix(s); err == nil {
			for _, w := range []float64{m.Encrypt, m.Decrypt, m.Metadata, m.CreateKey} {
				if !(w >= 0) {
					t.Fatalf("ParseMix(%q) accepted weight %v", s, w)
				}
			}
		}
		if sz, err := ParseSizes(s); err == nil {
			for _, x := range sz {
				if x.Size < 1 || x.Size > maxPlaintext || !(x.Weight >= 0) {
					t.Fatalf("ParseSizes(%q) accepted %+v", s, x)
				}
			}
		}
	})
}

func TestParseMixSizes(t *testing.T) {
	m, err := ParseMix("Encrypt=1, decrypt=2,metadata=0.5,createkey=0.25")
	if err != nil || m != (Mix{1, 2, 0.5, 0.25}) {
		t.Fatalf("ParseMix = %+v, %v", m, err)
	}
	for _, bad := range []string{"encrypt", "foo=1", "encrypt=-1", "encrypt=NaN", "encrypt=Inf"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	s, err := ParseSizes("32:0.95, 4300:0.05,64")
	if err != nil || len(s) != 3 || s[0] != (SizeWeight{32, 0.95}) || s[2] != (SizeWeight{64, 1}) {
		t.Fatalf("ParseSizes = %+v, %v", s, err)
	}
	for _, bad := range []string{"", "0", "70000", "32:-1", "x:1", "32:y"} {
		if _, err := ParseSizes(bad); err == nil {
			t.Errorf("ParseSizes(%q) accepted", bad)
		}
	}
}
