package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// Challenge types.
const (
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = certmagic.LetsEncryptProductionCA

// ISRGRootX1 is the Let's Encrypt root on AWS KMS's trust list (ISRG Root X2
// is not on it), preferred by default when the CA is Let's Encrypt.
const ISRGRootX1 = "ISRG Root X1"

// ErrDNSProviderRequired is returned for challenge "dns-01" without a
// DNSProvider: DNS-01 is an extension point (see deploy/README.md).
var ErrDNSProviderRequired = errors.New("certs: ACME challenge dns-01 needs a DNS provider: it is an extension point; set ACMEConfig.DNSProvider to a libdns provider (see deploy/README.md), or use tls-alpn-01")

// ErrCAUnreachable wraps the failure to obtain a first certificate when no
// cached certificate exists.
var ErrCAUnreachable = errors.New("certs: ACME CA unreachable or refused the order and no cached certificate exists")

// ACMEConfig configures an ACME source.
type ACMEConfig struct {
	// Domains are the DNS names of the certificate (the XKS endpoint's
	// host name first). Required; IP addresses are refused (XKS needs a
	// DNS name).
	Domains []string
	// CA is the ACME directory URL (default Let's Encrypt production).
	CA string
	// Email is the ACME account contact (recommended: expiry notices).
	Email string
	// StorageDir holds the ACME account, certificates and keys. Created
	// 0700; certmagic writes files 0600. Required.
	StorageDir string
	// Challenge is "tls-alpn-01" (default: answered on the serving port) or
	// "dns-01" (needs DNSProvider).
	Challenge string
	// DNSProvider solves dns-01 (any libdns provider); nil with dns-01 is
	// ErrDNSProviderRequired.
	DNSProvider certmagic.DNSProvider
	// PreferredChainRoot is the root CN of the chain to serve when the CA
	// offers alternates (default ISRGRootX1 when CA is Let's Encrypt
	// production).
	PreferredChainRoot string
	// TrustedRoots verifies the CA's HTTPS (nil: system roots). For test
	// CAs such as pebble.
	TrustedRoots *x509.CertPool
	// TLSALPNPort is the local port the CA's TLS-ALPN-01 validation
	// connections arrive on: the serving port (443, or 8443 when a load
	// balancer or Service maps 443 to it). When nothing listens there yet
	// (first issuance before the server starts), certmagic briefly listens
	// on it itself. Default 443.
	TLSALPNPort int
	// ListenHost restricts that temporary challenge listener to one address
	// (default: all).
	ListenHost string
	// RenewalWindowRatio is the remaining fraction of the lifetime at which
	// renewal starts (default certmagic's 1/3).
	RenewalWindowRatio float64
	// RenewCheckInterval is how often the background maintenance checks for
	// renewals (default certmagic's 10 minutes).
	RenewCheckInterval time.Duration
	// ObtainTimeout bounds the first obtain at start (default 2 minutes).
	ObtainTimeout time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
	// Now is the clock used for the "expired cache" decision.
	Now func() time.Time
}

// CheckAndSetDefaults validates c and fills defaults.
func (c *ACMEConfig) CheckAndSetDefaults() error {
	if len(c.Domains) == 0 {
		return errors.New("certs: acme mode needs at least one domain")
	}
	for i, d := range c.Domains {
		d = strings.ToLower(strings.TrimSpace(d))
		if !certmagic.SubjectQualifiesForCert(d) || net.ParseIP(d) != nil || strings.Contains(d, ":") {
			return fmt.Errorf("certs: acme domain %q is not a DNS name", d)
		}
		c.Domains[i] = d
	}
	if c.CA == "" {
		c.CA = LetsEncryptProduction
	}
	u, err := url.Parse(c.CA)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("certs: acme ca %q is not a directory URL", c.CA)
	}
	if c.StorageDir == "" {
		return errors.New("certs: acme mode needs storage_dir")
	}
	switch c.Challenge {
	case "":
		c.Challenge = ChallengeTLSALPN01
	case ChallengeTLSALPN01:
	case ChallengeDNS01:
		if c.DNSProvider == nil {
			return ErrDNSProviderRequired
		}
	default:
		return fmt.Errorf("certs: acme challenge %q: want %q or %q", c.Challenge, ChallengeTLSALPN01, ChallengeDNS01)
	}
	if c.PreferredChainRoot == "" && c.CA == certmagic.LetsEncryptProductionCA {
		c.PreferredChainRoot = ISRGRootX1
	}
	if c.TLSALPNPort == 0 {
		c.TLSALPNPort = certmagic.TLSALPNChallengePort
	}
	if c.TLSALPNPort < 0 || c.TLSALPNPort > 65535 {
		return fmt.Errorf("certs: acme tls-alpn port %d out of range", c.TLSALPNPort)
	}
	if c.RenewalWindowRatio < 0 || c.RenewalWindowRatio >= 1 {
		return fmt.Errorf("certs: acme renewal window ratio %v: want 0 < r < 1", c.RenewalWindowRatio)
	}
	if c.RenewCheckInterval <= 0 {
		c.RenewCheckInterval = certmagic.DefaultRenewCheckInterval
	}
	if c.ObtainTimeout <= 0 {
		c.ObtainTimeout = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// ACME serves certificates obtained and renewed by certmagic.
type ACME struct {
	cfg   ACMEConfig
	cache *certmagic.Cache
	magic *certmagic.Config
	tls   *tls.Config
}

// NewACME loads the certificates from storage or obtains them. When the CA
// cannot be reached (or refuses) and a cached, unexpired certificate exists,
// it keeps serving that one, logs a warning and lets the background
// maintenance retry; without one it returns an error wrapping
// ErrCAUnreachable that names the CA URL.
func NewACME(ctx context.Context, cfg ACMEConfig) (*ACME, error) {
	cfg.Domains = append([]string(nil), cfg.Domains...)
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	if err := ensurePrivateDir(cfg.StorageDir, cfg.Logger); err != nil {
		return nil, err
	}
	zl := newZapLogger(cfg.Logger)
	a := &ACME{cfg: cfg}
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             zl,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		RenewalWindowRatio: cfg.RenewalWindowRatio,
		Storage:            &certmagic.FileStorage{Path: cfg.StorageDir},
		KeySource:          certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OnEvent:            a.onEvent,
		Logger:             zl,
	})
	tmpl := certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		Email:                   cfg.Email,
		Agreed:                  true, // configuring an ACME CA is accepting its terms
		DisableHTTPChallenge:    true, // AWS reaches only 443; port 80 is not ours
		DisableTLSALPNChallenge: cfg.Challenge != ChallengeTLSALPN01,
		AltTLSALPNPort:          cfg.TLSALPNPort,
		ListenHost:              cfg.ListenHost,
		TrustedRoots:            cfg.TrustedRoots,
		Logger:                  zl,
	}
	if cfg.PreferredChainRoot != "" {
		tmpl.PreferredChains = certmagic.ChainPreference{RootCommonName: []string{cfg.PreferredChainRoot}}
	}
	if cfg.Challenge == ChallengeDNS01 {
		tmpl.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{DNSProvider: cfg.DNSProvider, Logger: zl}}
	}
	a.magic.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(a.magic, tmpl)}

	octx, cancel := context.WithTimeout(ctx, cfg.ObtainTimeout)
	defer cancel()
	for _, d := range cfg.Domains {
		// One domain at a time: ManageSync stops at the first failure, and
		// each domain may have its own cached certificate.
		err := a.magic.ManageSync(octx, []string{d})
		if err == nil {
			continue
		}
		leaf := a.Leaf(d)
		if leaf == nil || cfg.Now().After(leaf.NotAfter) {
			a.cache.Stop()
			return nil, fmt.Errorf("%w: domain %s, CA %s, storage %s: %w", ErrCAUnreachable, d, cfg.CA, cfg.StorageDir, err)
		}
		cfg.Metrics.reloaded(sourceACME, err)
		cfg.Logger.Warn("acme: cannot renew at start; serving the cached certificate and retrying in the background",
			"domain", d, "ca", cfg.CA, "not_after", leaf.NotAfter.UTC(), "error", err)
	}
	for _, d := range cfg.Domains {
		cfg.Metrics.setLeafFunc(sourceACME, d, func() *x509.Certificate { return a.Leaf(d) })
	}

	base := a.magic.TLSConfig()
	a.tls = baseTLSConfig(base.GetCertificate)
	// acme-tls/1 must stay offered for TLS-ALPN-01 on the serving port.
	a.tls.NextProtos = append(a.tls.NextProtos, acmez.ACMETLS1Protocol)
	return a, nil
}

