package cosmian

import (
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/BurntSushi/toml"
)

// CKMSConfig is a ckms client configuration file (crate/clients/client/src/config.rs
// KmsClientConfig, read by `ckms -c <file>`). Its String, GoString and LogValue never print
// secrets.
type CKMSConfig struct {
	Path                      string // the file it was read from, as given
	PrintJSON                 bool
	VendorID                  string // default "cosmian"
	PKCS11UsePinAsAccessToken bool
	HTTP                      HTTPConfig
	GmailAPI                  *GmailAPIConf // [gmail_api_conf], nil if absent
}

// HTTPConfig is the [http_config] table (crate/clients/client/src/http_client/client.rs
// HttpClientConfig).
type HTTPConfig struct {
	ServerURL          string // required, http or https; trailing "/" stripped
	AcceptInvalidCerts bool   // skip server certificate verification
	VerifiedCert       string // inline PEM, trusted in addition to the system roots
	AccessToken        string // Authorization: Bearer …
	VaultToken         string // X-Vault-Token
	DatabaseSecret     string // DatabaseSecret header
	// PKCS#12 client identity. The password key must be present when the path is (an empty
	// string for none); legacy ssl_client_pkcs12_* names are accepted.
	TLSClientPKCS12Path     string
	TLSClientPKCS12Password *string
	// PEM client identity (cert chain file + key file), both or neither; exclusive with PKCS#12.
	TLSClientPEMCertPath string
	TLSClientPEMKeyPath  string
	CipherSuites         string   // colon-separated OpenSSL or IANA names
	CustomHeaders        []string // "Name: value"
	OAuth2               *OAuth2Conf
	CosmianConf          *AuthVerifierConf
	ProxyParams          *ProxyParams
	// DeprecatedKeys lists legacy key names found (ssl_client_*); ckms warns about them.
	DeprecatedKeys []string
}

// OAuth2Conf is [http_config.oauth2_conf] (used by `ckms login`; the proxy does not log in).
type OAuth2Conf struct {
	ClientID     string
	ClientSecret string
	AuthorizeURL string
	TokenURL     string
	Scopes       []string
}

// AuthVerifierConf is [http_config.cosmian_conf] (auth-verifier login; not used by the proxy).
type AuthVerifierConf struct {
	ServerURL string
	Realm     string
}

// ProxyParams is [http_config.proxy_params]: an HTTP forward proxy.
type ProxyParams struct {
	URL               string
	BasicAuthUsername string
	BasicAuthPassword string
	CustomAuthHeader  string   // Proxy-Authorization value, used when no basic auth is set
	ExclusionList     []string // exact hosts, or ".suffix" (which also matches "suffix")
}

// GmailAPIConf is [gmail_api_conf] (a Google service account; not used by the proxy).
type GmailAPIConf struct {
	Type, ProjectID, PrivateKeyID, PrivateKey, ClientEmail, ClientID, AuthURI, TokenURI,
	AuthProviderX509CertURL, ClientX509CertURL, UniverseDomain string
}

// LoadCKMSConfig reads and validates a ckms configuration file. Relative paths inside it are
// resolved against the process working directory, as ckms does.
func LoadCKMSConfig(path string) (*CKMSConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ckms config: %w", err)
	}
	return ParseCKMSConfig(path, data)
}

// maxConfigBytes bounds a configuration file.
const maxConfigBytes = 1 << 20

// ParseCKMSConfig parses and validates ckms configuration data; path names it in errors.
func ParseCKMSConfig(path string, data []byte) (*CKMSConfig, error) {
	p := &cfgParser{file: path}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxConfigBytes)
	}
	var root map[string]any
	if _, err := toml.Decode(string(data), &root); err != nil {
		return nil, p.syntaxErr(err)
	}
	cfg := &CKMSConfig{Path: path, VendorID: DefaultVendorID}
	if err := p.parse(root, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ---------------------------------------------------------------------------------------------
// Parsing: a walk over the generic TOML tree, so that keys are matched exactly (serde is
// case-sensitive; BurntSushi's struct decoding is not) and every error names file and key.

type cfgParser struct{ file string }

func (p *cfgParser) errf(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", p.file, key, fmt.Sprintf(format, args...))
}

var quoted = regexp.MustCompile(`"[^"]*"|'[^']*'`)

// syntaxErr reports file and line; quoted fragments of the input are elided from the parser's
// message, as they could be part of a secret.
func (p *cfgParser) syntaxErr(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := quoted.ReplaceAllString(pe.Message, `"…"`)
		return fmt.Errorf("%s:%d: TOML syntax error: %s", p.file, pe.Position.Line, msg)
	}
	return fmt.Errorf("%s: TOML syntax error", p.file)
}

