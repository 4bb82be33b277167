package proxy

import (
	"crypto/tls"
	"slices"
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
