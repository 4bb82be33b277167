package loadgen

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

const (
	testRegion = "eu-west-1"
	testAKID   = "AKIDLOADGENTEST23456"
	testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"
)

// BenchmarkRequestBuild measures the generator's own CPU per request before the network:
// choosing the operation, building the body, creating and signing the http.Request.
func BenchmarkRequestBuild(b *testing.B) {
	r, err := New(Config{Endpoint: "https://xks.example.com", Prefix: "/aws", Region: testRegion,
		Credential: sigv4.Credential{AccessKeyID: testAKID, Secret: testSecret}, Keys: []string{"k1"}})
	if err != nil {
		b.Fatal(err)
	}
	k := (*r.keys.Load())[0]
	for _, size := range []int{32, 4300} {
		b.Run("body/"+itoa(size), func(b *testing.B) {
			w := r.newWorker(1)
			b.ReportAllocs()
			for b.Loop() {
				w.pt = fillRandom(w.rng, w.pt[:0], size)
				w.aad = fillRandom(w.rng, w.aad[:0], w.rng.IntN(65))
				m := r.metadata(w, k, "GenerateDataKey")
				w.body = appendEncryptBody(w.body[:0], &m, w.pt, w.aad, false)
			}
		})
		b.Run("body+sign/"+itoa(size), func(b *testing.B) {
			w := r.newWorker(1)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				w.pt = fillRandom(w.rng, w.pt[:0], size)
				w.aad = fillRandom(w.rng, w.aad[:0], w.rng.IntN(65))
				m := r.metadata(w, k, "GenerateDataKey")
				w.body = appendEncryptBody(w.body[:0], &m, w.pt, w.aad, false)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url(w, k.id, "/encrypt"), bytes.NewReader(w.body))
				if err != nil {
					b.Fatal(err)
				}
				if err := r.ep.signer.Sign(ctx, req, w.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("parseEncryptReply", func(b *testing.B) {
		w := r.newWorker(1)
		w.pt = make([]byte, 32)
		reply := []byte(`{"ciphertext":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","initializationVector":"AAAAAAAAAAAAAAAA","authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA=="}`)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := r.parseEncrypt(w, "k1", reply); !ok {
				b.Fatal("parse failed")
			}
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	r, err := New(Config{Endpoint: "https://xks.example.com", Region: testRegion,
		Credential: sigv4.Credential{AccessKeyID: testAKID, Secret: testSecret}, Keys: []string{"k1"}})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	r.started.Store(&now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(1, 2))
		for pb.Next() {
			r.finish(opEncrypt, now, time.Duration(rng.Int64N(1e7)), 0)
		}
	})
}

func itoa(n int) string {
	return string(rune('0'+n/1000%10)) + string(rune('0'+n/100%10)) + string(rune('0'+n/10%10)) + string(rune('0'+n%10))
}