type kind int

const (
	kString kind = iota
	kBool
	kStrings
	kTable
)

func (k kind) String() string {
	switch k {
	case kString:
		return "a string"
	case kBool:
		return "a boolean"
	case kStrings:
		return "an array of strings"
	}
	return "a table"
}

// table checks a table's keys against the allowed set and their value kinds.
func (p *cfgParser) table(prefix string, m map[string]any, allowed map[string]kind) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want, ok := allowed[k]
		if !ok {
			return p.errf(prefix+k, "unknown key")
		}
		v := m[k]
		good := false
		switch want {
		case kString:
			_, good = v.(string)
		case kBool:
			_, good = v.(bool)
		case kTable:
			_, good = v.(map[string]any)
		case kStrings:
			switch a := v.(type) {
			case []any:
				good = true
				for _, e := range a {
					if _, ok := e.(string); !ok {
						good = false
					}
				}
			case []string:
				good = true
			}
		}
		if !good {
			return p.errf(prefix+k, "must be %s", want)
		}
	}
	return nil
}

func str(m map[string]any, k string) (string, bool) {
	v, ok := m[k].(string)
	return v, ok
}

func strs(m map[string]any, k string) ([]string, bool) {
	switch a := m[k].(type) {
	case []any:
		out := make([]string, len(a))
		for i, e := range a {
			out[i], _ = e.(string)
		}
		return out, true
	case []string:
		return append([]string(nil), a...), true
	}
	return nil, false
}

func (p *cfgParser) required(prefix string, m map[string]any, keys ...string) error {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return p.errf(prefix+k, "missing (required)")
		}
	}
	return nil
}

var (
	topKeys = map[string]kind{
		"http_config": kTable, "gmail_api_conf": kTable, "print_json": kBool,
		"vendor_id": kString, "pkcs11_use_pin_as_access_token": kBool,
	}
	httpKeys = map[string]kind{
		"accept_invalid_certs": kBool, "server_url": kString, "verified_cert": kString,
		"access_token": kString, "vault_token": kString, "database_secret": kString,
		"tls_client_pkcs12_path": kString, "tls_client_pkcs12_password": kString,
		"tls_client_pem_cert_path": kString, "tls_client_pem_key_path": kString,
		"ssl_client_pkcs12_path": kString, "ssl_client_pkcs12_password": kString,
		"ssl_client_pem_cert_path": kString, "ssl_client_pem_key_path": kString,
		"oauth2_conf": kTable, "cosmian_conf": kTable, "proxy_params": kTable,
		"cipher_suites": kString, "custom_headers": kStrings,
	}
	oauth2Keys = map[string]kind{
		"client_id": kString, "client_secret": kString, "authorize_url": kString,
		"token_url": kString, "scopes": kStrings,
	}
	cosmianConfKeys = map[string]kind{"server_url": kString, "realm": kString}
	proxyKeys       = map[string]kind{
		"url": kString, "basic_auth_username": kString, "basic_auth_password": kString,
		"custom_auth_header": kString, "exclusion_list": kStrings,
	}
	gmailKeys = map[string]kind{
		"type": kString, "project_id": kString, "private_key_id": kString, "private_key": kString,
		"client_email": kString, "client_id": kString, "auth_uri": kString, "token_uri": kString,
		"auth_provider_x509_cert_url": kString, "client_x509_cert_url": kString,
		"universe_domain": kString,
	}
)

