package soak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/sigv4"
)

// backend is one emulated Cosmian server, in the soak process: its faults are switched with
// SetFaults and its keys compared directly at the end.
type backend struct {
	name  string
	emu   *kmsemu.Server
	run   *kmsemu.Running
	cred  sigv4.Credential
	token string
}

const region = "us-east-1"

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randBase64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// newCredential makes an AWS-shaped credential; the id carries tag so logs say which set signed.
func newCredential(tag string) sigv4.Credential {
	sec := make([]byte, 32)
	_, _ = rand.Read(sec)
	id := strings.ToUpper("AKIASOAK" + tag + randHex(8))
	return sigv4.Credential{AccessKeyID: id[:20], Secret: base64.RawStdEncoding.EncodeToString(sec)}
}

// startBackend starts an emulator of Cosmian generation gen: A runs 5.26 (per-ARN grants),
// B the newest release (reserved-identity rules), so the migration crosses them as the demo's does.
func startBackend(name string, gen kmsemu.Generation) (*backend, error) {
	b := &backend{name: name, cred: newCredential(name), token: randHex(24)}
	emu, err := kmsemu.New(kmsemu.Config{
		DefaultUser:    "admin",
		Tokens:         map[string]string{b.token: "admin"},
		XKS:            &kmsemu.XKSConfig{Region: region, AccessKeyID: b.cred.AccessKeyID, SecretAccessKey: b.cred.Secret},
		CosmianVersion: gen,
	})
	if err != nil {
		return nil, err
	}
	if b.run, err = emu.Start("127.0.0.1:0", true); err != nil {
		return nil, err
	}
	b.emu = emu
	return b, nil
}

// seed creates the keys the load uses, each granted to every principal (as `serve --dev` does).
func (b *backend) seed(ids []string) error {
	ops := []string{cosmian.OpEncrypt, cosmian.OpDecrypt, cosmian.OpGetAttributes}
	for _, id := range ids {
		if err := b.emu.CreateKey("admin", id, kmsemu.KeyOptions{UsageMask: cosmian.UsageXKS, Tags: []string{cosmian.XKSTag}}); err != nil {
			return fmt.Errorf("seed %s: %w", id, err)
		}
		if err := b.emu.GrantAccess("admin", id, "*", ops...); err != nil {
			return fmt.Errorf("grant %s: %w", id, err)
		}
	}
	return nil
}

// ckmsConfig is the ckms client file the proxy uses for this backend: the emulator's
// self-signed certificate (XKS path and KMIP) and the owner's bearer token (KMIP).
func (b *backend) ckmsConfig() string {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.run.Cert.Raw})
	return fmt.Sprintf("[http_config]\nserver_url = %q\naccess_token = %q\nverified_cert = %q\n", b.run.URL, b.token, string(certPEM))
}

// pki is the soak's own CA: the proxies serve leaves it signs, the load trusts it, so a
// replaced certificate file keeps every client connecting.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	next int64
}

func newPKI() (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xksproxy soak CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{cert: cert, key: key, pool: pool, next: 100}, nil
}

// writeLeaf writes a new leaf for 127.0.0.1 to certFile and keyFile, each replaced atomically
// (renamed into place, as certbot and cert-manager do). It returns the leaf's serial.
func (p *pki) writeLeaf(certFile, keyFile string) (*big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p.next++
	serial := big.NewInt(p.next)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// Key first: the proxy refuses a certificate whose key does not match and keeps the old pair.
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return serial, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// replicaFiles are the paths one replica's configuration names.
type replicaFiles struct {
	dir, config, cert, key, admin, journal string
	listen, metrics, adminListen           string
	member, etcd                           string // fleet mode: member name and etcd URL ("" : one process)
}

// prefixCreds is the [[prefix.credential]] list a replica's configuration holds; rewritten for
// the credential rotation.
type prefixCreds []sigv4.Credential

// writeConfig writes one replica's xksproxy.toml and its secret files; fleetSecret (base64) signs
// the operator calls a replica forwards to the driver in fleet mode.
func writeConfig(f *replicaFiles, creds prefixCreds, backends []*backend, adminToken, fleetSecret string, o *Options) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# generated by bench/soak\n[server]\nlisten = %q\nmetrics_listen = %q\nversion_label = \"xksproxy soak\"\n\n", f.listen, f.metrics)
	fmt.Fprintf(&b, "[tls]\nmode = \"files\"\ncert_file = %q\nkey_file = %q\npoll_interval = \"1s\"\n\n", f.cert, f.key)
	fmt.Fprintf(&b, "[[prefix]]\npath = \"/aws\"\nregion = %q\n", region)
	for i, c := range creds {
		sf := filepath.Join(f.dir, fmt.Sprintf("prefix-secret-%d", i))
		if err := writeAtomic(sf, []byte(c.Secret), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "\n[[prefix.credential]]\naccess_key_id = %q\nsecret_access_key_file = %q\ncreated = %q\n", c.AccessKeyID, sf, time.Now().UTC().Format(time.RFC3339))
	}
	// A second key store path over the same keys, with the load's credential (never rotated):
	// the adversary sends through both.
	if len(creds) > 0 {
		sf := filepath.Join(f.dir, "prefix-other-secret")
		if err := writeAtomic(sf, []byte(creds[0].Secret), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "\n[[prefix]]\npath = %q\nregion = %q\n\n[[prefix.credential]]\naccess_key_id = %q\nsecret_access_key_file = %q\n", otherPrefix, region, creds[0].AccessKeyID, sf)
	}
	for _, be := range backends {
		sf := filepath.Join(f.dir, "backend-secret-"+be.name)
		cf := filepath.Join(f.dir, "ckms-"+be.name+".toml")
		if err := writeAtomic(sf, []byte(be.cred.Secret), 0o600); err != nil {
			return err
		}
		if err := writeAtomic(cf, []byte(be.ckmsConfig()), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "\n[[backend]]\nname = %q\nxks_url = %q\nregion = %q\naccess_key_id = %q\nsecret_access_key_file = %q\nckms_config = %q\ntimeout = %q\n",
			be.name, be.run.URL+"/aws", region, be.cred.AccessKeyID, sf, cf, o.BackendTimeout.String())
	}
	if err := writeAtomic(f.admin, []byte(adminToken), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\n[route]\nprimary = \"a\"\n\n[health]\ninterval = \"2s\"\n\n[admin]\nlisten = %q\ntoken_file = %q\n\n", f.adminListen, f.admin)
	fmt.Fprintf(&b, "[cutover]\njournal_path = %q\nsource = \"a\"\ntarget = \"b\"\nselect = \"tag\"\ntag = %q\nprobation_duration = %q\nprobation_max_error_rate = 0.05\nprobation_max_p99 = \"240ms\"\n\n",
		f.journal, cosmian.XKSTag, o.Probation.String())
	if f.etcd != "" {
		sf := filepath.Join(f.dir, "fleet-secret")
		if err := writeAtomic(sf, []byte(fleetSecret), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "[fleet]\netcd_endpoints = [%q]\nmember = %q\nadvertise_admin = %q\nsecret_file = %q\n\n", f.etcd, f.member, "http://"+f.adminListen, sf)
	}
	b.WriteString("[log]\nlevel = \"warn\"\nformat = \"json\"\n")
	return writeAtomic(f.config, []byte(b.String()), 0o600)
}

// waitListening dials addr until it accepts, the child exits or ctx ends.
func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("not listening on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
