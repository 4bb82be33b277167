package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"time"
)

// serverCipherSuites are the TLS 1.2 suites: ECDHE with AEAD only. The XKS spec names
// TLS_ECDHE_{RSA,ECDSA}_WITH_AES_256_GCM_SHA384 (listed first); the AES-128-GCM ones are required
// by HTTP/2 and ChaCha20 serves clients without AES hardware. TLS 1.3 suites are not configurable
// in Go; its defaults include the spec's TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256.
var serverCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// applyTLSPolicy makes any server configuration the proxy is handed (files, self-signed, ACME)
// follow one policy: TLS 1.2 or later, the suites above unless the caller chose its own, h2 and
// HTTP/1.1 (plus whatever the certificate source needs, e.g. acme-tls/1), session tickets on.
func applyTLSPolicy(c *tls.Config) {
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if len(c.CipherSuites) == 0 {
		c.CipherSuites = slices.Clone(serverCipherSuites)
	}
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"h2", "http/1.1"}
	}
	c.SessionTicketsDisabled = false
}

// SelfSignedTLS makes an ECDSA P-256 self-signed certificate for hosts (DNS names or IPs;
// default "localhost" and 127.0.0.1), valid for one year, for development and tests. It returns
// the server configuration and the certificate (add it to a client's RootCAs).
func SelfSignedTLS(hosts ...string) (*tls.Config, *x509.Certificate, error) {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"xksproxy self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	c := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}
	applyTLSPolicy(c)
	return c, leaf, nil
}
