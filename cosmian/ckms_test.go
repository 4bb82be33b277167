package cosmian

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
	"software.sslmate.com/src/go-pkcs12"
)

func TestCKMSFixtures(t *testing.T) {
	cases := []struct {
		file      string
		url       string
		insecure  bool
		tlsErrHas string // TLSConfig must fail naming this path ("" = must succeed)
		check     func(t *testing.T, c *CKMSConfig)
	}{
		{file: "test_data__aws_xks__ckms_cli.toml", url: "https://0.0.0.0:9998", insecure: true},
		{file: "test_data__configs__ckms.toml", url: "http://0.0.0.0:9998"},
		{file: "test_data__configs__client__pem_cert_and_token_auth.toml", url: "https://kms.example.com:9998", tlsErrHas: "/path/to/client.crt",
			check: func(t *testing.T, c *CKMSConfig) {
				if c.HTTP.AccessToken != "<JWT_BEARER_TOKEN>" || c.HTTP.TLSClientPEMKeyPath != "/path/to/client.key" {
					t.Errorf("%+v", c.HTTP)
				}
			}},
		{file: "test_data__configs__client__pem_cert_auth.toml", url: "https://kms.example.com:9998", tlsErrHas: "/path/to/client.crt"},
		{file: "test_data__configs__client__pkcs12_cert_auth.toml", url: "https://kms.example.com:9998", tlsErrHas: "/path/to/client.p12",
			check: func(t *testing.T, c *CKMSConfig) {
				if c.HTTP.TLSClientPKCS12Password == nil || *c.HTTP.TLSClientPKCS12Password != "changeit" {
					t.Error("password not read")
				}
			}},
		{file: "test_data__configs__client__test__cert_auth_owner.toml", url: "https://localhost:29998", insecure: true,
			tlsErrHas: "test_data/certificates/client_server/owner/owner.client.acme.com.crt"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			c, err := LoadCKMSConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.HTTP.ServerURL != tc.url || c.HTTP.AcceptInvalidCerts != tc.insecure || c.VendorID != "cosmian" || c.PrintJSON {
				t.Errorf("config %s", c)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			_, err = c.TLSConfig()
			if tc.tlsErrHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				cc, err := c.ClientConfig()
				if err != nil || cc.BaseURL != tc.url {
					t.Fatalf("ClientConfig = %+v, %v", cc, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.tlsErrHas) || !strings.Contains(err.Error(), path) {
				t.Fatalf("TLSConfig err = %v, want it to name %s", err, tc.tlsErrHas)
			}
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("err %v is not ErrNotExist", err)
			}
			if _, err := c.ClientConfig(); err == nil {
				t.Error("ClientConfig succeeded")
			}
		})
	}
}

