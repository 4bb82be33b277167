package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// processCPU is the user+system CPU time of the whole process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type benchEnv struct {
	*env
	emu    *kmsemu.Server
	direct *http.Client
	emuURL string
	body   []byte
}

func newBenchEnv(b *testing.B, clientH2, backendH2 bool) *benchEnv {
	// Cosmian 5.26's rules, as the figures in bench/README.md were measured (the newer
	// generation, now the emulator's default, answers the direct baseline call 401).
	s, err := kmsemu.New(kmsemu.Config{
		XKS:            &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: credBackend.AccessKeyID, SecretAccessKey: credBackend.Secret},
		CosmianVersion: kmsemu.Cosmian526,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.CreateKey("admin", "k1", kmsemu.KeyOptions{Material: sharedKey}); err != nil {
		b.Fatal(err)
	}
	if err := s.GrantAccess("admin", "k1", aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
		b.Fatal(err)
	}
	run, err := s.Start("127.0.0.1:0", true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = run.Close() })
	backendTLS := &tls.Config{RootCAs: run.CertPool, MinVersion: tls.VersionTLS12}
	e := &benchEnv{env: &env{logs: newSyncBuffer()}, emu: s, emuURL: run.URL}
	e.start(b, []BackendConfig{{Name: "a", XKSURL: run.URL + "/aws", Region: "eu-west-1", Credential: credBackend, TLS: backendTLS}},
		func(c *Config) {
			c.Health.Disabled = true
			c.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil)) // the log line is part of the cost
		}, func(p *Proxy) {
			if !backendH2 {
				p.order[0].transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
		})
	if !clientH2 {
		tr := e.client.Transport.(*http.Transport)
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	e.direct = &http.Client{Transport: &http.Transport{TLSClientConfig: backendTLS, ForceAttemptHTTP2: true}}
	b.Cleanup(e.direct.CloseIdleConnections)
	e.body = encBody(make([]byte, 32), nil) // a data key: the typical Encrypt
	return e
}

func (e *benchEnv) proxied(b *testing.B) {
	st, bb := e.post(b, keysPath+"k1/encrypt", e.body)
	if st != 200 {
		b.Fatalf("status %d %s", st, bb)
	}
}

func (e *benchEnv) directCall(b *testing.B, s *sigv4.Signer) {
	req, _ := http.NewRequest(http.MethodPost, e.emuURL+"/aws/kms/xks/v1/keys/k1/encrypt", bytes.NewReader(e.body))
	if err := s.Sign(context.Background(), req, e.body); err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.direct.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("direct status %d", resp.StatusCode)
	}
}

func backendSigner(b *testing.B) *sigv4.Signer {
	s, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: credBackend, Region: "eu-west-1"})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkProxyEncrypt: TLS client → proxy → emulator backend (keep-alive, HTTP/2, 32-byte
// plaintext), sequential. proxy-cpu-µs/op is the process CPU per proxied request minus the
// process CPU per direct request (client → emulator) measured in the same run: the proxy's
// own cost (server TLS, SigV4 verify, validation, re-signing, backend client, normalisation,
// log line, metrics).
func BenchmarkProxyEncrypt(b *testing.B) {
	for _, c := range []struct {
		name                string
		clientH2, backendH2 bool
	}{{"client=h2/backend=h2", true, true}, {"client=h2/backend=h1", true, false}, {"client=h1/backend=h1", false, false}, {"client=h1/backend=h2", false, true}} {
		b.Run(c.name, func(b *testing.B) { benchProxyEncrypt(b, c.clientH2, c.backendH2) })
	}
}

// BenchmarkProxyEncryptCDIV is BenchmarkProxyEncrypt (HTTP/2 both sides) for an Encrypt that
// asks for a ciphertext data integrity value: the proxy checks it and runs a trial decrypt on
// the backend (spec Appendix C), one more backend call per request.
func BenchmarkProxyEncryptCDIV(b *testing.B) {
	b.Run("client=h2/backend=h2", func(b *testing.B) { benchProxyEncrypt(b, true, true, cdivBody(make([]byte, 32), nil)) })
}

func benchProxyEncrypt(b *testing.B, clientH2, backendH2 bool, body ...[]byte) {
	e := newBenchEnv(b, clientH2, backendH2)
	if len(body) > 0 {
		e.body = body[0]
	}
	s := backendSigner(b)
	const baseline = 3000
	for range 200 { // warm both paths
		e.directCall(b, s)
		e.proxied(b)
	}
	c0 := processCPU()
	t0 := time.Now()
	for range baseline {
		e.directCall(b, s)
	}
	directCPU := float64(processCPU()-c0) / baseline
	directWall := float64(time.Since(t0)) / baseline
	b.ReportAllocs()
	b.ResetTimer()
	c1 := processCPU()
	for b.Loop() {
		e.proxied(b)
	}
	b.StopTimer()
	cpu := float64(processCPU()-c1) / float64(b.N)
	b.ReportMetric(cpu/1e3, "cpu-µs/op")
	b.ReportMetric(directCPU/1e3, "direct-cpu-µs/op")
	b.ReportMetric((cpu-directCPU)/1e3, "proxy-cpu-µs/op")
	b.ReportMetric(directWall/1e3, "direct-µs/op")
}

// BenchmarkDirectEncrypt is the baseline alone: TLS client → emulator.
func BenchmarkDirectEncrypt(b *testing.B) {
	e := newBenchEnv(b, true, true)
	s := backendSigner(b)
	for range 200 {
		e.directCall(b, s)
	}
	b.ReportAllocs()
	b.ResetTimer()
	c0 := processCPU()
	for b.Loop() {
		e.directCall(b, s)
	}
	b.ReportMetric(float64(processCPU()-c0)/float64(b.N)/1e3, "cpu-µs/op")
}

// cannedRT answers every request with a Cosmian-style Encrypt reply (JSON nulls included).
type cannedRT struct{ body []byte }

func (c cannedRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(c.body)),
		ContentLength: int64(len(c.body)),
		Request:       r,
	}, nil
}

