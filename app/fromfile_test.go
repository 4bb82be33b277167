package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/internal/metrictest"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/sigv4"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="

// unusedURL is a loopback URL nothing listens on (the backend is never reached: health is off).
func unusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/aws"
}

// writeConfig writes an xksproxy.toml with the given [tls] body and returns its path.
func writeConfig(t *testing.T, dir, tlsBody string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "xks-secret"), []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `
[server]
listen = "127.0.0.1:0"
metrics_listen = "off"

[tls]
` + tlsBody + `

[[prefix]]
path = "/aws"
region = "us-east-1"

[[prefix.credential]]
access_key_id = "AKIAXKSPROXYOLDKEY01"
secret_access_key = "` + testSecret + `"
created = "2026-01-15T00:00:00Z"

[[prefix.credential]]
access_key_id = "AKIAXKSPROXYNEWKEY02"
secret_access_key_file = "xks-secret"

[[prefix.credential]]
access_key_id = "AKIAXKSPROXYNODATE03"
secret_access_key = "` + testSecret + `"

[[backend]]
name = "a"
xks_url = "` + unusedURL(t) + `"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = "` + testSecret + `"

[health]
disabled = true
`
	p := filepath.Join(dir, "xksproxy.toml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start loads path through config.Load and FromFile, runs the App and returns it once it listens.
func start(t *testing.T, path string) *App {
	t.Helper()
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ac, err := FromFile(ctx, f, "test", nil, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a, err := New(ac)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-a.Proxy.Ready():
	case err := <-errc:
		t.Fatalf("Run returned before ready: %v", err)
	}
	return a
}

// servedLeaf does a real TLS handshake with the App's listener and returns the leaf it served.
func servedLeaf(t *testing.T, a *App, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", a.Proxy.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestFromFileFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "app test CA", time.Now().Add(24*time.Hour))
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	ca.WriteLeaf(t, certFile, keyFile, 1001, time.Now().Add(10*24*time.Hour), "xks.test", "127.0.0.1")
	// A long poll interval: only ReloadTLS can pick the change up within the test.
	a := start(t, writeConfig(t, dir, "mode = \"files\"\ncert_file = \"fullchain.pem\"\nkey_file = \"privkey.pem\"\npoll_interval = \"1h\""))
	reg := a.Proxy.Registry()

	if got := servedLeaf(t, a, ca.Pool).SerialNumber.Int64(); got != 1001 {
		t.Fatalf("served serial %d, want 1001", got)
	}
	if a.Proxy.MetricsAddr() != nil {
		t.Errorf("metrics_listen = \"off\" but a metrics listener runs on %v", a.Proxy.MetricsAddr())
	}
	days, ok := metrictest.Value(t, reg, certs.MetricCertificateExpirySeconds, map[string]string{"source": "files", "domain": "xks.test"})
	if days /= 86400; !ok || days < 9 || days > 10 {
		t.Errorf("expiry days = %v (present %v), want about 10", days, ok)
	}

	steps := []struct {
		name       string
		write      func()
		wantErr    bool
		wantSerial int64
		success    float64
		failure    float64
	}{
		{"replaced file is served", func() {
			ca.WriteLeaf(t, certFile, keyFile, 1002, time.Now().Add(60*24*time.Hour), "xks.test", "127.0.0.1")
		}, false, 1002, 1, 0},
		{"garbage is refused, previous kept", func() {
			if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, 1002, 1, 1},
		{"expired replacement is refused", func() {
			ca.WriteLeaf(t, certFile, keyFile, 1003, time.Now().Add(-time.Minute), "xks.test", "127.0.0.1")
		}, true, 1002, 1, 2},
		{"valid again", func() {
			ca.WriteLeaf(t, certFile, keyFile, 1004, time.Now().Add(30*24*time.Hour), "xks.test", "127.0.0.1")
		}, false, 1004, 2, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.write()
			err := a.ReloadTLS()
			if (err != nil) != st.wantErr {
				t.Fatalf("ReloadTLS: %v, want error %v", err, st.wantErr)
			}
			if got := servedLeaf(t, a, ca.Pool).SerialNumber.Int64(); got != st.wantSerial {
				t.Errorf("served serial %d, want %d", got, st.wantSerial)
			}
			s, _ := metrictest.Value(t, reg, certs.MetricCertificateReloads, map[string]string{"source": "files", "result": "success"})
			f, _ := metrictest.Value(t, reg, certs.MetricCertificateReloads, map[string]string{"source": "files", "result": "failure"})
			if s != st.success || f != st.failure {
				t.Errorf("reloads success %v failure %v, want %v %v", s, f, st.success, st.failure)
			}
		})
	}
	days, _ = metrictest.Value(t, reg, certs.MetricCertificateExpirySeconds, map[string]string{"source": "files", "domain": "xks.test"})
	if days /= 86400; days < 29 || days > 30 {
		t.Errorf("expiry days after reload = %v, want about 30", days)
	}
}

func TestFromFileCredentialAges(t *testing.T) {
	dir := t.TempDir()
	a := start(t, writeConfig(t, dir, "mode = \"self-signed\"\nhosts = [\"127.0.0.1\"]"))
	reg := a.Proxy.Registry()
	age := func(id string) (float64, bool) {
		v, ok := metrictest.Value(t, reg, certs.MetricCredentialAgeSeconds, map[string]string{"prefix": "/aws", "access_key_id": id})
		return v / 86400, ok
	}
	wantOld := time.Since(time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)).Hours() / 24
	if v, ok := age("AKIAXKSPROXYOLDKEY01"); !ok || v < wantOld-1 || v > wantOld+1 {
		t.Errorf("configured created: age %v (present %v), want about %v", v, ok, wantOld)
	}
	if v, ok := age("AKIAXKSPROXYNEWKEY02"); !ok || v < 0 || v > 1 {
		t.Errorf("created from the secret file's mtime (just written): age %v (present %v), want about 0", v, ok)
	}
	if _, ok := age("AKIAXKSPROXYNODATE03"); ok {
		t.Errorf("a set without created and without a secret file has an age series")
	}
	if _, ok := metrictest.Value(t, reg, certs.MetricCertificateExpirySeconds, map[string]string{"source": "self-signed"}); !ok {
		t.Errorf("no expiry series for the self-signed certificate")
	}
	if err := a.ReloadTLS(); !errors.Is(err, ErrNothingToReload) {
		t.Errorf("ReloadTLS on self-signed: %v, want ErrNothingToReload", err)
	}

	// Rotation: the old set goes, its series goes with it.
	newCred := sigv4.Credential{AccessKeyID: "AKIAXKSPROXYNEWKEY02", Secret: testSecret}
	created := time.Now().Add(-48 * time.Hour)
	if err := a.SetCredentials("/aws", []sigv4.Credential{newCred}, []certs.CredentialAge{{AccessKeyID: newCred.AccessKeyID, Created: created}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := age("AKIAXKSPROXYOLDKEY01"); ok {
		t.Errorf("removed set still has an age series")
	}
	if v, ok := age("AKIAXKSPROXYNEWKEY02"); !ok || v < 1.9 || v > 2.1 {
		t.Errorf("age after rotation %v (present %v), want 2", v, ok)
	}
	if err := a.SetCredentials("/nope", []sigv4.Credential{newCred}, nil); err == nil {
		t.Errorf("SetCredentials on an unknown prefix succeeded")
	}
}

func TestFromFileTLSErrors(t *testing.T) {
	const acme = "mode = \"acme\"\ndomains = [\"xks.example.com\"]\nstorage_dir = \"acme\"\n"
	// None of these reaches the network: each fails before an ACME order.
	tests := []struct {
		name, listen, tls, want string
	}{
		{"missing cert file", "127.0.0.1:0", "mode = \"files\"\ncert_file = \"nope.pem\"\nkey_file = \"nope.key\"", "xksproxy.toml: tls: "},
		{"acme on port 0", "127.0.0.1:0", acme, "acme needs a fixed port"},
		{"roots without certificates", "127.0.0.1:8443", acme + "trusted_roots_file = \"roots.pem\"", "no PEM certificate found"},
		{"dns-01 without provider", "127.0.0.1:8443", acme + "challenge = \"dns-01\"", "DNS provider"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "roots.pem"), []byte("nothing here"), 0o600); err != nil {
				t.Fatal(err)
			}
			path := writeConfig(t, dir, tc.tls)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.Replace(string(b), `listen = "127.0.0.1:0"`, `listen = "`+tc.listen+`"`, 1))
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			f, _, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = FromFile(context.Background(), f, "test", nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("FromFile: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