// TLSConfig implements Source.
func (a *ACME) TLSConfig() *tls.Config { return a.tls }

// Run implements Source: renewal runs in certmagic's maintenance goroutine;
// Run stops it when ctx is done.
func (a *ACME) Run(ctx context.Context) error {
	<-ctx.Done()
	a.cache.Stop()
	return nil
}

// Leaf returns the leaf served for domain (the one expiring last if several
// are cached), or nil.
func (a *ACME) Leaf(domain string) *x509.Certificate {
	var best *x509.Certificate
	for _, c := range a.cache.AllMatchingCertificates(domain) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
			best = c.Leaf
		}
	}
	return best
}

func (a *ACME) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		a.cfg.Metrics.reloaded(sourceACME, nil)
		a.cfg.Logger.Info("acme: certificate obtained", "identifier", data["identifier"], "renewal", data["renewal"])
	case "cert_failed":
		err, _ := data["error"].(error)
		if err == nil {
			err = errors.New("unknown")
		}
		a.cfg.Metrics.reloaded(sourceACME, err)
		a.cfg.Logger.Error("acme: certificate obtain or renewal failed", "identifier", data["identifier"],
			"renewal", data["renewal"], "remaining", data["remaining"], "error", err)
	}
	return nil
}

// ensurePrivateDir creates dir 0700, or narrows an existing one to 0700.
func ensurePrivateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: acme storage %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("certs: acme storage %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("certs: acme storage %s: not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("acme storage directory was accessible to group or others; setting 0700", "dir", dir, "mode", fi.Mode().Perm().String())
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("certs: acme storage %s: %w", dir, err)
		}
	}
	return nil
}
