package xks

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// kv is one JSON member with its raw JSON value.
type kv struct{ k, v string }

func obj(kvs ...kv) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range kvs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + m.k + `":` + m.v)
	}
	b.WriteByte('}')
	return b.String()
}

// with returns kvs with member k set to raw v (replaced in place, or appended).
func with(kvs []kv, k, v string) []kv {
	out := append([]kv(nil), kvs...)
	for i := range out {
		if out[i].k == k {
			out[i].v = v
			return out
		}
	}
	return append(out, kv{k, v})
}

// without returns kvs without member k.
func without(kvs []kv, k string) []kv {
	var out []kv
	for _, m := range kvs {
		if m.k != k {
			out = append(out, m)
		}
	}
	return out
}

func q(s string) string { return `"` + s + `"` }

// b64n is the base64 of n bytes of a fixed pattern.
func b64n(n int) string {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return base64.StdEncoding.EncodeToString(p)
}

const (
	testPrincipal = "arn:aws:iam::123456789012:user/Alice"
	testKeyArn    = "arn:aws:kms:us-east-1:123456789012:key/a1b2c3d4-5678-90ab-cdef-EXAMPLE11111"
	testRequestID = "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
)

func metaKVs(op string) []kv {
	return []kv{
		{"awsPrincipalArn", q(testPrincipal)},
		{"kmsKeyArn", q(testKeyArn)},
		{"kmsOperation", q(op)},
		{"kmsRequestId", q(testRequestID)},
		{"kmsViaService", q("ebs")},
	}
}

func healthMetaKVs() []kv {
	return []kv{{"kmsRequestId", q(testRequestID)}, {"kmsOperation", q("KmsHealthCheck")}}
}

func encKVs(n int) []kv {
	return []kv{
		{"requestMetadata", obj(metaKVs("Encrypt")...)},
		{"plaintext", q(b64n(n))},
		{"encryptionAlgorithm", q("AES_GCM")},
		{"additionalAuthenticatedData", q(b64n(33))},
	}
}

func decKVs(n int) []kv {
	return []kv{
		{"requestMetadata", obj(metaKVs("Decrypt")...)},
		{"ciphertext", q(b64n(n))},
		{"encryptionAlgorithm", q("AES_GCM")},
		{"initializationVector", q(b64n(12))},
		{"authenticationTag", q(b64n(16))},
		{"ciphertextMetadata", q(b64n(13))},
		{"additionalAuthenticatedData", q(b64n(33))},
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
