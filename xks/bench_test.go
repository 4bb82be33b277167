package xks

import (
	"encoding/json"
	"testing"
)

func benchBodies() []struct {
	name string
	body []byte
} {
	return []struct {
		name string
		body []byte
	}{
		{"encrypt32", []byte(obj(encKVs(32)...))},
		{"encrypt4300", []byte(obj(encKVs(4300)...))},
		{"encrypt4300aad8192", []byte(obj(with(encKVs(4300), "additionalAuthenticatedData", q(b64n(8192)))...))},
	}
}

func BenchmarkValidate(b *testing.B) {
	lim := DefaultLimits()
	for _, bb := range benchBodies() {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Validate(OpEncrypt, bb.body, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	dec := []byte(obj(decKVs(4300)...))
	b.Run("decrypt4300", func(b *testing.B) {
		b.SetBytes(int64(len(dec)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Validate(OpDecrypt, dec, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkJSONUnmarshal is the baseline: encoding/json into the wire type, base64 decoded.
func BenchmarkJSONUnmarshal(b *testing.B) {
	for _, bb := range benchBodies() {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				var r EncryptRequest
				if err := json.Unmarshal(bb.body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJSONUnmarshalMetadataOnly decodes only requestMetadata with encoding/json.
func BenchmarkJSONUnmarshalMetadataOnly(b *testing.B) {
	for _, bb := range benchBodies() {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(bb.body)))
			b.ReportAllocs()
			for b.Loop() {
				var r struct {
					RequestMetadata RequestMetadata `json:"requestMetadata"`
				}
				if err := json.Unmarshal(bb.body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkNormalizeResponse(b *testing.B) {
	for _, n := range []int{32, 4300} {
		body := []byte(`{"ciphertext":"` + b64n(n) + `","ciphertextMetadata":null,"initializationVector":"` + b64n(12) +
			`","authenticationTag":"` + b64n(16) + `","ciphertextDataIntegrityValue":null}`)
		v := Validated{Op: OpEncrypt, PayloadLen: n}
		name := "encrypt32"
		if n > 32 {
			name = "encrypt4300"
		}
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 8192)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				st, out, err := NormalizeResponse(dst[:0], OpEncrypt, 200, body, v)
				if err != nil || st != 200 || len(out) == 0 {
					b.Fatal(st, err)
				}
			}
		})
	}
	b.Run("error418", func(b *testing.B) {
		body := []byte(`{"errorName":"KeyNotFoundException","errorMessage":"Item not found: k1"}`)
		dst := make([]byte, 0, 512)
		b.ReportAllocs()
		for b.Loop() {
			st, _, _ := NormalizeResponse(dst[:0], OpEncrypt, 418, body, Validated{})
			if st != 404 {
				b.Fatal(st)
			}
		}
	})
}
