package cli

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
)

// DemoFlags are the flags of `xksproxy demo`.
type DemoFlags struct {
	Keys, Replicas                  int
	RPS                             float64
	Warmup, Shadow, Probation, Tail time.Duration
	NoShadow, JSON                  bool
	LogLevel                        string
	CPUProfile                      string
}

// Register adds the demo's flags to fs, with their defaults.
func (d *DemoFlags) Register(fs *flag.FlagSet) {
	fs.IntVar(&d.Keys, "keys", 100, "keys on backend A")
	fs.IntVar(&d.Replicas, "replicas", 1, "proxies behind one load balancer; above 1 they form a fleet over an embedded etcd")
	fs.Float64Var(&d.RPS, "rps", 300, "AWS-like requests per second throughout")
	DurationVar(fs, &d.Warmup, "warmup", 3*time.Second, "`duration` of traffic before the migration starts")
	DurationVar(fs, &d.Shadow, "shadow", 2*time.Second, "mirror live Decrypts to B for this `duration` before switching")
	fs.BoolVar(&d.NoShadow, "no-shadow", false, "switch without mirroring Decrypts to B first")
	DurationVar(fs, &d.Probation, "probation", 5*time.Second, "watch B for this `duration` after the switch before finalizing")
	DurationVar(fs, &d.Tail, "tail", 2*time.Second, "`duration` of traffic after finalizing")
	fs.BoolVar(&d.JSON, "json", false, "print one JSON object instead of the summary")
	fs.StringVar(&d.LogLevel, "log-level", "error", "log level for the components (logs go to stderr)")
	fs.StringVar(&d.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole run (every replica, both emulators, the load) to this `file`, for go tool pprof")
}

// Check reports the first usage error of the flags' values.
func (d *DemoFlags) Check() error {
	_, err := NewLogger(nil, d.LogLevel, "text")
	return err
}

// DevFlags are the flags of `xksproxy serve --dev`.
type DevFlags struct {
	Listen, Prefix, Region, AccessKeyID, Secret, ProxyConfigOut, LogLevel string
	Keys                                                                  Repeated
}

// DevFlagNames are the flags DevFlags.Register adds: they only mean something with --dev.
var DevFlagNames = []string{"listen", "dev-prefix", "region", "access-key-id", "secret-access-key", "proxy-config-out", "log-level", "dev-key"}

// Register adds the --dev flags to fs, with their defaults.
func (d *DevFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&d.Listen, "listen", "127.0.0.1:8443", "proxy listen address")
	fs.StringVar(&d.Prefix, "dev-prefix", "/aws", "URI path prefix before /kms/xks/v1")
	fs.StringVar(&d.Region, "region", "us-east-1", "SigV4 region")
	fs.StringVar(&d.AccessKeyID, "access-key-id", "", "SigV4 access key id (default: random per run)")
	fs.StringVar(&d.Secret, "secret-access-key", "", "SigV4 secret (default: random per run)")
	fs.StringVar(&d.ProxyConfigOut, "proxy-config-out", "", "write the AWS proxy configuration file JSON here")
	fs.StringVar(&d.LogLevel, "log-level", "info", "log level")
	fs.Var(&d.Keys, "dev-key", "key ID[:USAGE] on both backends, USAGE "+strings.Join(KeyUsages, "|")+" (repeatable)")
}

// Owns reports whether name is one of the --dev flags.
func (d *DevFlags) Owns(name string) bool { return slices.Contains(DevFlagNames, name) }

// Credential is the SigV4 credential the flags name (zero: a random one per run).
func (d *DevFlags) Credential() (sigv4.Credential, error) {
	if d.AccessKeyID == "" && d.Secret == "" {
		return sigv4.Credential{}, nil
	}
	c := sigv4.Credential{AccessKeyID: d.AccessKeyID, Secret: d.Secret}
	if err := c.Validate(); err != nil {
		return sigv4.Credential{}, UsageErr("--access-key-id/--secret-access-key: %v", err)
	}
	return c, nil
}

// Check reports the first usage error of the flags' values.
func (d *DevFlags) Check() error {
	if _, err := NewLogger(nil, d.LogLevel, "text"); err != nil {
		return err
	}
	for _, s := range d.Keys {
		if _, _, err := SplitKey(s); err != nil {
			return UsageErr("%v", err)
		}
	}
	_, err := d.Credential()
	return err
}

// KeyUsages are the usages a --dev-key may name (devstack.Usage gives each its KMIP mask).
var KeyUsages = []string{"encrypt-decrypt", "encrypt", "decrypt", "none"}

// SplitKey reads a --dev-key value, `ID[:USAGE]`; the usage defaults to encrypt-decrypt.
func SplitKey(s string) (id, usage string, err error) {
	id, usage, _ = strings.Cut(s, ":")
	if usage == "" {
		usage = KeyUsages[0]
	}
	if id == "" {
		return "", "", fmt.Errorf("--dev-key %q: empty key id", s)
	}
	if !slices.Contains(KeyUsages, usage) {
		return "", "", fmt.Errorf("--dev-key %q: usage %q: want encrypt-decrypt, encrypt, decrypt or none", s, usage)
	}
	return id, usage, nil
}
