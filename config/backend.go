package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// Backend is one [[backend]].
type Backend struct {
	Name                string   `toml:"name"`
	XKSURL              string   `toml:"xks_url"`
	Region              string   `toml:"region"`
	Service             string   `toml:"service"`
	AccessKeyID         string   `toml:"access_key_id"`
	SecretAccessKey     string   `toml:"secret_access_key"`
	SecretAccessKeyFile string   `toml:"secret_access_key_file"`
	SecretAccessKeyEnv  string   `toml:"secret_access_key_env"`
	CKMSConfig          string   `toml:"ckms_config"`
	Timeout             Duration `toml:"timeout"`
	MaxIdleConns        int      `toml:"max_idle_conns"`
	Model               string   `toml:"model"`
}

// SigV4 returns the backend's credential.
func (b Backend) SigV4() sigv4.Credential {
	return sigv4.Credential{AccessKeyID: b.AccessKeyID, Secret: b.SecretAccessKey}
}

// backends checks every [[backend]]; it returns the index of each name. budget bounds the
// per-attempt timeout.
func (c *checker) backends(backends []Backend, budget Duration) map[string]int {
	if len(backends) == 0 || len(backends) > 10 {
		c.fail("backend", "need 1 to 10 [[backend]] entries")
	}
	names := map[string]int{}
	for i := range backends {
		b := &backends[i]
		fb := fmt.Sprintf("backend[%d]", i)
		if !validName(b.Name) {
			c.fail(fb+".name", "must be 1 to 32 characters of a-z 0-9 -")
		}
		if j, dup := names[b.Name]; dup {
			c.fail(fb+".name", "same name as backend[%d]", j)
		}
		names[b.Name] = i
		c.xksURL(fb+".xks_url", b.XKSURL)
		c.scopePart(fb+".region", b.Region, true)
		defStr(&b.Service, sigv4.DefaultService)
		c.scopePart(fb+".service", b.Service, false)
		b.SecretAccessKey = c.secret(fb, "secret_access_key", b.SecretAccessKey, b.SecretAccessKeyFile, b.SecretAccessKeyEnv, true)
		c.credential(fb, b.AccessKeyID, b.SecretAccessKey)
		if b.CKMSConfig != "" {
			b.CKMSConfig = c.rel(b.CKMSConfig)
		}
		defDur(&b.Timeout, 200*time.Millisecond)
		if b.Timeout <= 0 || b.Timeout >= budget {
			c.fail(fb+".timeout", "must be positive and below server.limits.budget (%v)", budget.D())
		}
		defInt(&b.MaxIdleConns, 64)
		if b.MaxIdleConns < 1 || b.MaxIdleConns > 10000 {
			c.fail(fb+".max_idle_conns", "must be between 1 and 10000")
		}
		defStr(&b.Model, "Cosmian KMS")
	}
	return names
}

func (c *checker) xksURL(field, s string) {
	if s == "" {
		c.fail(field, "required")
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		c.fail(field, "must be https:// or http://")
		return
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		c.fail(field, "must be scheme://host[:port][/prefix] without user, query or fragment")
		return
	}
	p := strings.TrimSuffix(u.EscapedPath(), "/")
	if strings.HasSuffix(p, "/kms/xks/v1") {
		c.fail(field, "give the base before /kms/xks/v1 (e.g. https://kms-a:9998/aws)")
		return
	}
	if err := validPrefix(p); err != nil {
		c.fail(field, "path %v", err)
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
			return false
		}
	}
	return true
}
