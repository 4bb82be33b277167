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
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/internal/metrictest"
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

// TestReload drives SIGHUPs (reload) on a running configuration: a credential rotation and a
// new certificate apply to the proxy in service; other edits start a new proxy on the same
// socket; a listen address is not applied and says so; a refused file still re-reads the
// certificate; a certificate that does not load refuses the reload and keeps the previous one.
// xks_config_reloads_total counts each outcome.
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
	reg := prometheus.NewRegistry()
	sockets := app.NewSockets(func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) })
	defer sockets.Close()
	live, err := app.NewLive(context.Background(), app.LiveConfig{Path: path, Version: "test", Logger: log, Sockets: sockets, Registry: reg,
		Setup: func(ctx context.Context, f *config.File) (app.Config, error) {
			ac, err := app.FromFile(ctx, f, "test", log, nil)
			return ac, f.Locate(err)
		}}, f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- live.Run(ctx, func() { close(ready) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	<-ready
	addr := live.Proxy().Addr().String()
	logs.take()

	steps := []struct {
		name     string
		prep     func()
		newProxy bool
		want     []string
		absent   []string
	}{
		{"rotation and new certificate", func() {
			if err := os.WriteFile(path, []byte(serveTestConfig(credOld+credNew)), 0o600); err != nil {
				t.Fatal(err)
			}
			writeSelfSignedPair(t, certFile, keyFile, 2)
		}, false, []string{
			"credentials replaced", "AKIAXKSPROXYNEWKEY02", "reload: applied", "tls certificate reloaded", "reload: certificate files checked",
		}, []string{"level=ERROR", "not applied", "xksproxy serving"}},
		{"other edits start a new proxy on the same socket", func() {
			doc := strings.Replace(serveTestConfig(credOld+credNew), "[health]\n", "timeout = \"150ms\"\n[health]\ninterval = \"20s\"\n", 1)
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, []string{"reload: applied", "xksproxy serving"}, []string{"level=ERROR", "not applied"}},
		{"a listen address is not applied", func() {
			doc := strings.Replace(serveTestConfig(credOld+credNew), `listen = "127.0.0.1:0"`, `listen = "127.0.0.1:1"`, 1)
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, []string{"reload: applied", `msg="reload: changed but not applied`, "key=server.listen"}, []string{"level=ERROR"}},
		{"refused configuration still reloads the certificate", func() {
			if err := os.WriteFile(path, []byte("[server\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			writeSelfSignedPair(t, certFile, keyFile, 3)
		}, false, []string{"reload: refused", "xksproxy.toml:2", "tls certificate reloaded"}, []string{"reload: applied", "credentials replaced"}},
		{"a certificate that does not load refuses the reload", func() {
			if err := os.WriteFile(path, []byte(serveTestConfig(credNew)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, []string{"reload: refused", "tls", "reload: certificate files refused"}, []string{"reload: applied", "tls certificate reloaded"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before := live.Proxy()
			st.prep()
			reload(context.Background(), live, log)
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
			if got := live.Proxy() != before; got != st.newProxy {
				t.Errorf("new proxy: %v, want %v", got, st.newProxy)
			}
			if a := live.Proxy().Addr().String(); a != addr {
				t.Errorf("the proxy serves %s, not the socket it started on (%s)", a, addr)
			}
		})
	}
	for result, want := range map[string]float64{"applied": 3, "refused": 2, "failed": 0} {
		if got, _ := metrictest.Value(t, reg, "xks_config_reloads_total", map[string]string{"result": result}); got != want {
			t.Errorf("xks_config_reloads_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}
