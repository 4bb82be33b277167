package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/internal/metrictest"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

func TestFilesLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "files test CA", time.Now().Add(48*time.Hour))
	good, goodKey := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	ca.WriteLeaf(t, good, goodKey, 0, time.Now().Add(time.Hour), "xks.test")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not pem"), 0o600)
	tests := []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), goodKey, "nope.pem"},
		{"missing key", good, filepath.Join(dir, "nokey.pem"), "nokey.pem"},
		{"bad cert", garbage, goodKey, "garbage.pem"},
		{"empty", "", "", "cert_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewFiles(FilesConfig{CertFile: tc.cert, KeyFile: tc.key})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestFilesReload(t *testing.T) {
	tests := []struct {
		name     string
		replace  func(t *testing.T, ca *testpki.CA, certFile, keyFile string)
		changes  bool
		explicit bool // Reload() rather than Run's polling
	}{
		{name: "poll picks up a new pair", changes: true, replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			ca.WriteLeaf(t, c, k, 0, time.Now().Add(2*time.Hour), "xks.test")
		}},
		{name: "Reload picks up a new pair", changes: true, explicit: true, replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			ca.WriteLeaf(t, c, k, 0, time.Now().Add(2*time.Hour), "xks.test")
		}},
		{name: "mismatched key keeps old", replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			certPEM, _ := ca.Leaf(t, 0, time.Now().Add(2*time.Hour), "xks.test")
			os.WriteFile(c, certPEM, 0o600)
		}},
		{name: "mismatched key keeps old (Reload)", explicit: true, replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			certPEM, _ := ca.Leaf(t, 0, time.Now().Add(2*time.Hour), "xks.test")
			os.WriteFile(c, certPEM, 0o600)
		}},
		{name: "truncated cert keeps old", replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			os.WriteFile(c, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n"), 0o600)
		}},
		{name: "expired replacement keeps old", explicit: true, replace: func(t *testing.T, ca *testpki.CA, c, k string) {
			ca.WriteLeaf(t, c, k, 0, time.Now().Add(-time.Minute), "xks.test")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := testpki.NewCA(t, "files test CA", time.Now().Add(48*time.Hour))
			certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			ca.WriteLeaf(t, certFile, keyFile, 0, time.Now().Add(time.Hour), "xks.test")
			reg := prometheus.NewRegistry()
			log, _ := testLogger(t)
			f, err := NewFiles(FilesConfig{CertFile: certFile, KeyFile: keyFile, PollInterval: 20 * time.Millisecond, Logger: log, Metrics: NewMetrics(reg)})
			if err != nil {
				t.Fatal(err)
			}
			addr, _ := serveTLS(t, f.TLSConfig(), 0)
			first := handshake(t, addr, "xks.test", ca.Pool)[0]
			ka := dialKeepAlive(t, addr, "xks.test", ca.Pool)
			ka.get(t)

			// A different mtime guarantees the poller sees a change even on
			// coarse-grained file systems.
			tc.replace(t, ca, certFile, keyFile)
			later := time.Now().Add(time.Minute)
			os.Chtimes(certFile, later, later)

			var reloadErr error
			if tc.explicit {
				reloadErr = f.Reload()
			} else {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { f.Run(ctx); close(done) }()
				// Wait until the poller has acted (success or failure).
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) {
					s, _ := metrictest.Value(t, reg, MetricCertificateReloads, map[string]string{"result": "success"})
					fl, _ := metrictest.Value(t, reg, MetricCertificateReloads, map[string]string{"result": "failure"})
					if s+fl > 0 {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				cancel()
				<-done
			}
			leaf := handshake(t, addr, "xks.test", ca.Pool)[0]
			changed := leaf.SerialNumber.Cmp(first.SerialNumber) != 0
			if changed != tc.changes {
				t.Fatalf("served certificate changed = %v, want %v", changed, tc.changes)
			}
			result := "failure"
			if tc.changes {
				result = "success"
			}
			if n, _ := metrictest.Value(t, reg, MetricCertificateReloads, map[string]string{"source": "files", "result": result}); n != 1 {
				t.Errorf("reloads{files,%s} = %v, want 1", result, n)
			}
			if tc.explicit && (reloadErr == nil) == !tc.changes {
				t.Errorf("Reload() = %v", reloadErr)
			}
			if d, ok := metrictest.Value(t, reg, MetricCertificateExpirySeconds, map[string]string{"source": "files", "domain": "xks.test"}); !ok || d <= 0 {
				t.Errorf("expiry seconds = %v (present %v)", d, ok)
			}
			ka.get(t) // established connections are never closed by a reload
		})
	}
}

func TestFilesPollUnchangedIsQuiet(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "files test CA", time.Now().Add(48*time.Hour))
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.WriteLeaf(t, certFile, keyFile, 0, time.Now().Add(time.Hour), "xks.test")
	reg := prometheus.NewRegistry()
	f, err := NewFiles(FilesConfig{CertFile: certFile, KeyFile: keyFile, Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	// Touch without changing contents: no reload counted.
	later := time.Now().Add(time.Minute)
	os.Chtimes(certFile, later, later)
	f.poll()
	f.poll()
	if n, ok := metrictest.Value(t, reg, MetricCertificateReloads, nil); ok && n != 0 {
		t.Errorf("reloads = %v after touching unchanged files, want 0", n)
	}
}

func FuzzParseKeyPair(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "fuzz"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0), DNSNames: []string{"fuzz"}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := "-----BEGIN CERTIFICATE-----\n" + b64(der) + "\n-----END CERTIFICATE-----\n"
	keyPEM := "-----BEGIN EC PRIVATE KEY-----\n" + b64(kder) + "\n-----END EC PRIVATE KEY-----\n"
	f.Add([]byte(certPEM), []byte(keyPEM))
	f.Add([]byte(certPEM), []byte(certPEM))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), []byte(keyPEM))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, c, k []byte) {
		cert, err := ParseKeyPair(c, k)
		if err == nil && (cert.Leaf == nil || len(cert.Certificate) == 0) {
			t.Fatal("success without a leaf")
		}
	})
}
