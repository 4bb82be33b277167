package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/certs"
)

const (
	testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	testToken  = "0123456789abcdef0123456789abcdef-admin"
)

// copyFull copies testdata/full.toml and its secret file into a fresh directory with mode 0600.
func copyFull(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"full.toml", "secret-b.txt", "ckms-a.toml", "ckms-b.toml"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "full.toml")
}

func TestLoadFull(t *testing.T) {
	t.Setenv("XKSPROXY_TEST_SECRET", "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQtbmV3")
	t.Setenv("XKSPROXY_TEST_ADMIN_TOKEN", testToken)
	path := copyFull(t)
	f, warns, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	if got := f.Server.Listen; got != "0.0.0.0:443" {
		t.Errorf("listen %q", got)
	}
	if !f.Server.PreferHTTP1 {
		t.Errorf("prefer_http1 not read")
	}
	if got := f.Server.Limits.Budget.D(); got != 240*time.Millisecond {
		t.Errorf("budget %v", got)
	}
	if len(f.Prefix) != 1 || len(f.Prefix[0].Credential) != 2 {
		t.Fatalf("prefix %+v", f.Prefix)
	}
	creds := f.Prefix[0].Credentials()
	if creds[1].Secret != "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQtbmV3" {
		t.Errorf("env secret not resolved")
	}
	if f.Backend[1].SigV4().Secret != "YmFja2VuZC1iLXNlY3JldC1iYWNrZW5kLWItc2VjcmV0LWI=" {
		t.Errorf("file secret not resolved/trimmed")
	}
	// Keys left out stay unset: the proxy's BackendConfig defaults apply (see app's tests).
	if f.Backend[1].Service != "" || f.Backend[1].MaxIdleConns != 0 || f.Backend[1].Model != "" {
		t.Errorf("backend keys not written were filled: %+v", f.Backend[1])
	}
	if f.Backend[0].CKMSConfig != filepath.Join(filepath.Dir(path), "ckms-a.toml") {
		t.Errorf("ckms_config not resolved relative to the file: %q", f.Backend[0].CKMSConfig)
	}
	if f.Admin.Token != testToken {
		t.Errorf("admin token")
	}
	if *f.Cutover.ShadowSampleRate != 0.05 || f.Cutover.Concurrency != 8 {
		t.Errorf("cutover %+v", f.Cutover)
	}
	if f.TLS.PollInterval.D() != 30*time.Second || f.TLS.CertFile != filepath.Join(filepath.Dir(path), "certs/xks.example.com.crt") {
		t.Errorf("tls %+v", f.TLS)
	}
	want := []time.Time{time.Date(2025, 11, 2, 9, 30, 0, 0, time.UTC), time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)}
	for i, w := range want {
		if got := f.Prefix[0].Credential[i].Created.Time; !got.Equal(w) {
			t.Errorf("credential[%d].created = %v, want %v", i, got, w)
		}
	}
}

func TestLoadACME(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"acme.toml", "secret-b.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "acme-root.pem"), []byte("roots"), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "secret-b.txt"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	f, warns, err := Load(filepath.Join(dir, "acme.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	tl := f.TLS
	if tl.Mode != TLSACME || len(tl.Domains) != 2 || tl.Domains[1] != "xks.vpce.example.com" {
		t.Errorf("domains not normalised: %q", tl.Domains)
	}
	if tl.CA != "https://acme.internal:14000/dir" || tl.Email != "security@example.com" || tl.Challenge != certs.ChallengeTLSALPN01 ||
		tl.PreferredChainRoot != "ISRG Root X1" {
		t.Errorf("tls %+v", tl)
	}
	if tl.StorageDir != filepath.Join(dir, "acme") || tl.TrustedRootsFile != filepath.Join(dir, "acme-root.pem") {
		t.Errorf("paths not resolved relative to the file: %q %q", tl.StorageDir, tl.TrustedRootsFile)
	}
	if got := f.Prefix[0].Credential[0].Created.Time; !got.Equal(mtime) {
		t.Errorf("created from the secret file's mtime: %v, want %v", got, mtime)
	}
}