func TestCKMSErrors(t *testing.T) {
	base := "[http_config]\nserver_url = \"https://kms:9998\"\n"
	cases := []struct {
		name string
		toml string
		want string // substring after "server_a.toml: "
	}{
		{"unknown top-level", "colour = 1\n" + base, "colour: unknown key"},
		{"unknown in http_config", base + "acept_invalid_certs = true\n", "http_config.acept_invalid_certs: unknown key"},
		{"case matters", base + "Access_Token = \"x\"\n", "http_config.Access_Token: unknown key"},
		{"unknown in proxy_params", base + "[http_config.proxy_params]\nurl = \"http://p:3128\"\nexclusion_list = []\nuser = \"x\"\n", "http_config.proxy_params.user: unknown key"},
		{"unknown in oauth2", base + "[http_config.oauth2_conf]\nclient_id=\"a\"\nclient_secret=\"b\"\nauthorize_url=\"c\"\ntoken_url=\"d\"\nscopes=[]\nx=1\n", "http_config.oauth2_conf.x: unknown key"},
		{"missing http_config", "print_json = true\n", "http_config: missing"},
		{"missing server_url", "[http_config]\naccept_invalid_certs = true\n", "http_config.server_url: missing"},
		{"bad scheme", "[http_config]\nserver_url = \"ftp://kms\"\n", "http_config.server_url: must be"},
		{"wrong type", base + "accept_invalid_certs = \"yes\"\n", "http_config.accept_invalid_certs: must be a boolean"},
		{"pem cert without key", base + "tls_client_pem_cert_path = \"c.pem\"\n", "http_config.tls_client_pem_key_path: missing: must be set together with tls_client_pem_cert_path"},
		{"pem key without cert", base + "tls_client_pem_key_path = \"k.pem\"\n", "http_config.tls_client_pem_cert_path: missing: must be set together with tls_client_pem_key_path"},
		{"pem and pkcs12", base + "tls_client_pem_cert_path = \"c\"\ntls_client_pem_key_path = \"k\"\ntls_client_pkcs12_path = \"p\"\ntls_client_pkcs12_password = \"\"\n", "http_config.tls_client_pem_cert_path: PEM and PKCS#12 client authentication are mutually exclusive (tls_client_pkcs12_path is set too)"},
		{"pkcs12 without password", base + "tls_client_pkcs12_path = \"p.p12\"\n", "http_config.tls_client_pkcs12_password: missing: required with tls_client_pkcs12_path"},
		{"legacy pkcs12 without password", base + "ssl_client_pkcs12_path = \"p.p12\"\n", "http_config.tls_client_pkcs12_password: missing: required with ssl_client_pkcs12_path"},
		{"custom header syntax", base + "custom_headers = [\"X-Ok: 1\", \"NoColon\"]\n", "http_config.custom_headers[1]: expected"},
		{"custom header name", base + "custom_headers = [\"X Bad: 1\"]\n", "http_config.custom_headers[0]: invalid header name"},
		{"custom header value", base + "custom_headers = [\"X-Ok: a\\u0001b\"]\n", "http_config.custom_headers[0]: invalid value for header X-Ok"},
		{"cipher suite", base + "cipher_suites = \"TLS_AES_256_GCM_SHA384:NOPE-CIPHER\"\n", "http_config.cipher_suites: unknown or unsupported cipher suite \"NOPE-CIPHER\""},
		{"verified_cert path", base + "verified_cert = \"/etc/ssl/ca.pem\"\n", "http_config.verified_cert: no PEM CERTIFICATE"},
		{"proxy without exclusion_list", base + "[http_config.proxy_params]\nurl = \"http://p:3128\"\n", "http_config.proxy_params.exclusion_list: missing"},
		{"empty vendor", "vendor_id = \"\"\n" + base, "vendor_id: must not be empty"},
		{"gmail incomplete", base + "[gmail_api_conf]\ntype = \"service_account\"\n", "gmail_api_conf.auth_provider_x509_cert_url: missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCKMSConfig("server_a.toml", []byte(tc.toml))
			if err == nil || !strings.HasPrefix(err.Error(), "server_a.toml: "+tc.want) {
				t.Fatalf("err = %v\nwant prefix %q", err, "server_a.toml: "+tc.want)
			}
		})
	}
}

func TestCKMSSyntaxError(t *testing.T) {
	data := "print_json = false\n[http_config]\nserver_url = \"https://kms\"\naccess_token = \"s3cr3t-token\n"
	_, err := ParseCKMSConfig("server_a.toml", []byte(data))
	if err == nil || !strings.HasPrefix(err.Error(), "server_a.toml:4: TOML syntax error") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("secret in error: %v", err)
	}
}

func TestCKMSSecretsNeverPrinted(t *testing.T) {
	const data = `
vendor_id = "acme"
[http_config]
server_url = "https://kms:9998/"
access_token = "SECRET-access"
vault_token = "SECRET-vault"
database_secret = "SECRET-db"
custom_headers = ["X-Api-Key: SECRET-header"]
[http_config.oauth2_conf]
client_id = "cid"
client_secret = "SECRET-oauth"
authorize_url = "https://idp/auth"
token_url = "https://idp/token"
scopes = ["openid"]
[http_config.proxy_params]
url = "http://proxy:3128"
basic_auth_username = "u"
basic_auth_password = "SECRET-proxy"
exclusion_list = [".internal"]
`
	c, err := ParseCKMSConfig("a.toml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.ServerURL != "https://kms:9998" || c.VendorID != "acme" {
		t.Errorf("%s", c)
	}
	var sb strings.Builder
	log := slog.New(slog.NewTextHandler(&sb, nil))
	log.Info("cfg", "c", c, "h", c.HTTP)
	outs := []string{c.String(), fmt.Sprintf("%v %+v %#v %v %+v %#v", c, c, c, c.HTTP, c.HTTP, c.HTTP),
		c.HTTP.OAuth2.String(), fmt.Sprint(c.HTTP.ProxyParams), sb.String()}
	for _, o := range outs {
		if strings.Contains(o, "SECRET") {
			t.Errorf("secret printed: %s", o)
		}
	}
	// A bad header value is reported without the value.
	_, err = ParseCKMSConfig("a.toml", []byte("[http_config]\nserver_url=\"https://k\"\ncustom_headers=[\"X-K: SECRET\\u0001\"]\n"))
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("err = %v", err)
	}
}

