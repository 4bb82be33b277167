package cosmian

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Transport settings of the client ClientConfig builds.
const (
	dialTimeout         = 10 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	// idleConnTimeout matches ckms's pool idle timeout (90 s), below the server's 120 s
	// keep-alive, so idle connections are dropped before the server closes them.
	idleConnTimeout     = 90 * time.Second
	maxIdleConnsPerHost = 32
)

// TLSConfig builds the client TLS configuration as ckms would (crate/clients/client/src/
// http_client/tls.rs): accept_invalid_certs disables verification; verified_cert (inline PEM)
// is trusted in addition to the system roots (OpenSSL's default store plus the added certs);
// a PEM pair or a PKCS#12 bundle is the client certificate; cipher_suites restricts TLS 1.2
// suites (Go does not let TLS 1.3 suites be restricted; TLS 1.3 names are accepted and have
// no effect). Errors name the file, never its content or password.
func (c *CKMSConfig) TLSConfig() (*tls.Config, error) {
	h := &c.HTTP
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if h.AcceptInvalidCerts {
		cfg.InsecureSkipVerify = true //nolint:gosec // the operator asked for it (accept_invalid_certs)
	}
	if h.VerifiedCert != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(h.VerifiedCert)) {
			return nil, fmt.Errorf("%s: http_config.verified_cert: no usable PEM certificate", c.Path)
		}
		cfg.RootCAs = pool
	}
	switch {
	case h.TLSClientPEMCertPath != "":
		cert, err := loadPEMPair(h.TLSClientPEMCertPath, h.TLSClientPEMKeyPath)
		if err != nil {
			return nil, fmt.Errorf("%s: http_config: %w", c.Path, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case h.TLSClientPKCS12Path != "":
		pw := ""
		if h.TLSClientPKCS12Password != nil {
			pw = *h.TLSClientPKCS12Password
		}
		cert, err := loadPKCS12(h.TLSClientPKCS12Path, pw)
		if err != nil {
			return nil, fmt.Errorf("%s: http_config.tls_client_pkcs12_path: %w", c.Path, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if h.CipherSuites != "" {
		ids, err := parseCipherSuites(h.CipherSuites)
		if err != nil {
			return nil, fmt.Errorf("%s: http_config.cipher_suites: %w", c.Path, err)
		}
		cfg.CipherSuites = ids
	}
	return cfg, nil
}

func loadPEMPair(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls_client_pem_cert_path: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls_client_pem_key_path: %w", err)
	}
	defer clear(keyPEM)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's messages describe the problem, not the key bytes.
		return tls.Certificate{}, fmt.Errorf("tls_client_pem_cert_path %s / tls_client_pem_key_path %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

func loadPKCS12(path, password string) (tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer clear(data)
	key, leaf, cas, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", path, err)
	}
	if leaf == nil || key == nil {
		return tls.Certificate{}, fmt.Errorf("%s: no certificate and private key in the bundle", path)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("%s: unsupported private key type %T", path, key)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := signer.Public().(equaler); !ok || !pub.Equal(leaf.PublicKey) {
		return tls.Certificate{}, fmt.Errorf("%s: private key does not match the certificate", path)
	}
	chain := [][]byte{leaf.Raw}
	for _, ca := range cas {
		chain = append(chain, ca.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// openSSLToIANA maps OpenSSL TLS 1.2 cipher names to IANA names (the table ckms uses, inverted,
// plus the few other suites Go implements).
var openSSLToIANA = map[string]string{
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-DES-CBC3-SHA":        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}

// parseCipherSuites turns a colon-separated list of OpenSSL or IANA names into Go suite ids for
// TLS 1.2. TLS 1.3 names are accepted and dropped (Go always offers its TLS 1.3 suites).
// Unlike ckms, which skips unknown names with a warning, an unknown name is an error: a typo
// should not silently fall back to the defaults.
func parseCipherSuites(list string) ([]uint16, error) {
	byName := make(map[string]*tls.CipherSuite)
	for _, s := range tls.CipherSuites() {
		byName[s.Name] = s
	}
	for _, s := range tls.InsecureCipherSuites() {
		byName[s.Name] = s
	}
	var ids []uint16
	for _, name := range strings.Split(list, ":") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		iana := name
		if m, ok := openSSLToIANA[name]; ok {
			iana = m
		}
		s, ok := byName[iana]
		if !ok {
			return nil, fmt.Errorf("unknown or unsupported cipher suite %q", name)
		}
		tls12 := false
		for _, v := range s.SupportedVersions {
			if v <= tls.VersionTLS12 {
				tls12 = true
			}
		}
		if tls12 {
			ids = append(ids, s.ID)
		}
	}
	return ids, nil
}

// ClientConfig returns a ready ClientConfig: BaseURL from server_url, an *http.Client with the
// TLS configuration, dial/handshake timeouts, a keep-alive pool and proxy_params honoured (and
// no proxy otherwise, as ckms ignores HTTPS_PROXY), and the headers ckms sends (Authorization:
// Bearer, X-Vault-Token, DatabaseSecret, then custom_headers, which override). Redirects are not
// followed.
func (c *CKMSConfig) ClientConfig() (ClientConfig, error) {
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return ClientConfig{}, err
	}
	h := &c.HTTP
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		MaxIdleConns:          4 * maxIdleConnsPerHost,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	if pp := h.ProxyParams; pp != nil {
		pu, err := url.Parse(pp.URL)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("%s: http_config.proxy_params.url: invalid URL", c.Path)
		}
		if pp.BasicAuthUsername != "" {
			pu.User = url.UserPassword(pp.BasicAuthUsername, pp.BasicAuthPassword)
		} else if pp.CustomAuthHeader != "" {
			tr.ProxyConnectHeader = http.Header{"Proxy-Authorization": {pp.CustomAuthHeader}}
		}
		excl := append([]string(nil), pp.ExclusionList...)
		tr.Proxy = func(r *http.Request) (*url.URL, error) {
			if proxyExcluded(r.URL.Hostname(), excl) {
				return nil, nil
			}
			return pu, nil
		}
	}
	hdr := http.Header{}
	if h.AccessToken != "" {
		headerSet(hdr, "Authorization", "Bearer "+h.AccessToken)
	}
	if h.VaultToken != "" {
		headerSet(hdr, "X-Vault-Token", h.VaultToken)
	}
	if h.DatabaseSecret != "" {
		headerSet(hdr, "DatabaseSecret", h.DatabaseSecret)
	}
	for i, s := range h.CustomHeaders {
		name, value, err := parseCustomHeader(s)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("%s: http_config.custom_headers[%d]: %w", c.Path, i, err)
		}
		headerSet(hdr, name, value)
	}
	return ClientConfig{
		BaseURL: h.ServerURL,
		HTTP: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		Header:   hdr,
		VendorID: c.VendorID,
		Source:   "ckms_config " + c.Path,
	}, nil
}

// proxyExcluded applies ckms's exclusion rule: ".example.com" matches example.com and any
// subdomain; anything else matches the host exactly.
func proxyExcluded(host string, list []string) bool {
	for _, p := range list {
		if strings.HasPrefix(p, ".") {
			if strings.HasSuffix(host, p) || host == p[1:] {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}
