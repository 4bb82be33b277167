package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/proxy"
)

// Fleet is [fleet]: several replicas coordinated through etcd. Absent (nil): one process with
// the file journal. Defaults are fleet.Config's (member: the host name, key_prefix
// "/xksproxy/", lease_ttl 10s, dial_timeout 5s).
type Fleet struct {
	EtcdEndpoints []string `toml:"etcd_endpoints"`
	Member        string   `toml:"member"`
	KeyPrefix     string   `toml:"key_prefix"`
	LeaseTTL      Duration `toml:"lease_ttl"`
	DialTimeout   Duration `toml:"dial_timeout"`
	CAFile        string   `toml:"ca_file"`
	CertFile      string   `toml:"cert_file"`
	KeyFile       string   `toml:"key_file"`
	Username      string   `toml:"username"`
	Password      string   `toml:"password"`
	PasswordFile  string   `toml:"password_file"`
	PasswordEnv   string   `toml:"password_env"`
	// Advertise is the admin URL other replicas forward operator calls to (default: none;
	// then only this replica's own admin API acts on it).
	Advertise string `toml:"advertise_admin"`
}

// fleet checks [fleet] and resolves its password.
func (c *checker) fleet(f *File) {
	fl := f.Fleet
	if fl == nil {
		return
	}
	if len(fl.EtcdEndpoints) == 0 {
		c.fail("fleet.etcd_endpoints", "required: at least one etcd client URL (https://host:2379)")
	}
	for i, e := range fl.EtcdEndpoints {
		field := fmt.Sprintf("fleet.etcd_endpoints[%d]", i)
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Port() == "" {
			c.fail(field, "must be an http:// or https:// URL with a port, e.g. https://etcd-0:2379")
			continue
		}
		if u.Scheme == "http" && !proxy.IsLoopback(u.Hostname()) {
			c.warn(field, "plain http to a remote etcd: the migration state and the etcd password cross the network in the clear")
		}
	}
	if fl.Member != "" {
		c.rule("fleet.member", fleet.ValidMemberName(fl.Member))
	}
	if p := fl.KeyPrefix; p != "" && (!strings.HasPrefix(p, "/") || len(p) > 256) {
		c.fail("fleet.key_prefix", "must start with / (one key space per key store, e.g. \"/xksproxy/prod/\")")
	}
	if fl.LeaseTTL != 0 && fl.LeaseTTL.D() < 2*time.Second {
		c.fail("fleet.lease_ttl", "must be at least 2s (etcd's minimum lease)")
	}
	if fl.DialTimeout < 0 {
		c.fail("fleet.dial_timeout", "must be positive")
	}
	for _, p := range []struct {
		field string
		path  *string
	}{{"fleet.ca_file", &fl.CAFile}, {"fleet.cert_file", &fl.CertFile}, {"fleet.key_file", &fl.KeyFile}} {
		if *p.path == "" {
			continue
		}
		*p.path = c.rel(*p.path)
		if _, err := os.Stat(*p.path); err != nil {
			c.fail(p.field, "cannot read %s: %v", *p.path, err)
		}
	}
	if (fl.CertFile == "") != (fl.KeyFile == "") {
		c.fail("fleet.key_file", "fleet.cert_file and fleet.key_file go together")
	}
	fl.Password = c.secret("fleet", "password", fl.Password, fl.PasswordFile, fl.PasswordEnv, fl.Username != "")
	if fl.Username == "" && fl.Password != "" {
		c.fail("fleet.username", "required with fleet.password")
	}
	if a := fl.Advertise; a != "" {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			c.fail("fleet.advertise_admin", "must be an http:// or https:// URL of this replica's admin listener")
		}
	}
	if f.Admin.Listen == "" {
		c.warn("fleet", "no [admin] listener: cutover commands must be sent to another replica")
	}
}