func (p *cfgParser) parse(root map[string]any, cfg *CKMSConfig) error {
	if err := p.table("", root, topKeys); err != nil {
		return err
	}
	cfg.PrintJSON, _ = root["print_json"].(bool)
	cfg.PKCS11UsePinAsAccessToken, _ = root["pkcs11_use_pin_as_access_token"].(bool)
	if v, ok := str(root, "vendor_id"); ok {
		if v == "" {
			return p.errf("vendor_id", "must not be empty")
		}
		cfg.VendorID = v
	}
	hm, ok := root["http_config"].(map[string]any)
	if !ok {
		return p.errf("http_config", "missing (required)")
	}
	if err := p.parseHTTP(hm, &cfg.HTTP); err != nil {
		return err
	}
	if gm, ok := root["gmail_api_conf"].(map[string]any); ok {
		const pre = "gmail_api_conf."
		if err := p.table(pre, gm, gmailKeys); err != nil {
			return err
		}
		keys := make([]string, 0, len(gmailKeys))
		for k := range gmailKeys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if err := p.required(pre, gm, keys...); err != nil {
			return err
		}
		g := &GmailAPIConf{}
		g.Type, _ = str(gm, "type")
		g.ProjectID, _ = str(gm, "project_id")
		g.PrivateKeyID, _ = str(gm, "private_key_id")
		g.PrivateKey, _ = str(gm, "private_key")
		g.ClientEmail, _ = str(gm, "client_email")
		g.ClientID, _ = str(gm, "client_id")
		g.AuthURI, _ = str(gm, "auth_uri")
		g.TokenURI, _ = str(gm, "token_uri")
		g.AuthProviderX509CertURL, _ = str(gm, "auth_provider_x509_cert_url")
		g.ClientX509CertURL, _ = str(gm, "client_x509_cert_url")
		g.UniverseDomain, _ = str(gm, "universe_domain")
		cfg.GmailAPI = g
	}
	return nil
}

