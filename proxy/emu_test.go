package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// End-to-end tests against the project's Cosmian emulator (real TLS on both sides).

const aliceARN = "arn:aws:iam::123456789012:user/Alice"

type emuEnv struct {
	*env
	ea, eb *kmsemu.Server
}

func xksCalls(s *kmsemu.Server) int64 {
	var n int64
	for _, v := range s.Stats().XKS {
		n += v
	}
	return n
}

func (e *emuEnv) calls() int64 { return xksCalls(e.ea) + xksCalls(e.eb) }

func newEmuEnv(t *testing.T, mutate func(*Config), post ...func(*Proxy)) *emuEnv {
	t.Helper()
	e := &emuEnv{env: &env{}}
	var backends []BackendConfig
	for _, name := range []string{"a", "b"} {
		s, err := kmsemu.New(kmsemu.Config{
			XKS:            &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: credBackend.AccessKeyID, SecretAccessKey: credBackend.Secret},
			CosmianVersion: kmsemu.Cosmian526,
		})
		if err != nil {
			t.Fatal(err)
		}
		// "enc-only": Alice may encrypt but not decrypt (Cosmian answers 401 InvalidKeyUsage).
		for _, k := range []struct {
			uid string
			ops []string
		}{{"k1", []string{"encrypt", "decrypt", "getattributes"}}, {"enc-only", []string{"encrypt", "getattributes"}}} {
			if err := s.CreateKey("admin", k.uid, kmsemu.KeyOptions{Material: sharedKey, Tags: []string{"aws-xks"}}); err != nil {
				t.Fatal(err)
			}
			if err := s.GrantAccess("admin", k.uid, aliceARN, k.ops...); err != nil {
				t.Fatal(err)
			}
		}
		run, err := s.Start("127.0.0.1:0", true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = run.Close() })
		backends = append(backends, BackendConfig{
			Name: name, XKSURL: run.URL + "/aws", Region: "eu-west-1", Credential: credBackend,
			TLS: &tls.Config{RootCAs: run.CertPool, MinVersion: tls.VersionTLS12}, Timeout: 240 * time.Millisecond,
		})
		if name == "a" {
			e.ea = s
		} else {
			e.eb = s
		}
	}
	e.start(t, backends, mutate, post...)
	return e
}