type discardRW struct {
	h    http.Header
	code int
}

func (d *discardRW) Header() http.Header         { return d.h }
func (d *discardRW) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardRW) WriteHeader(code int)        { d.code = code }

// BenchmarkHandlerEncrypt isolates the proxy's own work: the XKS handler in process, with an
// in-memory backend RoundTripper (no TLS, no sockets, no backend).
func BenchmarkHandlerEncrypt(b *testing.B) { benchHandlerEncrypt(b, false) }

// BenchmarkHandlerEncryptCDIV is BenchmarkHandlerEncrypt for an Encrypt with a CDIV: the check
// of the backend's value and the trial decrypt (answered in memory too).
func BenchmarkHandlerEncryptCDIV(b *testing.B) { benchHandlerEncrypt(b, true) }

// cdivRT answers an Encrypt with Cosmian's reply for 32 zero bytes under a zero IV, CDIV
// included, and a Decrypt with those 32 zero bytes.
type cdivRT struct{ enc, dec []byte }

func (c cdivRT) RoundTrip(r *http.Request) (*http.Response, error) {
	body := c.enc
	if strings.HasSuffix(r.URL.Path, "/decrypt") {
		body = c.dec
	}
	return cannedRT{body}.RoundTrip(r)
}

func benchHandlerEncrypt(b *testing.B, withCDIV bool) {
	tlsCfg, _ := selfSignedTLS(b)
	p, err := New(Config{
		TLS:      tlsCfg,
		Prefixes: []PrefixConfig{{Path: "/aws", Region: testRegion, Credentials: []sigv4.Credential{credOld}}},
		Backends: []BackendConfig{{Name: "a", XKSURL: "https://kms-a.invalid:9998/aws", Region: "eu-west-1", Credential: credBackend}},
		Route:    Route{Primary: "a"},
		Health:   HealthConfig{Disabled: true},
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	reply := []byte(`{"ciphertext":"` + b64(make([]byte, 32)) + `","ciphertextMetadata":null,"initializationVector":"` + b64(make([]byte, 12)) +
		`","authenticationTag":"` + b64(make([]byte, 16)) + `","ciphertextDataIntegrityValue":null}`)
	p.order[0].client.Transport = cannedRT{reply}
	body := encBody(make([]byte, 32), nil)
	if withCDIV {
		z32, z12, z16 := make([]byte, 32), make([]byte, 12), make([]byte, 16)
		reply = []byte(`{"ciphertext":"` + b64(z32) + `","ciphertextMetadata":null,"initializationVector":"` + b64(z12) +
			`","authenticationTag":"` + b64(z16) + `","ciphertextDataIntegrityValue":"` + b64(xks.CDIV(nil, nil, z12, z32, z16)) + `"}`)
		p.order[0].client.Transport = cdivRT{enc: reply, dec: []byte(`{"plaintext":"` + b64(z32) + `"}`)}
		body = cdivBody(z32, nil)
	}
	req, _ := http.NewRequest(http.MethodPost, "https://xks.example.com"+keysPath+"k1/encrypt", nil)
	if err := mustSigner(b, credOld, time.Now).Sign(context.Background(), req, body); err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = int64(len(body))
	h := p.Handler()
	rd := bytes.NewReader(body)
	w := &discardRW{h: http.Header{}}
	b.ReportAllocs()
	c0 := processCPU()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	b.ReportMetric(float64(processCPU()-c0)/float64(b.N)/1e3, "cpu-µs/op")
	if w.code != http.StatusOK {
		b.Fatalf("status %d", w.code)
	}
}

// BenchmarkProxyEncryptParallel is BenchmarkProxyEncrypt with 8 concurrent clients per CPU
// (closer to AWS KMS's traffic: several requests in flight), baseline measured the same way.
func BenchmarkProxyEncryptParallel(b *testing.B) {
	for _, c := range []struct {
		name     string
		clientH2 bool
	}{{"client=h2", true}, {"client=h1", false}} {
		b.Run(c.name, func(b *testing.B) {
			e := newBenchEnv(b, c.clientH2, true)
			s := backendSigner(b)
			const workers, perWorker = 8, 500
			runPar := func(f func()) {
				done := make(chan struct{})
				for range workers {
					go func() {
						defer func() { done <- struct{}{} }()
						for range perWorker {
							f()
						}
					}()
				}
				for range workers {
					<-done
				}
			}
			runPar(func() { e.directCall(b, s); e.proxied(b) }) // warm up
			c0 := processCPU()
			runPar(func() { e.directCall(b, s) })
			directCPU := float64(processCPU()-c0) / (workers * perWorker)
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			c1 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e.proxied(b)
				}
			})
			b.StopTimer()
			cpu := float64(processCPU()-c1) / float64(b.N)
			b.ReportMetric(cpu/1e3, "cpu-µs/op")
			b.ReportMetric(directCPU/1e3, "direct-cpu-µs/op")
			b.ReportMetric((cpu-directCPU)/1e3, "proxy-cpu-µs/op")
		})
	}
}

