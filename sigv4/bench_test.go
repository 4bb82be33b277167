package sigv4

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func BenchmarkVerify(b *testing.B) {
	for _, tc := range []struct {
		name string
		size int
	}{{"body=600B", 600}, {"body=6KB", 6 << 10}} {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(`{"requestMetadata":{},"plaintext":"` + strings.Repeat("A", tc.size-40) + `"}`)
			v := newTestVerifier(b, fixedClock(testTime), credA, credB)
			r := httptest.NewRequest(http.MethodPost, "https://xks.example.com/example/prefix/kms/xks/v1/keys/key-1/encrypt", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			refSign(r, body, credB, "us-east-1", "kms-xks-proxy", testTime) // host;x-amz-date, as KMS signs
			if _, err := v.Verify(r, body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(r, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	body := []byte(xksBody)
	v := newTestVerifier(b, fixedClock(testTime), credA)
	r := kmsRequest(b, credA, testTime, body)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(r, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSign(b *testing.B) {
	body := []byte(xksBody)
	s, err := NewSigner(SignerConfig{Credential: credA, Region: "us-east-1", Now: fixedClock(testTime)})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "https://kms.internal:9998/kms/xks/v1/keys/key-1/encrypt", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Sign(b.Context(), r, body); err != nil {
			b.Fatal(err)
		}
	}
}