func TestEmulatorEndToEnd(t *testing.T) {
	e := newEmuEnv(t, nil)
	t.Run("metadata", func(t *testing.T) {
		st, b := e.post(t, keysPath+"k1/metadata", []byte(`{"requestMetadata":`+meta("DescribeKey")+`}`))
		var m xks.MetadataResponse
		_ = json.Unmarshal(b, &m)
		if st != 200 || m.KeySpec != "AES_256" || !contains(m.KeyUsage, "ENCRYPT") || !contains(m.KeyUsage, "DECRYPT") || m.KeyStatus != "ENABLED" {
			t.Errorf("%d %s", st, b)
		}
	})
	pt := []byte("0123456789abcdef0123456789abcdef")
	ct := e.encrypt(t, "k1", pt, []byte("aad"))
	t.Run("decrypt", func(t *testing.T) {
		for _, style := range []signStyle{styleKMS, styleCurl} {
			st, b, _ := e.send(t, e.request(t, http.MethodPost, keysPath+"k1/decrypt", decBody(ct, []byte("aad")), e.signer, style))
			var d struct{ Plaintext []byte }
			_ = json.Unmarshal(b, &d)
			if st != 200 || string(d.Plaintext) != string(pt) {
				t.Errorf("%d %s", st, b)
			}
		}
	})
	t.Run("health", func(t *testing.T) {
		st, b := e.post(t, "/aws/kms/xks/v1/health", []byte(`{"requestMetadata":{"kmsRequestId":"r","kmsOperation":"KmsHealthCheck"}}`))
		var h xks.HealthResponse
		_ = json.Unmarshal(b, &h)
		if st != 200 || len(h.EkmFleetDetails) != 2 || h.EkmFleetDetails[0].HealthStatus != xks.HealthActive || h.EkmFleetDetails[1].HealthStatus != xks.HealthActive {
			t.Errorf("%d %s", st, b)
		}
	})
	tampered := ct
	tampered.AuthenticationTag = append([]byte(nil), ct.AuthenticationTag...)
	tampered.AuthenticationTag[3] ^= 0x40
	good := encBody([]byte("hello"), nil)
	for _, tc := range []struct {
		name, path string
		body       []byte
		style      signStyle
		status     int
		errName    string
		noBackend  bool
	}{
		{"unknown prefix", "/other/kms/xks/v1/keys/k1/encrypt", good, styleNone, 404, "InvalidUriPathException", true},
		{"unknown path", "/aws/kms/xks/v2/keys/k1/encrypt", good, styleNone, 404, "InvalidUriPathException", true},
		{"unsigned", keysPath + "k1/encrypt", good, styleNone, 401, "AuthenticationFailedException", true},
		{"key not found (418)", keysPath + "nokey/encrypt", good, styleKMS, 404, "KeyNotFoundException", false},
		{"invalid key usage (401)", keysPath + "enc-only/decrypt", decBody(ct, []byte("aad")), styleKMS, 400, "InvalidKeyUsageException", false},
		{"invalid ciphertext (401)", keysPath + "k1/decrypt", decBody(tampered, []byte("aad")), styleKMS, 400, "InvalidCiphertextException", false},
		{"wrong aad (401)", keysPath + "k1/decrypt", decBody(ct, []byte("aae")), styleKMS, 400, "InvalidCiphertextException", false},
		{"unsupported payload", keysPath + "k1/encrypt", encBody(make([]byte, 6145), nil), styleKMS, 501, "UnsupportedOperationException", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.calls()
			st, b, _ := e.send(t, e.request(t, http.MethodPost, tc.path, tc.body, e.signer, tc.style))
			if st != tc.status || errName(t, b) != tc.errName {
				t.Errorf("got %d %s, want %d %s", st, b, tc.status, tc.errName)
			}
			if tc.noBackend && e.calls() != before {
				t.Errorf("reached a backend")
			}
		})
	}
	for _, tc := range []struct {
		name    string
		faults  kmsemu.Faults
		status  int
		errName string
	}{
		{"latency past timeout", kmsemu.Faults{Latency: 3 * time.Second}, 503, "DependencyTimeoutException"},
		{"down", kmsemu.Faults{Down: true}, 500, "InternalException"},
		{"error rate", kmsemu.Faults{ErrorRate: 1}, 500, "InternalException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.ea.SetFaults(tc.faults)
			defer e.ea.SetFaults(kmsemu.Faults{})
			st, b := e.post(t, keysPath+"k1/encrypt", good)
			if st != tc.status || errName(t, b) != tc.errName {
				t.Errorf("got %d %s", st, b)
			}
		})
	}
	e.encrypt(t, "k1", []byte("recovered"), nil)
}