func TestTLSDefaults(t *testing.T) {
	acme := strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"acme\"\ndomains = [\"xks.example.com\"]", 1)
	f, _, err := Parse("/etc/xksproxy/x.toml", []byte(acme))
	if err != nil {
		t.Fatal(err)
	}
	// The directory and challenge are left to the certs package's defaults.
	if f.TLS.CA != "" || f.TLS.StorageDir != DefaultACMEStorageDir || f.TLS.Challenge != "" ||
		f.TLS.PreferredChainRoot != "" || f.TLS.TrustedRootsFile != "" {
		t.Errorf("acme defaults %+v", f.TLS)
	}
	files := strings.Replace(minimal(""), `mode = "self-signed"`, `mode = "files"`+"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"", 1)
	f, _, err = Parse("/etc/xksproxy/x.toml", []byte(files))
	if err != nil {
		t.Fatal(err)
	}
	if f.TLS.PollInterval.D() != 0 || f.TLS.CertFile != "/etc/xksproxy/c.pem" {
		t.Errorf("files defaults %+v", f.TLS)
	}
}

func TestCreated(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s.txt")
	if err := os.WriteFile(secretFile, []byte(testSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := os.Chtimes(secretFile, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	inline := `secret_access_key = "` + testSecret + `"`
	tests := []struct {
		name, repl string
		want       time.Time
		warn       bool
	}{
		{"rfc3339 string", inline + "\ncreated = \"2026-01-15T10:00:00+02:00\"", time.Date(2026, 1, 15, 8, 0, 0, 0, time.UTC), false},
		{"date string", inline + "\ncreated = \"2026-01-15\"", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC), false},
		{"toml datetime", inline + "\ncreated = 2026-01-15T00:00:00Z", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC), false},
		{"toml date", inline + "\ncreated = 2026-01-15", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC), false},
		{"file mtime", `secret_access_key_file = "s.txt"`, mtime, false},
		{"explicit beats mtime", `secret_access_key_file = "s.txt"` + "\ncreated = \"2026-01-15\"", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC), false},
		{"inline without date", inline, time.Time{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(minimal(""), inline, tc.repl, 1)
			f, warns, err := Parse(filepath.Join(dir, "x.toml"), []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Prefix[0].Credential[0].Created.Time; !got.Equal(tc.want) {
				t.Errorf("created %v, want %v", got, tc.want)
			}
			gotWarn := len(warns) == 1 && strings.Contains(warns[0], "prefix[0].credential[0].created: not set") &&
				strings.Contains(warns[0], "xks_sigv4_credential_age_seconds")
			if gotWarn != tc.warn || (!tc.warn && len(warns) != 0) {
				t.Errorf("warnings %v, want a created warning: %v", warns, tc.warn)
			}
		})
	}
}

func minimal(extra string) string {
	return `
[tls]
mode = "self-signed"
[[prefix]]
path = "/aws"
region = "us-east-1"
[[prefix.credential]]
access_key_id = "AKIAXKSPROXYOLDKEY01"
secret_access_key = "` + testSecret + `"
[[backend]]
name = "a"
xks_url = "https://kms-a:9998/aws"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = "` + testSecret + `"
` + extra
}

// TestUnsetStaysUnset: config fills only the defaults that belong to the file (route primary,
// self-signed hosts, log, cutover backend names and journal); every other key left out reaches
// the components as zero, and they apply their own defaults.
func TestUnsetStaysUnset(t *testing.T) {
	f, _, err := Parse("x.toml", []byte(minimal("")))
	if err != nil {
		t.Fatal(err)
	}
	if f.Server.Listen != "" || f.Server.MetricsListen != "" || f.Server.Limits != (Limits{}) {
		t.Errorf("server keys filled: %+v", f.Server)
	}
	if f.Health != (Health{}) || f.Backend[0].Timeout != 0 || f.Backend[0].Service != "" {
		t.Errorf("health or backend keys filled: %+v %+v", f.Health, f.Backend[0])
	}
	co := f.Cutover
	if co.ShadowSampleRate != nil || co.ProbationMaxErrorRate != nil || co.ProbationMinRequests != nil ||
		co.ProbationDuration != 0 || co.ProbationMaxP99 != 0 || co.Concurrency != 0 || co.Select != "" || co.TargetACL != "" {
		t.Errorf("cutover keys filled: %+v", co)
	}
	if f.Route.Primary != "a" || f.TLS.Hosts[0] != "localhost" || f.Log.Format != "json" || f.Log.Level != "info" ||
		co.Source != "a" || co.Target != "b" || co.JournalPath != DefaultJournalPath {
		t.Errorf("file defaults: route %+v tls %+v log %+v cutover %+v", f.Route, f.TLS, f.Log, co)
	}
	f, _, err = Parse("x.toml", []byte(minimal("")+"[server]\nmetrics_listen = \"off\"\n"))
	if err != nil || f.Server.MetricsListen != "off" {
		t.Errorf("metrics off: %v %q", err, f.Server.MetricsListen)
	}
}

