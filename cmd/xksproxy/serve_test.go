package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
)

const testSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="

// syncBuf is a log sink safe for the proxy's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// writeSelfSignedPair writes a self-signed ECDSA certificate for xks.test with the given serial.
func writeSelfSignedPair(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "xks.test"},
		DNSNames: []string{"xks.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
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

func serveTestConfig(creds string) string {
	return `
[server]
listen = "127.0.0.1:0"
metrics_listen = "off"
[tls]
mode = "files"
cert_file = "c.pem"
key_file = "k.pem"
poll_interval = "1h"
[[prefix]]
path = "/aws"
region = "us-east-1"
` + creds + `
[[backend]]
name = "a"
xks_url = "http://127.0.0.1:1/aws"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = "` + testSecret + `"
[health]
disabled = true
`
}

const (
	credOld = "[[prefix.credential]]\naccess_key_id = \"AKIAXKSPROXYOLDKEY01\"\nsecret_access_key = \"" + testSecret + "\"\ncreated = \"2026-01-01\"\n"
	credNew = "[[prefix.credential]]\naccess_key_id = \"AKIAXKSPROXYNEWKEY02\"\nsecret_access_key = \"" + testSecret + "\"\n"
)

// TestReload drives one SIGHUP's work (reload) through its three outcomes.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "xksproxy.toml")
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writeSelfSignedPair(t, certFile, keyFile, 1)
	if err := os.WriteFile(path, []byte(serveTestConfig(credOld)), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ac, err := app.FromFile(context.Background(), f, "test", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ac)
	if err != nil {
		t.Fatal(err)
	}
	logs.take()

	steps := []struct {
		name   string
		prep   func()
		want   []string
		absent []string
	}{
		{"rotation and new certificate", func() {
			if err := os.WriteFile(path, []byte(serveTestConfig(credOld+credNew)), 0o600); err != nil {
				t.Fatal(err)
			}
			writeSelfSignedPair(t, certFile, keyFile, 2)
		}, []string{
			"reload: credentials applied", "AKIAXKSPROXYNEWKEY02", "no_created_date=[AKIAXKSPROXYNEWKEY02]",
			"age_metric_sets=1", "tls certificate reloaded", "reload: certificate files checked",
			"reload: applied\" key=prefix[0].credential",
		}, []string{"level=ERROR", "restart to apply"}},
		{"other edits need a restart, each named", func() {
			doc := strings.Replace(serveTestConfig(credOld+credNew), "[health]\n", "timeout = \"150ms\"\n[health]\ninterval = \"20s\"\n", 1)
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{
			`msg="reload: changed but not applied: restart to apply" key=backend[0].timeout`,
			`msg="reload: changed but not applied: restart to apply" key=health.interval`,
		}, []string{"reload: applied\" key=prefix", "level=ERROR"}},
		{"refused configuration still reloads the certificate", func() {
			if err := os.WriteFile(path, []byte("[server\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			writeSelfSignedPair(t, certFile, keyFile, 3)
		}, []string{"reload: configuration refused", "tls certificate reloaded"}, []string{"credentials applied"}},
		{"bad certificate is refused", func() {
			if err := os.WriteFile(path, []byte(serveTestConfig(credNew)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"reload: credentials applied", "reload: certificate files refused"}, []string{"tls certificate reloaded"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.prep()
			reload(path, f, a, log)
			out := logs.take()
			for _, w := range st.want {
				if !strings.Contains(out, w) {
					t.Errorf("log lacks %q:\n%s", w, out)
				}
			}
			for _, w := range st.absent {
				if strings.Contains(out, w) {
					t.Errorf("log has %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, testSecret) {
				t.Errorf("log leaks the secret")
			}
		})
	}
}
