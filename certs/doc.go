// Package certs provides the proxy's server certificate: a self-signed one for
// development, PEM files reloaded when they change (or on SIGHUP), or an ACME
// certificate managed by certmagic (TLS-ALPN-01 on the serving port, background
// renewal, on-disk storage readable by the service user only).
//
// Every source hands the proxy a *tls.Config whose GetCertificate returns the
// current certificate, so a renewal or reload applies to new handshakes
// without closing established connections. Metrics exposes the days left on
// the served certificate and the age of each SigV4 credential set, the two
// health figures AWS shows in CloudWatch (XksProxyCertificateDaysToExpire,
// XksProxyCredentialAge), so operators see them first.
package certs

import (
	"context"
	"crypto/tls"
)

// Source supplies the server certificate.
type Source interface {
	// TLSConfig returns the server TLS configuration. Its GetCertificate
	// always returns the current certificate.
	TLSConfig() *tls.Config
	// Run does the source's background work (file watching, ACME renewal,
	// metric refresh) and returns when ctx is done.
	Run(ctx context.Context) error
}

// nextProtos are offered by every source: HTTP/2 and HTTP/1.1 (XKS requires
// the HTTP/1.1 fallback).
var nextProtos = []string{"h2", "http/1.1"}

// baseTLSConfig is the common server configuration: TLS 1.2 or later and
// Go's default suites, which include the four XKS requires.
func baseTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		NextProtos:     append([]string(nil), nextProtos...),
	}
}