// BenchmarkLatencyAt1800 sends Encrypts open-loop at 1800 requests/s (AWS's default quota per
// key store) for 2 s directly to the emulator, then for 2 s through the proxy, and reports the
// p50/p99 of each and the p99 the proxy adds. Run it with -benchtime 1x: each run takes 4 s.
func BenchmarkLatencyAt1800(b *testing.B) {
	e := newBenchEnv(b, true, true)
	s := backendSigner(b)
	const rate, dur = 1800, 2 * time.Second
	var failed atomic.Int64
	measure := func(f func() bool) (p50, p99 time.Duration) {
		n := int(rate * dur / time.Second)
		lat := make([]time.Duration, n)
		done := make(chan struct{}, n)
		interval := time.Second / rate
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			go func() {
				defer func() { done <- struct{}{} }()
				t0 := time.Now()
				if !f() {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
			}()
		}
		for range n {
			<-done
		}
		slices.Sort(lat)
		return lat[n/2], lat[n*99/100]
	}
	for range 300 {
		e.directCall(b, s)
		e.proxied(b)
	}
	b.ResetTimer()
	for range b.N {
		d50, d99 := measure(func() bool { return e.tryDirect(s) })
		p50, p99 := measure(func() bool { st, _ := e.post(b, keysPath+"k1/encrypt", e.body); return st == 200 })
		b.ReportMetric(float64(d50.Microseconds()), "direct-p50-µs")
		b.ReportMetric(float64(d99.Microseconds()), "direct-p99-µs")
		b.ReportMetric(float64(p50.Microseconds()), "proxy-p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), "proxy-p99-µs")
		b.ReportMetric(float64((p99 - d99).Microseconds()), "added-p99-µs")
		b.ReportMetric(float64(failed.Load()), "failed")
	}
}

// tryDirect is directCall without Fatal (safe off the benchmark goroutine).
func (e *benchEnv) tryDirect(s *sigv4.Signer) bool {
	req, _ := http.NewRequest(http.MethodPost, e.emuURL+"/aws/kms/xks/v1/keys/k1/encrypt", bytes.NewReader(e.body))
	if err := s.Sign(context.Background(), req, e.body); err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.direct.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}
