package config

import (
	"fmt"

	"github.com/xksproxy/xksproxy/proxy"
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

// backends checks every [[backend]]; it returns the index of each name. budget (0: the
// proxy's default) bounds the per-attempt timeout. Keys left out take the proxy's defaults
// (proxy.BackendConfig).
func (c *checker) backends(backends []Backend, budget Duration) map[string]int {
	if len(backends) == 0 || len(backends) > 10 {
		c.fail("backend", "need 1 to 10 [[backend]] entries")
	}
	if budget == 0 {
		budget = Duration(proxy.DefaultBudget)
	}
	names := map[string]int{}
	for i := range backends {
		b := &backends[i]
		fb := fmt.Sprintf("backend[%d]", i)
		if !proxy.ValidBackendName(b.Name) {
			c.fail(fb+".name", "must be 1 to 32 characters of a-z 0-9 -")
		}
		if j, dup := names[b.Name]; dup {
			c.fail(fb+".name", "same name as backend[%d]", j)
		}
		names[b.Name] = i
		c.rule(fb+".xks_url", proxy.CheckXKSURL(b.XKSURL))
		c.scopePart(fb+".region", b.Region, true)
		c.scopePart(fb+".service", b.Service, false)
		b.SecretAccessKey = c.secret(fb, "secret_access_key", b.SecretAccessKey, b.SecretAccessKeyFile, b.SecretAccessKeyEnv, true)
		c.credential(fb, b.AccessKeyID, b.SecretAccessKey)
		if b.CKMSConfig != "" {
			// The ckms client file holds the keys' owner credential: a secret file like the others.
			b.CKMSConfig = c.rel(b.CKMSConfig)
			if c.resolves(fb) {
				c.private(fb+".ckms_config", b.CKMSConfig)
			}
		}
		if b.Timeout < 0 || b.Timeout > budget {
			c.fail(fb+".timeout", "must be positive and at most server.limits.budget (%v)", budget.D())
		}
		if b.MaxIdleConns < 0 || b.MaxIdleConns > 10000 {
			c.fail(fb+".max_idle_conns", "must be between 1 and 10000")
		}
	}
	return names
}
