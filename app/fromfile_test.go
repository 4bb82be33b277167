package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/sigv4"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="

// testCA signs server certificates for 127.0.0.1 / localhost.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

// writeLeaf writes a leaf for 127.0.0.1 with the given serial to certFile/keyFile.
func (ca *testCA) writeLeaf(t *testing.T, certFile, keyFile string, serial int64, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "xks.test"},
		DNSNames: []string{"xks.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

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

// gauge returns the value of the metric name with the given labels.
func gauge(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}

func TestFromFileFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	ca.writeLeaf(t, certFile, keyFile, 1001, time.Now().Add(10*24*time.Hour))
	// A long poll interval: only ReloadTLS can pick the change up within the test.
	a := start(t, writeConfig(t, dir, "mode = \"files\"\ncert_file = \"fullchain.pem\"\nkey_file = \"privkey.pem\"\npoll_interval = \"1h\""))
	reg := a.Proxy.Registry()

	if got := servedLeaf(t, a, ca.pool).SerialNumber.Int64(); got != 1001 {
		t.Fatalf("served serial %d, want 1001", got)
	}
	if a.Proxy.MetricsAddr() != nil {
		t.Errorf("metrics_listen = \"off\" but a metrics listener runs on %v", a.Proxy.MetricsAddr())
	}
	days, ok := gauge(t, reg, certs.MetricCertificateExpiryDays, map[string]string{"source": "files", "domain": "xks.test"})
	if !ok || days < 9 || days > 10 {
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
		{"replaced file is served", func() { ca.writeLeaf(t, certFile, keyFile, 1002, time.Now().Add(60*24*time.Hour)) }, false, 1002, 1, 0},
		{"garbage is refused, previous kept", func() {
			if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, 1002, 1, 1},
		{"expired replacement is refused", func() { ca.writeLeaf(t, certFile, keyFile, 1003, time.Now().Add(-time.Minute)) }, true, 1002, 1, 2},
		{"valid again", func() { ca.writeLeaf(t, certFile, keyFile, 1004, time.Now().Add(30*24*time.Hour)) }, false, 1004, 2, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.write()
			err := a.ReloadTLS()
			if (err != nil) != st.wantErr {
				t.Fatalf("ReloadTLS: %v, want error %v", err, st.wantErr)
			}
			if got := servedLeaf(t, a, ca.pool).SerialNumber.Int64(); got != st.wantSerial {
				t.Errorf("served serial %d, want %d", got, st.wantSerial)
			}
			s, _ := gauge(t, reg, certs.MetricCertificateReloads, map[string]string{"source": "files", "result": "success"})
			f, _ := gauge(t, reg, certs.MetricCertificateReloads, map[string]string{"source": "files", "result": "failure"})
			if s != st.success || f != st.failure {
				t.Errorf("reloads success %v failure %v, want %v %v", s, f, st.success, st.failure)
			}
		})
	}
	days, _ = gauge(t, reg, certs.MetricCertificateExpiryDays, map[string]string{"source": "files", "domain": "xks.test"})
	if days < 29 || days > 30 {
		t.Errorf("expiry days after reload = %v, want about 30", days)
	}
}

func TestFromFileCredentialAges(t *testing.T) {
	dir := t.TempDir()
	a := start(t, writeConfig(t, dir, "mode = \"self-signed\"\nhosts = [\"127.0.0.1\"]"))
	reg := a.Proxy.Registry()
	age := func(id string) (float64, bool) {
		return gauge(t, reg, certs.MetricCredentialAgeDays, map[string]string{"prefix": "/aws", "access_key_id": id})
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
	if _, ok := gauge(t, reg, certs.MetricCertificateExpiryDays, map[string]string{"source": "self-signed"}); !ok {
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