func TestCKMSLegacyAliases(t *testing.T) {
	data := "[http_config]\nserver_url = \"https://k\"\nssl_client_pkcs12_path = \"old.p12\"\nssl_client_pkcs12_password = \"pw\"\n"
	c, err := ParseCKMSConfig("a.toml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.TLSClientPKCS12Path != "old.p12" || *c.HTTP.TLSClientPKCS12Password != "pw" || len(c.HTTP.DeprecatedKeys) != 2 {
		t.Fatalf("%+v", c.HTTP)
	}
	// The canonical name wins over the legacy one.
	c, err = ParseCKMSConfig("a.toml", []byte(data+"tls_client_pkcs12_path = \"new.p12\"\n"))
	if err != nil || c.HTTP.TLSClientPKCS12Path != "new.p12" {
		t.Fatalf("%v %+v", err, c)
	}
}

func TestCipherSuites(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []uint16
		ok   bool
	}{
		{"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", nil, true},
		{"ECDHE-RSA-AES256-GCM-SHA384:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:", []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, true},
		{"RC4-MD5", nil, false},
	} {
		t.Run(tc.list, func(t *testing.T) {
			got, err := parseCipherSuites(tc.list)
			if (err == nil) != tc.ok || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("= %v, %v", got, err)
			}
		})
	}
}