func (p *cfgParser) parseHTTP(m map[string]any, h *HTTPConfig) error {
	const pre = "http_config."
	if err := p.table(pre, m, httpKeys); err != nil {
		return err
	}
	if err := p.required(pre, m, "server_url"); err != nil {
		return err
	}
	h.ServerURL, _ = str(m, "server_url")
	h.ServerURL = strings.TrimSuffix(h.ServerURL, "/")
	u, err := url.Parse(h.ServerURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return p.errf(pre+"server_url", "must be an http:// or https:// URL with a host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return p.errf(pre+"server_url", "must not carry user info, a query or a fragment")
	}
	h.AcceptInvalidCerts, _ = m["accept_invalid_certs"].(bool)

	if v, ok := str(m, "verified_cert"); ok {
		if n := countPEMCerts([]byte(v)); n == 0 {
			return p.errf(pre+"verified_cert", "no PEM CERTIFICATE block (it is the certificate itself, not a path)")
		}
		h.VerifiedCert = v
	}
	for _, s := range []struct {
		key string
		dst *string
		hdr bool
	}{
		{"access_token", &h.AccessToken, true},
		{"vault_token", &h.VaultToken, true},
		{"database_secret", &h.DatabaseSecret, true},
		{"cipher_suites", &h.CipherSuites, false},
	} {
		if v, ok := str(m, s.key); ok {
			if s.hdr && !httpguts.ValidHeaderFieldValue(v) {
				return p.errf(pre+s.key, "contains characters not allowed in an HTTP header value")
			}
			*s.dst = v
		}
	}
	if h.CipherSuites != "" {
		if _, err := parseCipherSuites(h.CipherSuites); err != nil {
			return p.errf(pre+"cipher_suites", "%v", err)
		}
	}

	// Client identity; the canonical name wins over the legacy one, as in ckms.
	var pkcs12Path, pemCert, pemKey *string
	for _, a := range []struct {
		canonical, legacy string
		dst               **string
	}{
		{"tls_client_pkcs12_path", "ssl_client_pkcs12_path", &pkcs12Path},
		{"tls_client_pkcs12_password", "ssl_client_pkcs12_password", &h.TLSClientPKCS12Password},
		{"tls_client_pem_cert_path", "ssl_client_pem_cert_path", &pemCert},
		{"tls_client_pem_key_path", "ssl_client_pem_key_path", &pemKey},
	} {
		if v, ok := str(m, a.legacy); ok {
			h.DeprecatedKeys = append(h.DeprecatedKeys, pre+a.legacy)
			*a.dst = &v
		}
		if v, ok := str(m, a.canonical); ok {
			*a.dst = &v
		}
	}
	name := func(canonical, legacy string) string {
		if _, ok := m[canonical]; ok {
			return pre + canonical
		}
		if _, ok := m[legacy]; ok {
			return pre + legacy
		}
		return pre + canonical
	}
	pkcsKey := name("tls_client_pkcs12_path", "ssl_client_pkcs12_path")
	pwKey := name("tls_client_pkcs12_password", "ssl_client_pkcs12_password")
	certKey := name("tls_client_pem_cert_path", "ssl_client_pem_cert_path")
	keyKey := name("tls_client_pem_key_path", "ssl_client_pem_key_path")
	if (pemCert != nil || pemKey != nil) && (pkcs12Path != nil || h.TLSClientPKCS12Password != nil) {
		other := pkcsKey
		if pkcs12Path == nil {
			other = pwKey
		}
		this := certKey
		if pemCert == nil {
			this = keyKey
		}
		return p.errf(this, "PEM and PKCS#12 client authentication are mutually exclusive (%s is set too)", strings.TrimPrefix(other, pre))
	}
	if pemCert != nil && pemKey == nil {
		return p.errf(keyKey, "missing: must be set together with %s", strings.TrimPrefix(certKey, pre))
	}
	if pemKey != nil && pemCert == nil {
		return p.errf(certKey, "missing: must be set together with %s", strings.TrimPrefix(keyKey, pre))
	}
	if pkcs12Path != nil && h.TLSClientPKCS12Password == nil {
		return p.errf(pwKey, "missing: required with %s (use \"\" for a bundle without password)", strings.TrimPrefix(pkcsKey, pre))
	}
	for _, f := range []struct {
		v   *string
		key string
		dst *string
	}{{pkcs12Path, pkcsKey, &h.TLSClientPKCS12Path}, {pemCert, certKey, &h.TLSClientPEMCertPath}, {pemKey, keyKey, &h.TLSClientPEMKeyPath}} {
		if f.v != nil {
			if *f.v == "" {
				return p.errf(f.key, "must not be empty")
			}
			*f.dst = *f.v
		}
	}

	if hs, ok := strs(m, "custom_headers"); ok {
		for i, s := range hs {
			if _, _, err := parseCustomHeader(s); err != nil {
				return p.errf(fmt.Sprintf("%scustom_headers[%d]", pre, i), "%v", err)
			}
		}
		h.CustomHeaders = hs
	}

	if om, ok := m["oauth2_conf"].(map[string]any); ok {
		const op = pre + "oauth2_conf."
		if err := p.table(op, om, oauth2Keys); err != nil {
			return err
		}
		if err := p.required(op, om, "client_id", "client_secret", "authorize_url", "token_url", "scopes"); err != nil {
			return err
		}
		o := &OAuth2Conf{}
		o.ClientID, _ = str(om, "client_id")
		o.ClientSecret, _ = str(om, "client_secret")
		o.AuthorizeURL, _ = str(om, "authorize_url")
		o.TokenURL, _ = str(om, "token_url")
		o.Scopes, _ = strs(om, "scopes")
		h.OAuth2 = o
	}
	if cm, ok := m["cosmian_conf"].(map[string]any); ok {
		const cp = pre + "cosmian_conf."
		if err := p.table(cp, cm, cosmianConfKeys); err != nil {
			return err
		}
		if err := p.required(cp, cm, "server_url", "realm"); err != nil {
			return err
		}
		c := &AuthVerifierConf{}
		c.ServerURL, _ = str(cm, "server_url")
		c.Realm, _ = str(cm, "realm")
		h.CosmianConf = c
	}
	if pm, ok := m["proxy_params"].(map[string]any); ok {
		const pp = pre + "proxy_params."
		if err := p.table(pp, pm, proxyKeys); err != nil {
			return err
		}
		// exclusion_list has no serde default in ckms: it is required.
		if err := p.required(pp, pm, "url", "exclusion_list"); err != nil {
			return err
		}
		x := &ProxyParams{}
		x.URL, _ = str(pm, "url")
		pu, err := url.Parse(x.URL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return p.errf(pp+"url", "must be an http:// or https:// URL with a host")
		}
		x.BasicAuthUsername, _ = str(pm, "basic_auth_username")
		x.BasicAuthPassword, _ = str(pm, "basic_auth_password")
		x.CustomAuthHeader, _ = str(pm, "custom_auth_header")
		if !httpguts.ValidHeaderFieldValue(x.CustomAuthHeader) {
			return p.errf(pp+"custom_auth_header", "contains characters not allowed in an HTTP header value")
		}
		if _, ok := pm["basic_auth_password"]; ok && x.BasicAuthUsername == "" {
			return p.errf(pp+"basic_auth_password", "set without basic_auth_username")
		}
		x.ExclusionList, _ = strs(pm, "exclusion_list")
		h.ProxyParams = x
	}
	return nil
}

func countPEMCerts(b []byte) int {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return n
		}
		if blk.Type == "CERTIFICATE" {
			n++
		}
	}
}