func TestEmulatorFallbackAndHealth(t *testing.T) {
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "a", Fallback: "b"}
	})
	ct := e.encrypt(t, "k1", []byte("written on a"), nil)
	e.ea.SetFaults(kmsemu.Faults{Down: true})
	if st, b := e.post(t, keysPath+"k1/decrypt", decBody(ct, nil)); st != 200 {
		t.Errorf("fallback decrypt: %d %s", st, b)
	}
	// A key that only the fallback holds (created during a migration).
	e.ea.SetFaults(kmsemu.Faults{})
	if err := e.eb.CreateKey("admin", "only-b", kmsemu.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.eb.GrantAccess("admin", "only-b", aliceARN, "encrypt"); err != nil {
		t.Fatal(err)
	}
	e.encrypt(t, "only-b", []byte("hello"), nil)

	check := func(want string) {
		t.Helper()
		_ = e.p.health.check(context.Background())
		if got := e.p.Health().EkmFleetDetails[0].HealthStatus; got != want {
			t.Errorf("a is %s, want %s", got, want)
		}
		if got := e.p.Health().EkmFleetDetails[1].HealthStatus; got != xks.HealthActive {
			t.Errorf("b is %s", got)
		}
	}
	check(xks.HealthActive)
	e.ea.SetFaults(kmsemu.Faults{Latency: 600 * time.Millisecond, XKSOnly: true})
	check(xks.HealthDegraded)
	e.ea.SetFaults(kmsemu.Faults{Down: true})
	check(xks.HealthDegraded)
	check(xks.HealthUnavailable)
	e.ea.SetFaults(kmsemu.Faults{})
	check(xks.HealthDegraded)
	check(xks.HealthActive)
	hk := e.p.HealthKeyIDs()
	if _, ok := e.ea.Object(hk[0]); !ok {
		t.Errorf("health test key %s was not created on a", hk[0])
	}
	if hk[0] == hk[1] || !strings.HasPrefix(hk[0], healthKeyPrefix) || len(hk[0]) != len(healthKeyPrefix)+24 {
		t.Errorf("health key ids %v: want one per backend, derived", hk)
	}
	if _, ok := e.ea.Object(LegacyHealthTestKeyID); ok {
		t.Errorf("the health check created the fixed id %s, which any caller can name", LegacyHealthTestKeyID)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCreateKeyNeverMintsASecondKey: during a migration (a fallback configured), a CreateKey for
// an id the fallback already holds must be answered from the fallback, not minted anew on the
// primary with different material; a new id is created on the primary only, also when the
// fallback is down.
// emuMigration answers a Migration's rules over the two emulators, read as their owner (what the
// cutover controller does through KMIP).
type emuMigration struct {
	mu      sync.Mutex
	servers map[string]*kmsemu.Server
	pending map[string]string // key → backend
	present map[string]bool   // "backend/key" known to be held
	down    map[string]bool   // backend whose owner view cannot be read
	// inactive: the migration has ended (Active false) while the route still has a fallback.
	inactive bool
}

func (m *emuMigration) Active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.inactive
}
func (m *emuMigration) Reserved(id string) bool { return id == "xksproxy-marker-test" }
func (m *emuMigration) MintOn() string          { return "" }
func (m *emuMigration) GrantsPending(id, b string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending[id] == b
}
func (m *emuMigration) MayLack(id, b string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.present[b+"/"+id]
}
func (m *emuMigration) Holds(_ context.Context, id, b string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[b] {
		return false, errors.New("owner view unreachable")
	}
	_, ok := m.servers[b].Object(id)
	return ok, nil
}

func newEmuMigration(e *emuEnv) *emuMigration {
	return &emuMigration{servers: map[string]*kmsemu.Server{"a": e.ea, "b": e.eb}, pending: map[string]string{}, present: map[string]bool{}, down: map[string]bool{}}
}

func TestCreateKeyNeverMintsASecondKey(t *testing.T) {
	var mu sync.Mutex
	var created []string
	mig := &emuMigration{}
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "b", Fallback: "a"}
		c.Migration = &hooks{rules: mig, onCreateKey: func(_ context.Context, ev CreateKeyEvent) {
			mu.Lock()
			created = append(created, ev.KeyID+"@"+ev.Backend)
			mu.Unlock()
		}}
	})
	*mig = *newEmuMigration(e)
	createKeyAs := func(id, principal string) (int, []byte) {
		md := strings.Replace(meta("CreateKey"), aliceARN, principal, 1)
		return e.post(t, keysPath+id+"/metadata", []byte(`{"requestMetadata":`+md+`}`))
	}
	const p1, p2 = aliceARN, "arn:aws:iam::123456789012:user/Mallory"
	if err := e.ea.CreateKey("admin", "priv-2", kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.ea.GrantAccess("admin", "priv-2", p1, "encrypt", "decrypt", "getattributes"); err != nil {
		t.Fatal(err)
	}

	// P2 has no right on priv-2 (A would tell P2 "not found"); the owner's view says A holds
	// it: the CreateKey goes to A, which mints nothing and grants nothing.
	if st, b := createKeyAs("priv-2", p2); st != 200 || !bytes.Contains(b, []byte(`"keySpec":"AES_256"`)) {
		t.Fatalf("CreateKey of a key the fallback holds: %d %s", st, b)
	}
	if _, ok := e.eb.Object("priv-2"); ok {
		t.Fatal("the primary minted a second key under an id the fallback holds")
	}
	if ops := e.ea.Access("priv-2")[p2]; len(ops) != 0 {
		t.Errorf("P2 gained %v on A by sending CreateKey", ops)
	}
	if ops := e.ea.Access("priv-2")[p1]; len(ops) != 3 {
		t.Errorf("P1's rights on A changed: %v", ops)
	}
	// k1 exists on both: the primary answers, and P2 is not its creator.
	if st, b := createKeyAs("k1", p2); st != 200 {
		t.Fatalf("CreateKey of a key both hold: %d %s", st, b)
	}

	if st, b := createKeyAs("brand-new", p1); st != 200 {
		t.Fatalf("CreateKey of a new id: %d %s", st, b)
	}
	if _, ok := e.eb.Object("brand-new"); !ok {
		t.Error("new key not created on the primary")
	}
	if _, ok := e.ea.Object("brand-new"); ok {
		t.Error("new key created on the fallback too")
	}

	// The owner's view of the fallback cannot be read: a guess could split a key, so the
	// CreateKey is refused with a retryable error and nothing is minted.
	mig.mu.Lock()
	mig.down["a"] = true
	mig.mu.Unlock()
	if st, b := createKeyAs("while-a-is-dark", p1); st != 500 || errName(t, b) != "InternalException" {
		t.Fatalf("CreateKey with the fallback's owner view unreachable: %d %s", st, b)
	}
	if _, ok := e.eb.Object("while-a-is-dark"); ok {
		t.Error("key minted on the primary although the fallback could not be asked")
	}
	mig.mu.Lock()
	mig.down["a"] = false
	mig.mu.Unlock()

	// A CreateKey that reached the primary is never retried on the fallback, which may lack the
	// id and would mint a different key under it: not for a key only the primary holds, and not
	// in the moment a migration has ended but the route still names a fallback.
	if err := e.eb.CreateKey("admin", "only-on-b", kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	e.eb.SetFaults(kmsemu.Faults{ErrorRate: 1, XKSOnly: true})
	for _, tc := range []struct {
		name, id string
		inactive bool
	}{{"held by the primary only", "only-on-b", false}, {"migration just ended", "after-the-end", true}} {
		t.Run(tc.name, func(t *testing.T) {
			mig.mu.Lock()
			mig.inactive = tc.inactive
			mig.mu.Unlock()
			defer func() { mig.mu.Lock(); mig.inactive = false; mig.mu.Unlock() }()
			if st, b := createKeyAs(tc.id, p1); st < 500 || !xks.ErrorName(errName(t, b)).Retryable() {
				t.Errorf("CreateKey with the primary failing: %d %s, want a retryable error", st, b)
			}
			if _, ok := e.ea.Object(tc.id); ok {
				t.Errorf("the fallback minted %s after the primary failed", tc.id)
			}
		})
	}
	e.eb.SetFaults(kmsemu.Faults{})

	mu.Lock()
	defer mu.Unlock()
	if want := []string{"priv-2@a", "k1@b", "brand-new@b"}; !slices.Equal(created, want) {
		t.Errorf("OnCreateKey saw %v, want %v", created, want)
	}
}

// TestFallbackNeverOverridesARefusal: with the cutover's view wired in, a refusal that is
// policy on the primary (a missing grant: Cosmian's InvalidKeyUsage; a revoked key:
// InvalidState or KeyNotFound for a key it is known to hold) is returned as it is; only inside
// the window the cutover names (imported, grants still being written) does it fall back, and
// KeyNotFound only for ids the primary may lack.
func TestFallbackNeverOverridesARefusal(t *testing.T) {
	mig := &emuMigration{}
	e := newEmuEnv(t, func(c *Config) {
		c.Route = Route{Epoch: 1, Primary: "b", Fallback: "a"}
		c.Migration = &hooks{rules: mig}
		c.Health.Disabled = true
	}, relaxTimeouts)
	*mig = *newEmuMigration(e)
	mig.present["b/k1"], mig.present["b/enc-only"] = true, true
	ct := e.encrypt(t, "k1", []byte("x"), nil)
	fallbacks := func() int64 { return xksCalls(e.ea) }
	cases := []struct {
		name     string
		prep     func()
		key      string
		wantErr  string
		fellBack bool
	}{
		{"missing grant is policy", func() {}, "enc-only", "InvalidKeyUsageException", false},
		{"missing grant while grants are being written", func() {
			mig.pending["enc-only"] = "b"
			if err := e.ea.GrantAccess("admin", "enc-only", aliceARN, "decrypt"); err != nil {
				t.Fatal(err)
			}
		}, "enc-only", "", true},
		{"revoked key is policy", func() {
			delete(mig.pending, "enc-only")
			if err := e.eb.RevokeKey("k1", "KeyCompromise"); err != nil {
				t.Fatal(err)
			}
		}, "k1", "*", false},
		{"key not found where it is known held", func() { mig.present["b/gone"] = true }, "gone", "KeyNotFoundException", false},
		{"key not found where it may be missing", func() {
			if err := e.ea.CreateKey("admin", "only-a", kmsemu.KeyOptions{Material: sharedKey, Tags: []string{"aws-xks"}}); err != nil {
				t.Fatal(err)
			}
			if err := e.ea.GrantAccess("admin", "only-a", aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
				t.Fatal(err)
			}
		}, "only-a", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mig.mu.Lock()
			tc.prep()
			mig.mu.Unlock()
			before := fallbacks()
			path, body := keysPath+tc.key+"/decrypt", decBody(ct, nil)
			if tc.wantErr == "*" {
				// Cosmian still decrypts with a revoked key (KMIP: "process" only); it refuses
				// to encrypt with it.
				path, body = keysPath+tc.key+"/encrypt", encBody([]byte("x"), nil)
			}
			st, b := e.post(t, path, body)
			switch tc.wantErr {
			case "":
				if st != 200 {
					t.Errorf("status %d %s, want 200", st, b)
				}
			case "*":
				if st == 200 {
					t.Errorf("status 200, want the primary's refusal")
				}
			default:
				if st == 200 || errName(t, b) != tc.wantErr {
					t.Errorf("status %d %s, want %s", st, b, tc.wantErr)
				}
			}
			if got := fallbacks() > before; got != tc.fellBack {
				t.Errorf("fell back: %v, want %v", got, tc.fellBack)
			}
		})
	}
}

