package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/sigv4"
)

// startEmu starts a TLS Cosmian emulator with keys k1, k2 usable by every principal, and
// returns a Config aimed at its XKS scope.
func startEmu(t *testing.T) (*kmsemu.Server, Config) {
	t.Helper()
	emu, err := kmsemu.New(kmsemu.Config{XKS: &kmsemu.XKSConfig{Region: testRegion, AccessKeyID: testAKID, SecretAccessKey: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k1", "k2"} {
		createEmuKey(t, emu, k)
	}
	run, err := emu.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	return emu, Config{
		Endpoint:   run.URL,
		Prefix:     "/aws",
		Region:     testRegion,
		Credential: sigv4.Credential{AccessKeyID: testAKID, Secret: testSecret},
		TLS:        &tls.Config{RootCAs: run.CertPool},
		Conns:      4,
		Workers:    8,
		Keys:       []string{"k1", "k2"},
		// Generous: -race slows both sides; timeouts are tested on purpose below.
		Timeout: 3 * time.Second,
	}
}

// createEmuKey creates an XKS key (tagged aws-xks: the newer Cosmian generation refuses the
// GetKeyMetadata "CreateKey" the generator sends over an untagged one) usable by everyone.
func createEmuKey(t testing.TB, emu *kmsemu.Server, uid string) {
	if err := emu.CreateKey("admin", uid, kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	if err := emu.GrantAccess("admin", uid, "*", "encrypt", "decrypt", "getattributes"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenLoopAgainstEmulator(t *testing.T) {
	emu, cfg := startEmu(t)
	cfg.Rate = 100
	cfg.Duration = time.Second
	cfg.Workers = 100 // room for every scheduled request, even when -race makes handshakes slow
	cfg.Record = true
	cfg.Mix = Mix{Encrypt: 0.4, Decrypt: 0.4, Metadata: 0.1, CreateKey: 0.1}
	cfg.Principals = []string{"arn:aws:iam::111122223333:role/a", "arn:aws:iam::111122223333:role/b"}
	cfg.CreateKeyPrefix = "new-%d"
	cfg.CreateKeyHook = func(ctx context.Context, id string) error {
		createEmuKey(t, emu, id)
		return nil
	}
	r, rep := runOnce(t, cfg)
	// 100 req/s for 1 s schedules exactly 100 requests; allow a little slack for a loaded box.
	if rep.Total < 90 || rep.Total > 100 {
		t.Errorf("total %d, want about 100", rep.Total)
	}
	if rep.Failed != 0 || rep.Succeeded != rep.Total || len(rep.ByError) != 0 {
		t.Fatalf("failures: %+v", rep)
	}
	// Decrypts need an earlier Encrypt of the same key to have finished; on a slow box every
	// request may be in flight before that, so Decrypt traffic is checked in the closed-loop test.
	if rep.ByOperation["Encrypt"].Count == 0 {
		t.Errorf("no Encrypt requests: %+v", rep.ByOperation)
	}
	if rep.P50 <= 0 || rep.P99 < rep.P50 || rep.Max < rep.P99 || rep.Throughput <= 0 {
		t.Errorf("implausible latencies %+v", rep)
	}
	if got := len(r.Keys()); rep.ByOperation["CreateKey"].Count > 0 && got <= 2 {
		t.Errorf("created keys not added to the pool: %v", r.Keys())
	}

	t.Run("window", func(t *testing.T) {
		all := r.Window(rep.Started, rep.Ended.Add(time.Second))
		if all.Count != rep.Total || all.Failed != 0 || all.P99 <= 0 {
			t.Fatalf("window over the run %+v, total %d", all, rep.Total)
		}
		mid := rep.Started.Add(500 * time.Millisecond)
		a, b := r.Window(rep.Started, mid), r.Window(mid, rep.Ended.Add(time.Second))
		if a.Count == 0 || b.Count == 0 || a.Count+b.Count != rep.Total {
			t.Fatalf("halves %d + %d, total %d", a.Count, b.Count, rep.Total)
		}
		if after := r.Window(rep.Ended.Add(time.Second), rep.Ended.Add(time.Hour)); after.Count != 0 {
			t.Fatalf("window after the run has %d requests", after.Count)
		}
	})

	t.Run("redecrypt", func(t *testing.T) {
		items := r.Recorded()
		if int64(len(items)) != rep.ByOperation["Encrypt"].Count {
			t.Fatalf("recorded %d, encrypts %d", len(items), rep.ByOperation["Encrypt"].Count)
		}
		ok, failed, failures, err := r.Redecrypt(context.Background(), items)
		if err != nil || ok != len(items) || failed != 0 {
			t.Fatalf("redecrypt ok=%d failed=%d %v %v", ok, failed, failures, err)
		}
		// A tampered item must fail, and the report must name the key and error only.
		bad := items[0]
		bad.Tag = bytes.Clone(bad.Tag)
		bad.Tag[0] ^= 1
		ok, failed, failures, err = r.Redecrypt(context.Background(), []Sealed{bad, items[0]})
		if err != nil || ok != 1 || failed != 1 || len(failures) != 1 {
			t.Fatalf("tampered: ok=%d failed=%d %v %v", ok, failed, failures, err)
		}
		if !strings.HasPrefix(failures[0], bad.KeyID+": ") || !strings.Contains(failures[0], "Exception") {
			t.Fatalf("failure text %q", failures[0])
		}
	})
}

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name    string
		faults  kmsemu.Faults
		timeout time.Duration
		want    string
	}{
		{"injected 500", kmsemu.Faults{ErrorRate: 1}, 0, "InternalException"},
		{"latency beyond timeout", kmsemu.Faults{Latency: 400 * time.Millisecond}, 100 * time.Millisecond, ErrClientTimeout},
		{"down", kmsemu.Faults{Down: true}, 0, ErrNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			emu, cfg := startEmu(t)
			emu.SetFaults(tc.faults)
			if tc.timeout > 0 {
				cfg.Timeout = tc.timeout
			}
			cfg.Workers = 4
			cfg.Duration = 400 * time.Millisecond
			_, rep := runOnce(t, cfg)
			if rep.Total == 0 || rep.Succeeded != 0 || rep.ByError[tc.want] != rep.Total {
				t.Fatalf("want every request counted as %s: %+v", tc.want, rep)
			}
			if tc.want == ErrClientTimeout && rep.P50 < tc.timeout {
				t.Errorf("timeouts recorded with latency %v < timeout %v", rep.P50, tc.timeout)
			}
		})
	}
}

// The emulator verifies SigV4: with the right secret nothing is refused (the tests above),
// with a wrong one everything is — so the generator's requests carry valid signatures.
func TestWrongSecretIsRejected(t *testing.T) {
	_, cfg := startEmu(t)
	cfg.Credential.Secret = strings.ToUpper(testSecret)
	cfg.Duration = 300 * time.Millisecond
	cfg.Workers = 2
	_, rep := runOnce(t, cfg)
	if rep.Total == 0 || rep.ByError["AuthenticationFailedException"] != rep.Total {
		t.Fatalf("want every request refused as AuthenticationFailedException: %+v", rep.ByError)
	}
}

func TestOpenLoopCountsDrops(t *testing.T) {
	emu, cfg := startEmu(t)
	emu.SetFaults(kmsemu.Faults{Latency: 200 * time.Millisecond})
	cfg.Rate = 100
	cfg.Workers = 1
	cfg.Duration = 500 * time.Millisecond
	_, rep := runOnce(t, cfg)
	if rep.ByError[ErrDropped] == 0 || rep.Total < rep.ByError[ErrDropped]+1 {
		t.Fatalf("want dropped_client_overload counted: %+v", rep)
	}
}

// Closed loop with one worker: requests are sequential, so Decrypts of earlier Encrypts are
// sure to happen; the run ends when ctx is cancelled.
func TestClosedLoopDecryptsUntilCancelled(t *testing.T) {
	_, cfg := startEmu(t)
	cfg.Workers = 1
	cfg.Mix = Mix{Encrypt: 0.3, Decrypt: 0.7}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if r.Snapshot().ByOperation["Decrypt"].Count >= 5 {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	rep, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ByOperation["Decrypt"].Count < 5 || rep.Failed != 0 {
		t.Fatalf("closed loop until ctx: %+v", rep)
	}
	if _, err := r.Run(ctx); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestHealthPollerDisconnected(t *testing.T) {
	emu, cfg := startEmu(t)
	cfg.Timeout = 500 * time.Millisecond
	h, err := NewHealthPoller(cfg, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); h.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	emu.SetFaults(kmsemu.Faults{Down: true})
	time.Sleep(400 * time.Millisecond)
	emu.SetFaults(kmsemu.Faults{})
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	total := time.Since(start)
	d := h.Disconnected()
	polls, bad := h.Polls()
	if d <= 0 || d >= total {
		t.Fatalf("disconnected %v of %v", d, total)
	}
	if bad == 0 || bad >= polls {
		t.Fatalf("polls %d, unavailable %d", polls, bad)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := Config{Endpoint: "https://xks.example.com", Region: testRegion, Credential: sigv4.Credential{AccessKeyID: testAKID, Secret: testSecret}, Keys: []string{"k1"}}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"endpoint path", func(c *Config) { c.Endpoint = "https://h/x" }},
		{"endpoint scheme", func(c *Config) { c.Endpoint = "ftp://h" }},
		{"no region", func(c *Config) { c.Region = "" }},
		{"bad credential", func(c *Config) { c.Credential.AccessKeyID = "short" }},
		{"no keys", func(c *Config) { c.Keys = nil }},
		{"bad key", func(c *Config) { c.Keys = []string{"a/b"} }},
		{"bad prefix", func(c *Config) { c.Prefix = "/a b" }},
		{"negative rate", func(c *Config) { c.Rate = -1 }},
		{"bad create prefix", func(c *Config) { c.CreateKeyPrefix = "new-%s" }},
		{"zero sizes", func(c *Config) { c.Sizes = []SizeWeight{{32, 0}} }},
		{"huge size", func(c *Config) { c.Sizes = []SizeWeight{{1 << 20, 1}} }},
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			if _, err := New(c); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// Stop ends an open-ended run without cutting off requests in flight: every request sent is
// counted, and none fails because of the stop.
func TestStopEndsRunWithoutCuttingOff(t *testing.T) {
	_, cfg := startEmu(t)
	cfg.Rate = 200
	cfg.Workers = 100
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *Report, 1)
	go func() {
		rep, err := r.Run(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	time.Sleep(500 * time.Millisecond)
	r.Stop()
	r.Stop() // idempotent
	select {
	case rep := <-done:
		if rep.Total == 0 || rep.Failed != 0 || rep.Succeeded != rep.Total {
			t.Fatalf("after Stop: %+v", rep)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after Stop")
	}
}

// The report counts replies by the protocol actually spoken: HTTP/2 only when asked for and
// the server offers it, HTTP/1.1 otherwise — so a benchmark cannot claim h2 it did not get.
func TestProtocolsReported(t *testing.T) {
	emu, cfg := startEmu(t)
	ts := httptest.NewUnstartedServer(emu) // the emulator's handler behind a server that offers h2
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	cfg.Endpoint, cfg.TLS = ts.URL, &tls.Config{RootCAs: pool}
	cfg.Rate, cfg.Duration, cfg.Workers = 50, 300*time.Millisecond, 20
	cfg.Mix = Mix{Encrypt: 1}
	for _, tt := range []struct {
		name  string
		http2 bool
		want  string
	}{{"http1", false, "HTTP/1.1"}, {"http2", true, "HTTP/2"}} {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			c.HTTP2 = tt.http2
			_, rep := runOnce(t, c)
			if rep.Failed != 0 || rep.Succeeded == 0 {
				t.Fatalf("run: %+v", rep)
			}
			if len(rep.Protocols) != 1 || rep.Protocols[tt.want] != rep.Succeeded {
				t.Fatalf("protocols %v, want all %d replies as %s", rep.Protocols, rep.Succeeded, tt.want)
			}
		})
	}
}

// runOnce builds a Runner from cfg and runs it to the end, failing the test on an error.
func runOnce(t *testing.T, cfg Config) (*Runner, *Report) {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r, rep
}

// OnFailure sees every failed request (and only those) with its class; RecordEvery keeps one
// Encrypt in N.
func TestOnFailureAndRecordEvery(t *testing.T) {
	tests := []struct {
		name        string
		faults      kmsemu.Faults
		recordEvery int
	}{
		{"all fail", kmsemu.Faults{ErrorRate: 1}, 1},
		{"none fail, one in three recorded", kmsemu.Faults{}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			emu, cfg := startEmu(t)
			emu.SetFaults(tc.faults)
			var mu sync.Mutex
			seen := map[string]int64{}
			cfg.OnFailure = func(at time.Time, op, class string) {
				mu.Lock()
				seen[class]++
				mu.Unlock()
				if at.IsZero() || op == "" {
					t.Errorf("OnFailure(%v, %q, %q)", at, op, class)
				}
			}
			cfg.Mix = Mix{Encrypt: 1}
			cfg.Record, cfg.RecordEvery = true, tc.recordEvery
			cfg.Workers, cfg.Duration = 2, 400*time.Millisecond
			r, rep := runOnce(t, cfg)
			mu.Lock()
			defer mu.Unlock()
			if !maps.Equal(seen, rep.ByError) {
				t.Errorf("OnFailure saw %v, report says %v", seen, rep.ByError)
			}
			enc := rep.ByOperation["Encrypt"]
			want := (enc.Count - enc.Failed + int64(tc.recordEvery) - 1) / int64(tc.recordEvery)
			if got := int64(len(r.Recorded())); got != want {
				t.Errorf("recorded %d of %d successful Encrypts, want %d", got, enc.Count-enc.Failed, want)
			}
		})
	}
}