func TestProxyExcluded(t *testing.T) {
	list := []string{".internal", "kms-a"}
	for host, want := range map[string]bool{"kms-a": true, "kms-b": false, "x.internal": true, "internal": true, "xinternal": false} {
		if proxyExcluded(host, list) != want {
			t.Errorf("%s: want %t", host, want)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Real TLS: generated certificates, a server requiring client certificates.

type pki struct {
	caCert            *x509.Certificate
	caPEM             []byte
	serverCert        tls.Certificate
	clientCert        *x509.Certificate
	clientKey         *ecdsa.PrivateKey
	clientCertPEM     []byte
	clientKeyPEM      []byte
	selfSignedServer  tls.Certificate
	selfSignedCertPEM []byte
}

func newCert(t *testing.T, tmpl, parent *x509.Certificate, pub, signer any) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	now := time.Now()
	p := &pki{}
	caKey := genKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	p.caCert = newCert(t, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	p.caPEM = pemCert(p.caCert)

	srvKey := genKey(t)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kms"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	sc := newCert(t, srvTmpl, p.caCert, &srvKey.PublicKey, caKey)
	p.serverCert = tls.Certificate{Certificate: [][]byte{sc.Raw}, PrivateKey: srvKey}

	// A self-signed server certificate (its own root), for verified_cert.
	ssKey := genKey(t)
	ssTmpl := *srvTmpl
	ssTmpl.SerialNumber = big.NewInt(3)
	ssTmpl.IsCA, ssTmpl.BasicConstraintsValid = true, true
	ssTmpl.KeyUsage |= x509.KeyUsageCertSign
	ss := newCert(t, &ssTmpl, &ssTmpl, &ssKey.PublicKey, ssKey)
	p.selfSignedServer = tls.Certificate{Certificate: [][]byte{ss.Raw}, PrivateKey: ssKey}
	p.selfSignedCertPEM = pemCert(ss)

	p.clientKey = genKey(t)
	cliTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "owner.client@acme.com"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	p.clientCert = newCert(t, cliTmpl, p.caCert, &p.clientKey.PublicKey, caKey)
	p.clientCertPEM = pemCert(p.clientCert)
	der, err := x509.MarshalPKCS8PrivateKey(p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	return p
}

// mtlsServer requires a client certificate signed by ca and answers /version with the CN.
func mtlsServer(t *testing.T, cert tls.Certificate, ca *x509.Certificate) *httptest.Server {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "%q", "5.26.0 cn="+cn+" auth="+r.Header.Get("Authorization")+" db="+r.Header.Get("DatabaseSecret")+" x="+r.Header.Get("X-Tenant"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // failed handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func tomlLiteral(s string) string { return "'''\n" + s + "'''" }

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func versionVia(t *testing.T, toml string) (string, error) {
	t.Helper()
	cfg, err := ParseCKMSConfig("test.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cfg.ClientConfig()
	if err != nil {
		return "", err
	}
	defer cc.HTTP.CloseIdleConnections()
	cc.Timeout = 5 * time.Second
	c, err := NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	return c.Version(context.Background())
}

func TestCKMSClientCertificates(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	certPath := writeFile(t, dir, "client.crt", p.clientCertPEM)
	keyPath := writeFile(t, dir, "client.key", p.clientKeyPEM)
	p12, err := pkcs12.Modern.Encode(p.clientKey, p.clientCert, []*x509.Certificate{p.caCert}, "p12-password")
	if err != nil {
		t.Fatal(err)
	}
	p12Path := writeFile(t, dir, "client.p12", p12)
	p12NoPw, err := pkcs12.Modern.Encode(p.clientKey, p.clientCert, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	p12NoPwPath := writeFile(t, dir, "client-nopw.p12", p12NoPw)
	otherKeyPath := writeFile(t, dir, "other.key", func() []byte {
		der, _ := x509.MarshalPKCS8PrivateKey(genKey(t))
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}())

	srv := mtlsServer(t, p.serverCert, p.caCert)
	head := fmt.Sprintf("[http_config]\nserver_url = %q\nverified_cert = %s\naccess_token = \"tok\"\ndatabase_secret = \"dbs\"\ncustom_headers = [\"X-Tenant: t1\"]\n", srv.URL, tomlLiteral(string(p.caPEM)))
	cases := []struct {
		name    string
		extra   string
		wantErr string
	}{
		{"PEM pair", fmt.Sprintf("tls_client_pem_cert_path = %q\ntls_client_pem_key_path = %q\n", certPath, keyPath), ""},
		{"PKCS#12", fmt.Sprintf("tls_client_pkcs12_path = %q\ntls_client_pkcs12_password = \"p12-password\"\n", p12Path), ""},
		{"PKCS#12 legacy keys", fmt.Sprintf("ssl_client_pkcs12_path = %q\nssl_client_pkcs12_password = \"p12-password\"\n", p12Path), ""},
		{"PKCS#12 empty password", fmt.Sprintf("tls_client_pkcs12_path = %q\ntls_client_pkcs12_password = \"\"\n", p12NoPwPath), ""},
		{"PKCS#12 wrong password", fmt.Sprintf("tls_client_pkcs12_path = %q\ntls_client_pkcs12_password = \"nope\"\n", p12Path), "client.p12"},
		{"PEM key mismatch", fmt.Sprintf("tls_client_pem_cert_path = %q\ntls_client_pem_key_path = %q\n", certPath, otherKeyPath), "other.key"},
		{"no client cert", "", "certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := versionVia(t, head+tc.extra)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "p12-password") {
					t.Fatal("password in error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v != "5.26.0 cn=owner.client@acme.com auth=Bearer tok db=dbs x=t1" {
				t.Fatalf("server saw %q", v)
			}
		})
	}
}

func TestCKMSServerVerification(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	certPath := writeFile(t, dir, "client.crt", p.clientCertPEM)
	keyPath := writeFile(t, dir, "client.key", p.clientKeyPEM)
	srv := mtlsServer(t, p.selfSignedServer, p.caCert)
	clientPart := fmt.Sprintf("tls_client_pem_cert_path = %q\ntls_client_pem_key_path = %q\n", certPath, keyPath)
	cases := []struct {
		name string
		conf string
		ok   bool
	}{
		{"verified_cert trusts self-signed", "verified_cert = " + tomlLiteral(string(p.selfSignedCertPEM)) + "\n", true},
		{"accept_invalid_certs", "accept_invalid_certs = true\n", true},
		{"untrusted", "", false},
		{"other verified_cert", "verified_cert = " + tomlLiteral(string(p.caPEM)) + "\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := versionVia(t, fmt.Sprintf("[http_config]\nserver_url = %q\n%s%s", srv.URL, tc.conf, clientPart))
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			var ue x509.UnknownAuthorityError
			if !tc.ok && !errors.As(err, &ue) {
				var ce *tls.CertificateVerificationError
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want a verification error", err)
				}
			}
		})
	}
}

func TestCKMSProxy(t *testing.T) {
	var sawAuth, sawHost string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = r.Header.Get("Proxy-Authorization")
		sawHost = r.URL.Host
		io.WriteString(w, `"5.26.0 via proxy"`)
	}))
	t.Cleanup(proxy.Close)
	conf := func(excl string) string {
		return fmt.Sprintf("[http_config]\nserver_url = \"http://kms-a.example:9998\"\n[http_config.proxy_params]\nurl = %q\nbasic_auth_username = \"u\"\nbasic_auth_password = \"pw\"\nexclusion_list = [%s]\n", proxy.URL, excl)
	}
	v, err := versionVia(t, conf(""))
	if err != nil || v != "5.26.0 via proxy" {
		t.Fatalf("Version = %q, %v", v, err)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("u:pw")); sawAuth != want || sawHost != "kms-a.example:9998" {
		t.Fatalf("proxy saw auth %q host %q", sawAuth, sawHost)
	}
	// Excluded: a direct connection to a host that does not resolve fails.
	sawHost = ""
	if _, err := versionVia(t, conf(`".example"`)); err == nil || sawHost != "" {
		t.Fatalf("excluded host went through the proxy (err %v)", err)
	}
}

func FuzzParseCKMSConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.toml")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("[http_config]\nserver_url=\"https://k\"\n[http_config.proxy_params]\nurl=\"http://p\"\nexclusion_list=[\".x\"]\ncustom_auth_header=\"t\"\n"))
	f.Add([]byte("[http_config]\nserver_url=\"https://k\"\ncustom_headers=[\"A: b\"]\ncipher_suites=\"AES128-SHA\"\n[gmail_api_conf]\ntype=\"s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCKMSConfig("fuzz.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if c.HTTP.ServerURL == "" || c.VendorID == "" {
			t.Fatalf("accepted without server_url/vendor_id: %s", c)
		}
		if c.HTTP.AccessToken != "" && len(c.HTTP.AccessToken) > 8 && strings.Contains(c.String(), c.HTTP.AccessToken) {
			t.Fatal("access token printed")
		}
		if c.HTTP.TLSClientPEMCertPath == "" && c.HTTP.TLSClientPKCS12Path == "" {
			if _, err := c.ClientConfig(); err != nil && c.HTTP.VerifiedCert == "" {
				t.Fatalf("valid config without files: ClientConfig: %v", err)
			}
		}
	})
}

// FuzzKMIPReply feeds arbitrary server replies through the response decoders.
func FuzzKMIPReply(f *testing.F) {
	files, _ := filepath.Glob("testdata/kmip/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, op := range []string{"Export", "Get"} {
		b, _ := ttlv.Marshal(exportResponse(op, "k", true))
		f.Add(b)
	}
	f.Add([]byte(`{"tag":"ResponseMessage","value":[{"tag":"BatchItem","value":[{"tag":"ResultStatus","type":"Enumeration","value":"OperationFailed"},{"tag":"ResultMessage","type":"TextString","value":"Object_Not_Found: x"}]}]}`))
	c, err := NewClient(ClientConfig{BaseURL: "https://kms", HTTP: http.DefaultClient})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = newKMSError("Export", 422, data)
		n, err := ttlv.Unmarshal(data)
		if err != nil {
			return
		}
		var a KeyAttributes
		c.parseAttributes(n, &a)
		if k, err := c.parseKey("Export", n); err == nil && (len(k.Material) == 0 || k.UID == "") {
			t.Fatalf("accepted a key without material or uid: %+v", k)
		}
		if n.Tag == "ResponseMessage" {
			_, _ = c.unwrapBatch("Export", 200, n)
		}
	})
}