// A route change to another primary opens, before the swap, as many connections to it as the
// old primary has open: the requests after the switch find them idle instead of each dialling
// and handshaking at once.
func TestSwitchPrewarmsNewPrimary(t *testing.T) {
	e := newEmuEnv(t, nil)
	a, b := e.p.backends["a"], e.p.backends["b"]
	// Six requests held 60 ms each by A at once leave six connections open to it.
	e.ea.SetFaults(kmsemu.Faults{Latency: 60 * time.Millisecond, XKSOnly: true})
	for _, st := range e.encryptAtOnce(t, 6, "k1") {
		if st != 200 {
			t.Fatalf("encrypt through A: %d", st)
		}
	}
	e.ea.SetFaults(kmsemu.Faults{})
	onA := a.conns.Load()
	if onA < 6 {
		t.Fatalf("connections open to A: %d, want at least 6", onA)
	}
	if n := b.conns.Load(); n >= onA {
		t.Fatalf("B already has %d connections before the switch; the test proves nothing", n)
	}
	if err := e.p.SetRoute(Route{Epoch: 2, Primary: "b", Fallback: "a"}); err != nil {
		t.Fatal(err)
	}
	if n := b.conns.Load(); n < onA {
		t.Errorf("connections open to B after the switch: %d, want at least %d (A's)", n, onA)
	}
	line := grep(scrape(t, e.env), `xks_backend_connections{backend="b"}`)
	var got int64
	if _, err := fmt.Sscanf(line, `xks_backend_connections{backend="b"} %d`, &got); err != nil || got < onA {
		t.Errorf("metric line %q: want B's connections (at least %d)", line, onA)
	}
	// Back to A: A is warm already, nothing is opened.
	before := a.conns.Load()
	if err := e.p.SetRoute(Route{Epoch: 3, Primary: "a"}); err != nil {
		t.Fatal(err)
	}
	if n := a.conns.Load(); n != before {
		t.Errorf("switching back to a warm A changed its connections from %d to %d", before, n)
	}
}