// TestZerosKept: a zero the operator wrote reaches the component as written.
func TestZerosKept(t *testing.T) {
	two := "[[backend]]\nname = \"b\"\nxks_url = \"https://kms-b:9998/aws\"\nregion = \"us-east-1\"\naccess_key_id = \"AKIACOSMIANBACKENDB2\"\nsecret_access_key = \"" + testSecret + "\"\n"
	f, _, err := Parse("x.toml", []byte(minimal(two+"[cutover]\nprobation_max_error_rate = 0.0\nprobation_min_requests = 0\n")))
	if err != nil {
		t.Fatal(err)
	}
	if p := f.Cutover.ProbationMaxErrorRate; p == nil || *p != 0 {
		t.Errorf("probation_max_error_rate = 0.0 read as %v", p)
	}
	if p := f.Cutover.ProbationMinRequests; p == nil || *p != 0 {
		t.Errorf("probation_min_requests = 0 read as %v", p)
	}
	// A sample rate of 0 would mirror nothing: refused, with the way to say "no shadowing".
	_, _, err = Parse("x.toml", []byte(minimal(two+"[cutover]\nshadow_sample_rate = 0.0\n")))
	if err == nil || !strings.Contains(err.Error(), "x.toml:23: cutover.shadow_sample_rate: must be above 0") {
		t.Errorf("shadow_sample_rate = 0.0: %v", err)
	}
}