// parseCustomHeader splits "Name: value" as ckms does (first colon, both sides trimmed).
// Errors never quote the value, which may be a credential.
func parseCustomHeader(s string) (string, string, error) {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", errors.New("expected \"Name: value\"")
	}
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if name == "" || !httpguts.ValidHeaderFieldName(name) {
		return "", "", errors.New("invalid header name")
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return "", "", fmt.Errorf("invalid value for header %s", name)
	}
	return name, value, nil
}

// ---------------------------------------------------------------------------------------------
// Redacted printing

func set(s string) string {
	if s == "" {
		return "unset"
	}
	return "set"
}

// String summarises the configuration without secrets.
func (c *CKMSConfig) String() string {
	if c == nil {
		return "<nil>"
	}
	return fmt.Sprintf("ckms config %s: vendor_id=%s %s", c.Path, c.VendorID, c.HTTP.String())
}

// GoString is String, so %#v cannot print secrets either.
func (c *CKMSConfig) GoString() string { return c.String() }

// LogValue prints the configuration without secrets.
func (c *CKMSConfig) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(
		slog.String("path", c.Path),
		slog.String("vendor_id", c.VendorID),
		slog.Any("http_config", c.HTTP),
	)
}

// String summarises the table without secrets.
func (h HTTPConfig) String() string {
	var auth []string
	if h.AccessToken != "" {
		auth = append(auth, "bearer")
	}
	if h.VaultToken != "" {
		auth = append(auth, "vault-token")
	}
	if h.DatabaseSecret != "" {
		auth = append(auth, "database-secret")
	}
	if h.TLSClientPEMCertPath != "" {
		auth = append(auth, "pem-cert:"+h.TLSClientPEMCertPath)
	}
	if h.TLSClientPKCS12Path != "" {
		auth = append(auth, "pkcs12:"+h.TLSClientPKCS12Path)
	}
	s := fmt.Sprintf("server_url=%s accept_invalid_certs=%t verified_cert=%s auth=[%s] custom_headers=%d",
		h.ServerURL, h.AcceptInvalidCerts, set(h.VerifiedCert), strings.Join(auth, ","), len(h.CustomHeaders))
	if h.ProxyParams != nil {
		s += " proxy=" + h.ProxyParams.String()
	}
	return s
}

// GoString is String.
func (h HTTPConfig) GoString() string { return h.String() }

// LogValue prints the table without secrets.
func (h HTTPConfig) LogValue() slog.Value { return slog.StringValue(h.String()) }

// String prints the proxy without credentials.
func (p *ProxyParams) String() string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s basic_auth=%s custom_auth_header=%s exclusions=%d",
		redactURL(p.URL), set(p.BasicAuthUsername), set(p.CustomAuthHeader), len(p.ExclusionList))
}

// GoString is String.
func (p *ProxyParams) GoString() string { return p.String() }

// String prints the OAuth2 settings without the client secret.
func (o *OAuth2Conf) String() string {
	if o == nil {
		return "<nil>"
	}
	return fmt.Sprintf("oauth2 client_id=%s authorize_url=%s token_url=%s scopes=%v client_secret=%s",
		o.ClientID, o.AuthorizeURL, o.TokenURL, o.Scopes, set(o.ClientSecret))
}

// GoString is String.
func (o *OAuth2Conf) GoString() string { return o.String() }

// String prints the Gmail service account without its private key.
func (g *GmailAPIConf) String() string {
	if g == nil {
		return "<nil>"
	}
	return fmt.Sprintf("gmail service account %s (project %s) private_key=%s", g.ClientEmail, g.ProjectID, set(g.PrivateKey))
}

// GoString is String.
func (g *GmailAPIConf) GoString() string { return g.String() }

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid url>"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	return u.String()
}

// headerSet adds a header keeping the exact spelling ckms uses (e.g. "DatabaseSecret"), since
// http.Header.Set would canonicalise it; HTTP header names are case-insensitive, so this is
// cosmetic on the wire but keeps captured requests comparable with ckms's.
func headerSet(h http.Header, name, value string) {
	for k := range h {
		if strings.EqualFold(k, name) {
			delete(h, k)
		}
	}
	h[name] = []string{value}
}
