package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// SelfSignedSource serves a throw-away self-signed ECDSA P-256 certificate.
// For development (`serve --dev`, demos, tests) only: AWS KMS rejects it.
type SelfSignedSource struct {
	cert    tls.Certificate
	leaf    *x509.Certificate
	metrics *Metrics
}

// SelfSigned creates a certificate valid for one year for hosts (DNS names or
// IP addresses; default "localhost" and 127.0.0.1).
func SelfSigned(hosts ...string) (*SelfSignedSource, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"xksproxy development"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root, so clients can trust it via CertPool
	}
	for _, h := range hosts {
		if h == "" {
			return nil, errors.New("certs: self-signed: empty host")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: self-signed certificate: %w", err)
	}
	return &SelfSignedSource{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		leaf: leaf,
	}, nil
}

// Certificate returns the leaf (also its own root).
func (s *SelfSignedSource) Certificate() *x509.Certificate { return s.leaf }

// CertPool returns a pool holding the certificate, for clients.
func (s *SelfSignedSource) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.leaf)
	return p
}

// SetMetrics reports the certificate's expiry through m.
func (s *SelfSignedSource) SetMetrics(m *Metrics) {
	s.metrics = m
	m.setLeaf(sourceSelfSigned, leafDomain(s.leaf), s.leaf)
}

// TLSConfig implements Source.
func (s *SelfSignedSource) TLSConfig() *tls.Config {
	return baseTLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.cert, nil })
}

// Run implements Source: nothing to do in the background.
func (s *SelfSignedSource) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
