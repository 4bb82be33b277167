package devstack

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// httpClient builds the KMIP client's HTTP client for an emulator with a self-signed certificate.
type httpClient struct{ pool *x509.CertPool }

func (h *httpClient) client() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: h.pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		},
	}
}
