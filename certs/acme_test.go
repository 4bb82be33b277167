package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/internal/metrictest"
)

func TestACMEConfigCheck(t *testing.T) {
	base := func() ACMEConfig {
		return ACMEConfig{Domains: []string{"XKS.example.com"}, StorageDir: "/tmp/x"}
	}
	tests := []struct {
		name    string
		mod     func(*ACMEConfig)
		wantErr string
		check   func(*testing.T, ACMEConfig)
	}{
		{name: "defaults", mod: func(*ACMEConfig) {}, check: func(t *testing.T, c ACMEConfig) {
			if c.CA != LetsEncryptProduction || c.Challenge != ChallengeTLSALPN01 || c.TLSALPNPort != 443 {
				t.Errorf("defaults: %+v", c)
			}
			if c.PreferredChainRoot != ISRGRootX1 {
				t.Errorf("preferred chain for Let's Encrypt = %q, want %q", c.PreferredChainRoot, ISRGRootX1)
			}
			if c.Domains[0] != "xks.example.com" {
				t.Errorf("domain not normalised: %q", c.Domains[0])
			}
		}},
		{name: "other CA has no default chain preference", mod: func(c *ACMEConfig) { c.CA = "https://acme.example.net/dir" },
			check: func(t *testing.T, c ACMEConfig) {
				if c.PreferredChainRoot != "" {
					t.Errorf("preferred chain = %q", c.PreferredChainRoot)
				}
			}},
		{name: "no domains", mod: func(c *ACMEConfig) { c.Domains = nil }, wantErr: "at least one domain"},
		{name: "ip address", mod: func(c *ACMEConfig) { c.Domains = []string{"10.0.0.1"} }, wantErr: "not a DNS name"},
		{name: "with port", mod: func(c *ACMEConfig) { c.Domains = []string{"xks.example.com:443"} }, wantErr: "not a DNS name"},
		{name: "no storage", mod: func(c *ACMEConfig) { c.StorageDir = "" }, wantErr: "storage_dir"},
		{name: "bad ca", mod: func(c *ACMEConfig) { c.CA = "acme.example.net" }, wantErr: "directory URL"},
		{name: "bad challenge", mod: func(c *ACMEConfig) { c.Challenge = "http-01" }, wantErr: "challenge"},
		{name: "bad ratio", mod: func(c *ACMEConfig) { c.RenewalWindowRatio = 1.5 }, wantErr: "ratio"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.CheckAndSetDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestACMEDNS01NeedsProvider(t *testing.T) {
	_, err := NewACME(context.Background(), ACMEConfig{
		Domains: []string{"xks.example.com"}, StorageDir: t.TempDir(), Challenge: ChallengeDNS01,
	})
	if !errors.Is(err, ErrDNSProviderRequired) || !strings.Contains(err.Error(), "extension point") {
		t.Fatalf("err = %v, want ErrDNSProviderRequired", err)
	}
}

// TestACMEPebble runs the real ACME flow against Debian's pebble: issue with
// TLS-ALPN-01 answered by this process, serve, renew in the background under
// an open connection, prefer an alternate chain, and start with the CA down.
func TestACMEPebble(t *testing.T) {
	p := startPebble(t, pebbleOpts{validity: 30 * time.Second, alternateRoots: 1})
	root0 := p.root(t, 0)
	roots0 := x509.NewCertPool()
	roots0.AddCert(root0)

	storage := filepath.Join(t.TempDir(), "acme") // created by NewACME
	newCfg := func(storageDir string, reg prometheus.Registerer) (ACMEConfig, *logBuf) {
		log, buf := testLogger(t)
		return ACMEConfig{
			Domains:            []string{"localhost"},
			CA:                 p.dirURL,
			Email:              "ops@example.com",
			StorageDir:         storageDir,
			TrustedRoots:       p.httpsCAs,
			TLSALPNPort:        p.tlsPort,
			ListenHost:         "127.0.0.1",
			RenewCheckInterval: 500 * time.Millisecond,
			ObtainTimeout:      30 * time.Second,
			Logger:             log,
			Metrics:            NewMetrics(reg),
		}, buf
	}

	var lastSerial string
	t.Run("issue serve renew", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cfg, _ := newCfg(storage, reg)
		cfg.RenewalWindowRatio = 0.75 // renew ~7.5 s into a 30 s certificate
		cfg.PreferredChainRoot = root0.Subject.CommonName
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// No server on the TLS-ALPN port yet: certmagic answers the first
		// challenge on a listener of its own, as at first start in production.
		a, err := NewACME(ctx, cfg)
		if err != nil {
			t.Fatalf("NewACME: %v", err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- a.Run(ctx) }()

		if got := a.TLSConfig().NextProtos; strings.Join(got, ",") != "h2,http/1.1,acme-tls/1" {
			t.Errorf("NextProtos = %v", got)
		}
		// Serve on the TLS-ALPN port: renewals are validated through it.
		addr, stopServer := serveTLS(t, a.TLSConfig(), p.tlsPort)
		chain := handshake(t, addr, "localhost", roots0)
		first := chain[0]
		if first.DNSNames[0] != "localhost" {
			t.Fatalf("leaf names %v", first.DNSNames)
		}
		if d, ok := metrictest.Value(t, reg, MetricCertificateExpirySeconds, map[string]string{"source": "acme", "domain": "localhost"}); !ok || d <= 0 || d > 60 {
			t.Errorf("expiry seconds = %v (present %v), want in (0, 60] for a 30 s certificate", d, ok)
		}
		checkPrivateStorage(t, storage)

		ka := dialKeepAlive(t, addr, "localhost", roots0)
		ka.get(t)
		deadline := time.Now().Add(25 * time.Second)
		var renewed *x509.Certificate
		for time.Now().Before(deadline) {
			leaf := handshake(t, addr, "localhost", roots0)[0]
			if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
				renewed = leaf
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if renewed == nil {
			t.Fatalf("served certificate not renewed within 25 s (serial %s)", first.SerialNumber)
		}
		if !renewed.NotAfter.After(first.NotAfter) {
			t.Errorf("renewed NotAfter %v not after %v", renewed.NotAfter, first.NotAfter)
		}
		ka.get(t) // the connection opened before the renewal still works
		if n, _ := metrictest.Value(t, reg, MetricCertificateReloads, map[string]string{"source": "acme", "result": "success"}); n < 2 {
			t.Errorf("reloads{acme,success} = %v, want >= 2 (obtain + renewal)", n)
		}
		lastSerial = a.Leaf("localhost").SerialNumber.String()
		stopServer()
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	t.Run("preferred alternate chain", func(t *testing.T) {
		alt := p.root(t, 1)
		cfg, _ := newCfg(t.TempDir(), nil)
		cfg.PreferredChainRoot = alt.Subject.CommonName
		a, err := NewACME(context.Background(), cfg)
		if err != nil {
			t.Fatalf("NewACME: %v", err)
		}
		defer a.cache.Stop()
		altPool := x509.NewCertPool()
		altPool.AddCert(alt)
		addr, _ := serveTLS(t, a.TLSConfig(), 0)
		chain := handshake(t, addr, "localhost", altPool)
		if top := chain[len(chain)-1]; top.Issuer.CommonName != alt.Subject.CommonName {
			t.Errorf("chain ends at issuer %q, want preferred root %q", top.Issuer.CommonName, alt.Subject.CommonName)
		}
	})

	// From here on the CA is unreachable.
	p.stop()

	t.Run("CA unreachable with cache keeps serving", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cfg, _ := newCfg(storage, reg)
		a, err := NewACME(context.Background(), cfg)
		if err != nil {
			t.Fatalf("NewACME with a cached certificate and the CA down: %v", err)
		}
		defer a.cache.Stop()
		if got := a.Leaf("localhost"); got == nil || got.SerialNumber.String() != lastSerial {
			t.Fatalf("served %v, want the cached certificate %s", got, lastSerial)
		}
		addr, _ := serveTLS(t, a.TLSConfig(), 0)
		if leaf := handshake(t, addr, "localhost", roots0)[0]; leaf.SerialNumber.String() != lastSerial {
			t.Errorf("handshake served serial %s, want %s", leaf.SerialNumber, lastSerial)
		}
	})

	t.Run("CA unreachable without cache is a clear error", func(t *testing.T) {
		cfg, _ := newCfg(t.TempDir(), nil)
		cfg.ObtainTimeout = 10 * time.Second
		_, err := NewACME(context.Background(), cfg)
		if !errors.Is(err, ErrCAUnreachable) {
			t.Fatalf("err = %v, want ErrCAUnreachable", err)
		}
		if !strings.Contains(err.Error(), p.dirURL) || !strings.Contains(err.Error(), "localhost") {
			t.Errorf("error %q should name the CA URL and the domain", err)
		}
	})
}

// checkPrivateStorage asserts that the storage directory is 0700 and every
// key file is 0600.
func checkPrivateStorage(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("storage dir mode %v, want 0700", fi.Mode().Perm())
	}
	keys := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".key") {
			keys++
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", path, info.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys < 2 { // account key + certificate key
		t.Errorf("found %d key files in %s, want >= 2", keys, dir)
	}
}