func TestErrors(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "s.txt")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	two := `
[[backend]]
name = "b"
xks_url = "https://kms-b:9998/aws"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDB2"
secret_access_key = "` + testSecret + `"
`
	acme := func(keys string) string {
		return strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"acme\"\n"+keys, 1)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"syntax", minimal("[server\nlisten=1"), "x.toml:"},
		{"syntax line", "\n\nlisten = = 3\n", "x.toml:3:"},
		{"unknown key", minimal("[server]\nlistne = \"x\"\n"), "x.toml:17: server.listne: "},
		{"unknown section", minimal("[bogus]\na = 1\n"), "x.toml:16: bogus"},
		{"wrong type", minimal("[server]\nlisten = 3\n"), "x.toml:17: server.listen: incompatible types"},
		{"bad duration", minimal("[health]\ninterval = \"soon\"\n"), "x.toml:17: health.interval: not a duration"},
		{"listen", minimal("[server]\nlisten = \"nope\"\n"), "x.toml:17: server.listen: "},
		{"budget", minimal("[server.limits]\nbudget = \"300ms\"\n"), "x.toml:17: server.limits.budget: "},
		{"payload", minimal("[server.limits]\nmax_payload_bytes = 100\n"), "x.toml:17: server.limits.max_payload_bytes: "},
		{"aad", minimal("[server.limits]\nmax_aad_bytes = 100\n"), "x.toml:17: server.limits.max_aad_bytes: "},
		{"body", minimal("[server.limits]\nmax_body_bytes = 100\n"), "x.toml:17: server.limits.max_body_bytes: "},
		// The proxy's own bounds (proxy.CheckLimits), named by the file's key.
		{"header count", minimal("[server.limits]\nmax_header_count = 2000\n"), "x.toml:17: server.limits.max_header_count: must be between 8 and 1000"},
		{"idle timeout", minimal("[server.limits]\nidle_timeout = \"2h\"\n"), "x.toml:17: server.limits.idle_timeout: must be positive and at most 1h0m0s"},
		{"slow body after", minimal("[server.limits]\nbody_timeout = \"100ms\"\nslow_body_after = \"200ms\"\n"), "x.toml:18: server.limits.slow_body_after: must be positive and at most BodyTimeout (100ms)"},
		{"slow per conn", minimal("[server.limits]\nmax_slow_bodies = 4\nmax_slow_bodies_per_conn = 5\n"), "x.toml:18: server.limits.max_slow_bodies_per_conn: "},
		{"in flight", minimal("[server.limits]\nmax_in_flight = -1\n"), "x.toml:17: server.limits.max_in_flight: must be at least 1"},
		{"handshakes", minimal("[server.limits]\nmax_handshakes = 5000\n"), "x.toml:17: server.limits.max_handshakes: must be between 1 and 4096"},
		{"acme domains", strings.Replace(minimal(""), `"self-signed"`, `"acme"`, 1), "x.toml:2: tls.domains: required"},
		{"acme ip", acme(`domains = ["192.0.2.1"]`), "x.toml:4: tls.domains[0]: must be a DNS name"},
		{"acme wildcard", acme(`domains = ["*.example.com"]`), "x.toml:4: tls.domains[0]: must be a DNS name"},
		{"acme port", acme(`domains = ["xks.example.com:443"]`), "x.toml:4: tls.domains[0]: must be a DNS name"},
		{"acme single label", acme(`domains = ["localhost"]`), "x.toml:4: tls.domains[0]: must be a DNS name"},
		{"acme dup", acme(`domains = ["xks.example.com", "XKS.example.com"]`), "x.toml:4: tls.domains[1]: same name"},
		{"acme ca", acme(`domains = ["xks.example.com"]` + "\nca = \"ftp://x/dir\""), "x.toml:5: tls.ca: "},
		{"acme ca relative", acme(`domains = ["xks.example.com"]` + "\nca = \"dir\""), "x.toml:5: tls.ca: "},
		{"acme email", acme(`domains = ["xks.example.com"]` + "\nemail = \"nobody\""), "x.toml:5: tls.email: "},
		{"acme challenge", acme(`domains = ["xks.example.com"]` + "\nchallenge = \"http-01\""), "x.toml:5: tls.challenge: must be"},
		{"acme roots missing", acme(`domains = ["xks.example.com"]` + "\ntrusted_roots_file = \"/nonexistent/roots.pem\""), "x.toml:5: tls.trusted_roots_file: cannot read"},
		{"acme with cert_file", acme(`domains = ["xks.example.com"]` + "\ncert_file = \"c.pem\""), "x.toml:5: tls.cert_file: only used with tls.mode = \"files\""},
		{"files with domains", strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"files\"\ncert_file = \"c\"\nkey_file = \"k\"\ndomains = [\"xks.example.com\"]", 1), "x.toml:6: tls.domains: only used with tls.mode = \"acme\""},
		{"poll interval", strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"files\"\ncert_file = \"c\"\nkey_file = \"k\"\npoll_interval = \"10ms\"", 1), "x.toml:6: tls.poll_interval: must be between"},
		{"poll interval self-signed", strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"self-signed\"\npoll_interval = \"10s\"", 1), "x.toml:4: tls.poll_interval: only used with tls.mode = \"files\""},
		{"created bad", strings.Replace(minimal(""), "[[backend]]", "created = \"yesterday\"\n[[backend]]", 1), "x.toml:10: prefix[0].credential[0].created: not an RFC 3339 date"},
		{"created future", strings.Replace(minimal(""), "[[backend]]", "created = \"2999-01-01\"\n[[backend]]", 1), "x.toml:10: prefix[0].credential[0].created: is in the future"},
		{"tls mode", strings.Replace(minimal(""), `"self-signed"`, `"magic"`, 1), "x.toml:3: tls.mode: "},
		{"tls files", strings.Replace(minimal(""), `"self-signed"`, `"files"`, 1), "x.toml:2: tls.cert_file: required"},
		{"prefix path", strings.Replace(minimal(""), `path = "/aws"`, `path = "aws"`, 1), "x.toml:5: prefix[0].path: "},
		{"prefix region", strings.Replace(minimal(""), "region = \"us-east-1\"\n[[prefix.credential]]", "region = \"US EAST\"\n[[prefix.credential]]", 1), "x.toml:6: prefix[0].region: "},
		{"no prefix", "[tls]\nmode=\"self-signed\"\n", "x.toml: prefix: "},
		{"akid", strings.Replace(minimal(""), "AKIAXKSPROXYOLDKEY01", "short", 1), "x.toml:8: prefix[0].credential[0].access_key_id: "},
		{"secret short", strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, `secret_access_key = "abc"`, 1), "x.toml:9: prefix[0].credential[0].secret_access_key: "},
		{"two secrets", strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, `secret_access_key = "`+testSecret+`"`+"\nsecret_access_key_env = \"X\"", 1), "x.toml:9: prefix[0].credential[0].secret_access_key: give exactly one"},
		{"no secret", strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, ``, 1), "x.toml:7: prefix[0].credential[0].secret_access_key: required"},
		{"env unset", strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, `secret_access_key_env = "XKSPROXY_SURELY_UNSET_VAR"`, 1), "x.toml:9: prefix[0].credential[0].secret_access_key_env: "},
		{"file missing", strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, `secret_access_key_file = "/nonexistent/s"`, 1), "x.toml:9: prefix[0].credential[0].secret_access_key_file: "},
		{"dup akid", minimal("") + "", ""},
		{"backend url", strings.Replace(minimal(""), "https://kms-a:9998/aws", "ftp://kms-a/aws", 1), "x.toml:12: backend[0].xks_url: must be https:// or http://"},
		{"backend url suffix", strings.Replace(minimal(""), "https://kms-a:9998/aws", "https://kms-a:9998/aws/kms/xks/v1", 1), "x.toml:12: backend[0].xks_url: "},
		{"backend name", strings.Replace(minimal(""), `name = "a"`, `name = "A!"`, 1), "x.toml:11: backend[0].name: "},
		{"backend dup", minimal(strings.Replace(two, `name = "b"`, `name = "a"`, 1)), "x.toml:18: backend[1].name: same name"},
		{"backend timeout", minimal("") + "", ""},
		{"route primary", minimal("[route]\nprimary = \"z\"\n"), "x.toml:17: route.primary: "},
		{"route fallback same", minimal(two + "[route]\nprimary = \"a\"\nfallback = \"a\"\n"), "x.toml:25: route.fallback: "},
		{"health interval", minimal("[health]\ninterval = \"2m\"\n"), "x.toml:17: health.interval: "},
		{"health key", minimal("[health]\ntest_key_id = \"bad key\"\n"), "x.toml:17: health.test_key_id: "},
		{"admin remote", minimal("[admin]\nlisten = \"0.0.0.0:9465\"\ntoken = \"" + testToken + "\"\n"), "x.toml:17: admin.listen: must be a loopback"},
		{"admin remote without TLS", minimal("[admin]\nlisten = \"0.0.0.0:9465\"\nallow_remote = true\ntoken = \"" + testToken + "\"\n"), "x.toml:18: admin.allow_remote: the admin API beyond loopback needs TLS"},
		{"admin cert without key", minimal("[admin]\nlisten = \"127.0.0.1:9465\"\ncert_file = \"a.pem\"\ntoken = \"" + testToken + "\"\n"), "x.toml:18: admin.cert_file: cert_file and key_file go together"},
		{"admin token missing", minimal("[admin]\nlisten = \"127.0.0.1:9465\"\n"), "x.toml:16: admin.token: required"},
		{"admin token short", minimal("[admin]\nlisten = \"127.0.0.1:9465\"\ntoken = \"short\"\n"), "x.toml:18: admin.token: must be at least 32"},
		{"cutover select", minimal(two + "[cutover]\nselect = \"all\"\n"), "x.toml:24: cutover.select: "},
		{"cutover list", minimal(two + "[cutover]\nselect = \"list\"\n"), "x.toml:23: cutover.keys: "},
		{"cutover target", minimal("[cutover]\ntarget = \"z\"\n"), "x.toml:17: cutover.target: "},
		{"cutover rate", minimal(two + "[cutover]\nshadow_sample_rate = 1.5\n"), "x.toml:24: cutover.shadow_sample_rate: "},
		{"rights sync rate 0", minimal(two + "[cutover]\nrights_sync_rate = 0.0\n"), "x.toml:24: cutover.rights_sync_rate: must be above 0"},
		{"rights sync rate huge", minimal(two + "[cutover]\nrights_sync_rate = 1e9\n"), "x.toml:24: cutover.rights_sync_rate: "},
		{"cutover acl", minimal(two + "[cutover]\ntarget_acl = \"x\"\n"), "x.toml:24: cutover.target_acl: "},
		{"pace word", minimal(two + "[cutover]\npace = \"fast\"\n"), "x.toml:24: cutover.pace: must be \"auto\" or a number"},
		{"pace 0", minimal(two + "[cutover]\npace = 0\n"), "x.toml:24: cutover.pace: must be \"auto\" or a number"},
		{"pace kind", minimal(two + "[cutover]\npace = true\n"), "x.toml:24: cutover.pace: must be \"auto\" or a number"},
		{"concurrency both names", minimal(two + "[cutover]\nconcurrency = 4\nmax_concurrency = 5\n"), "x.toml:24: cutover.concurrency: is the older name of max_concurrency"},
		{"concurrency bounds", minimal(two + "[cutover]\nmin_concurrency = 9\nmax_concurrency = 4\n"), "x.toml:24: cutover.min_concurrency: the minimum concurrency 9 is above the maximum 4"},
		{"log", minimal("[log]\nformat = \"xml\"\n"), "x.toml:17: log.format: "},
	}
	for _, tc := range cases {
		if tc.want == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("/etc/xksproxy/x.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q, want prefix %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("not ErrInvalid: %v", err)
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), testToken) {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
	t.Run("dup akid", func(t *testing.T) {
		doc := strings.Replace(minimal(""), "[[backend]]", "[[prefix.credential]]\naccess_key_id = \"AKIAXKSPROXYOLDKEY01\"\nsecret_access_key_file = \""+secretFile+"\"\n[[backend]]", 1)
		_, _, err := Parse("x.toml", []byte(doc))
		if err == nil || !strings.HasPrefix(err.Error(), "x.toml:11: prefix[0].credential[1].access_key_id: same access key id") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("backend timeout", func(t *testing.T) {
		doc := strings.Replace(minimal(""), "[[backend]]\n", "[[backend]]\ntimeout = \"1s\"\n", 1)
		_, _, err := Parse("x.toml", []byte(doc))
		if err == nil || !strings.HasPrefix(err.Error(), "x.toml:11: backend[0].timeout: ") {
			t.Errorf("got %v", err)
		}
	})
}

func TestSecretFileWarning(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.txt")
	if err := os.WriteFile(p, []byte("  "+testSecret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(minimal(""), `secret_access_key = "`+testSecret+`"`, `secret_access_key_file = "s.txt"`, 1)
	f, warns, err := Parse(filepath.Join(dir, "x.toml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if f.Prefix[0].Credential[0].SecretAccessKey != testSecret {
		t.Errorf("secret not trimmed")
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "prefix[0].credential[0].secret_access_key_file") || strings.Contains(warns[0], testSecret) {
		t.Errorf("warnings %v", warns)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, _, err := Load("/nonexistent/xksproxy.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "/nonexistent/xksproxy.toml: ") {
		t.Errorf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, n := range []string{"full.toml", "acme.toml"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal("")))
	f.Add([]byte(minimal("[server.limits]\nbudget = \"1ms\"\n[cutover]\nshadow_sample_rate = 0.5\n")))
	f.Add([]byte("[[prefix]]\n[[prefix.credential]]\n"))
	f.Add([]byte(strings.Replace(minimal(""), `mode = "self-signed"`, "mode = \"acme\"\ndomains = [\"xks.example.com\"]\nchallenge = \"dns-01\"", 1)))
	f.Add([]byte(strings.Replace(minimal(""), "[[backend]]", "created = 2026-01-15\n[[backend]]", 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, _, err := Parse("fuzz.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if file.Route.Primary == "" || len(file.Backend) == 0 || len(file.Prefix) == 0 {
			t.Fatalf("valid file without route/backends/prefixes")
		}
	})
}

// Every [server.limits] key reaches the proxy: each field set to a distinct non-zero value
// must come out non-zero in proxy.Limits (a field left out of Limits.Proxy stays zero).
func TestLimitsMapEveryKey(t *testing.T) {
	var l Limits
	v := reflect.ValueOf(&l).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		default: // Duration
			f.Set(reflect.ValueOf(Duration(time.Duration(i+1) * time.Millisecond)))
		}
	}
	var nonZero func(reflect.Value) int
	nonZero = func(v reflect.Value) int {
		n := 0
		for i := range v.NumField() {
			if f := v.Field(i); f.Kind() == reflect.Struct {
				n += nonZero(f)
			} else if !f.IsZero() {
				n++
			}
		}
		return n
	}
	if got, want := nonZero(reflect.ValueOf(l.Proxy())), v.NumField(); got != want {
		t.Errorf("%d of the %d [server.limits] keys reach proxy.Limits", got, want)
	}
}
