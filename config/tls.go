package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/certs"
)

// TLS is [tls].
type TLS struct {
	Mode     string `toml:"mode"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// PollInterval is how often mode "files" stats the files for a change.
	PollInterval Duration `toml:"poll_interval"`
	Hosts        []string `toml:"hosts"`
	// Mode "acme".
	Domains            []string `toml:"domains"`
	CA                 string   `toml:"ca"`
	Email              string   `toml:"email"`
	StorageDir         string   `toml:"storage_dir"`
	Challenge          string   `toml:"challenge"`
	PreferredChainRoot string   `toml:"preferred_chain_root"`
	TrustedRootsFile   string   `toml:"trusted_roots_file"`
}

// TLS modes.
const (
	TLSFiles      = "files"
	TLSSelfSigned = "self-signed"
	TLSACME       = "acme"
)

// DefaultACMEStorageDir is where mode "acme" keeps its account and certificates unless
// tls.storage_dir says otherwise (the certs package needs one; the path is the file's choice).
// The other ACME defaults (directory, challenge, preferred chain) and the poll interval of mode
// "files" are the certs package's.
const DefaultACMEStorageDir = "/var/lib/xksproxy/acme"

// tls checks [tls] for its mode and refuses the keys of the other modes.
func (c *checker) tls(t *TLS) {
	defStr(&t.Mode, TLSFiles)
	switch t.Mode {
	case TLSFiles, TLSSelfSigned, TLSACME:
	default:
		c.fail("tls.mode", "must be \"files\", \"self-signed\" or \"acme\"")
		return
	}
	// Each key belongs to one mode; a key of another mode is a mistake worth naming.
	owner := []struct {
		field, mode string
		set         bool
	}{
		{"tls.cert_file", TLSFiles, t.CertFile != ""},
		{"tls.key_file", TLSFiles, t.KeyFile != ""},
		{"tls.poll_interval", TLSFiles, t.PollInterval != 0},
		{"tls.hosts", TLSSelfSigned, len(t.Hosts) > 0},
		{"tls.domains", TLSACME, len(t.Domains) > 0},
		{"tls.ca", TLSACME, t.CA != ""},
		{"tls.email", TLSACME, t.Email != ""},
		{"tls.storage_dir", TLSACME, t.StorageDir != ""},
		{"tls.challenge", TLSACME, t.Challenge != ""},
		{"tls.preferred_chain_root", TLSACME, t.PreferredChainRoot != ""},
		{"tls.trusted_roots_file", TLSACME, t.TrustedRootsFile != ""},
	}
	for _, o := range owner {
		if o.set && o.mode != t.Mode {
			c.fail(o.field, "only used with tls.mode = %q", o.mode)
		}
	}
	switch t.Mode {
	case TLSFiles:
		if t.CertFile == "" {
			c.fail("tls.cert_file", "required when tls.mode = \"files\"")
		}
		if t.KeyFile == "" {
			c.fail("tls.key_file", "required when tls.mode = \"files\"")
		}
		t.CertFile, t.KeyFile = c.rel(t.CertFile), c.rel(t.KeyFile)
		if t.PollInterval != 0 && (t.PollInterval.D() < time.Second || t.PollInterval.D() > 24*time.Hour) {
			c.fail("tls.poll_interval", "must be between 1s and 24h")
		}
	case TLSSelfSigned:
		if len(t.Hosts) == 0 {
			t.Hosts = []string{"localhost"}
		}
		for i, h := range t.Hosts {
			if h == "" || strings.ContainsAny(h, " /:") && net.ParseIP(h) == nil {
				c.fail(fmt.Sprintf("tls.hosts[%d]", i), "must be a DNS name or an IP address")
			}
		}
	case TLSACME:
		if len(t.Domains) == 0 {
			c.fail("tls.domains", "required when tls.mode = \"acme\" (the XKS endpoint's DNS names)")
		}
		if len(t.Domains) > 100 {
			c.fail("tls.domains", "at most 100 names")
		}
		seen := map[string]int{}
		for i, d := range t.Domains {
			fd := fmt.Sprintf("tls.domains[%d]", i)
			d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
			if !validDNSName(d) {
				c.fail(fd, "must be a DNS name (no IP address, port, or wildcard)")
			}
			if j, dup := seen[d]; dup {
				c.fail(fd, "same name as tls.domains[%d]", j)
			}
			seen[d] = i
			t.Domains[i] = d
		}
		if u, err := url.Parse(t.CA); t.CA != "" && (err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && u.Scheme != "http")) {
			c.fail("tls.ca", "must be the ACME directory URL (https://...)")
		}
		if t.Email != "" && (len(t.Email) > 254 || strings.Count(t.Email, "@") != 1 ||
			strings.HasPrefix(t.Email, "@") || strings.HasSuffix(t.Email, "@") || strings.ContainsAny(t.Email, " \t\r\n<>,;")) {
			c.fail("tls.email", "must be an e-mail address")
		}
		defStr(&t.StorageDir, DefaultACMEStorageDir)
		t.StorageDir = c.rel(t.StorageDir)
		switch t.Challenge {
		case "", certs.ChallengeTLSALPN01, certs.ChallengeDNS01:
		default:
			c.fail("tls.challenge", "must be %q or %q", certs.ChallengeTLSALPN01, certs.ChallengeDNS01)
		}
		if len(t.PreferredChainRoot) > 256 {
			c.fail("tls.preferred_chain_root", "longer than 256 characters")
		}
		if t.TrustedRootsFile != "" {
			t.TrustedRootsFile = c.rel(t.TrustedRootsFile)
			if _, err := os.Stat(t.TrustedRootsFile); err != nil {
				c.fail("tls.trusted_roots_file", "cannot read: %v", errors.Unwrap(err))
			}
		}
	}
}

// validDNSName: lower-case LDH labels, at least two of them, no wildcard.
func validDNSName(d string) bool {
	if d == "" || len(d) > 253 || net.ParseIP(d) != nil {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}
