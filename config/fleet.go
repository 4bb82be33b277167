package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/fleet/peerauth"
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
	// Advertise is the admin URL other replicas forward operator calls to (default: the admin
	// listener's bound address). ${NAME} is replaced by the environment variable NAME (e.g.
	// "https://${POD_IP}:9465"); an IPv6 address gets its brackets.
	Advertise string `toml:"advertise_admin"`
	// SecretFile or SecretEnv: the fleet secret, base64 of at least 32 random bytes, the same on
	// every replica; it signs the operator calls a replica forwards to the driver and the
	// driver's replies. Secret is the decoded value. Without it, no call is forwarded.
	SecretFile string `toml:"secret_file"`
	SecretEnv  string `toml:"secret_env"`
	Secret     []byte `toml:"-"`
	// AdminCAFile: PEM roots for the driver's admin certificate (default: the system roots).
	AdminCAFile string `toml:"admin_ca_file"`
	// AdminServerName: the name the driver's admin certificate must carry (default: the
	// advertised host or a name of this replica's own admin certificate).
	AdminServerName string `toml:"admin_server_name"`
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
	for _, p := range []struct {
		field string
		path  *string
	}{{"fleet.admin_ca_file", &fl.AdminCAFile}} {
		if *p.path == "" {
			continue
		}
		*p.path = c.rel(*p.path)
		if _, err := os.Stat(*p.path); err != nil {
			c.fail(p.field, "cannot read %s: %v", *p.path, err)
		}
	}
	if n := fl.AdminServerName; n != "" && (len(n) > 253 || strings.ContainsAny(n, " /:@[]\t\n")) {
		c.fail("fleet.admin_server_name", "must be a DNS name of the admin certificates (e.g. xks.example.com)")
	}
	c.fleetSecret(fl, f.Admin.Listen != "")
	c.advertise(fl, &f.Admin)
	if f.Admin.Listen == "" {
		c.warn("fleet", "no [admin] listener: cutover commands must be sent to another replica")
	}
}

// fleetSecret resolves and decodes [fleet] secret_file / secret_env (exactly one, or neither).
func (c *checker) fleetSecret(fl *Fleet, admin bool) {
	if fl.SecretFile != "" && fl.SecretEnv != "" {
		c.fail("fleet.secret_file", "give one of secret_file, secret_env")
		return
	}
	field := "fleet.secret_file"
	if fl.SecretEnv != "" {
		field = "fleet.secret_env"
	}
	text := c.secret("fleet", "secret", "", fl.SecretFile, fl.SecretEnv, false)
	if text == "" {
		if admin && fl.SecretFile == "" && fl.SecretEnv == "" {
			c.warn("fleet.secret_file", "no fleet secret: a replica that does not drive the migration refuses operator actions "+
				"and names the driver to call instead; set secret_file (the same secret on every replica) so that any replica forwards them")
		}
		return
	}
	b, err := peerauth.ParseSecret(text)
	if err != nil {
		c.fail(field, "%v", err)
		return
	}
	fl.Secret = b
}

// advertise expands and checks [fleet] advertise_admin against [admin]: the rules a forwarding
// replica applies (app.checkDriverAddress), refused here already.
func (c *checker) advertise(fl *Fleet, a *Admin) {
	const field = "fleet.advertise_admin"
	if fl.Advertise == "" {
		if host, _, err := net.SplitHostPort(a.Listen); err == nil && a.Listen != "" && fl.Secret != nil {
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				c.warn(field, "not set, and admin.listen %s is on every address: the other replicas have no address to forward operator calls to "+
					"(set e.g. advertise_admin = \"https://${POD_IP}:PORT\")", a.Listen)
			}
		}
		return
	}
	v, err := expandEnv(fl.Advertise)
	if err != nil {
		c.fail(field, "%v", err)
		return
	}
	fl.Advertise = v
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		c.fail(field, "must be http:// or https:// and host:port only (this replica's admin listener as the others reach it)")
		return
	}
	adminTLS := a.TLS || a.CertFile != ""
	host := u.Hostname()
	ip := net.ParseIP(host)
	local := host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
	listenHost, _, _ := net.SplitHostPort(a.Listen)
	switch {
	case local && !proxy.IsLoopback(listenHost):
		c.fail(field, "%s names each replica's own host: the others cannot reach this one there; advertise an address they reach", host)
	case u.Scheme == "http" && adminTLS:
		c.fail(field, "http:// while the admin listener has TLS: use https://")
	case u.Scheme == "http" && !local:
		c.fail(field, "plain http beyond loopback: give the admin listener TLS (admin.tls) and advertise https://")
	}
}

// maxExpansion bounds one ${NAME}'s value.
const maxExpansion = 253

// expandEnv replaces each ${NAME} in s with the environment variable NAME, which must be set
// and look like a host name or an IP address (an IPv6 one gets the brackets a URL needs).
func expandEnv(s string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", errors.New("unclosed ${")
		}
		name := s[i+2 : i+j]
		if !envNameRE.MatchString(name) {
			return "", fmt.Errorf("${%s}: not an environment variable name", name)
		}
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty (e.g. the pod's IP from the downward API)", name)
		}
		if len(v) > maxExpansion || !hostValueRE.MatchString(v) {
			return "", fmt.Errorf("environment variable %s is not a host name or an IP address", name)
		}
		if ip := net.ParseIP(v); ip != nil && ip.To4() == nil && !strings.HasSuffix(s[:i], "[") {
			v = "[" + v + "]"
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

var (
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostValueRE = regexp.MustCompile(`^[A-Za-z0-9.:%-]+$`)
)
