// Package config reads the xksproxy TOML configuration file (`xksproxy serve --config FILE`):
// parsing, validation and defaults only. It knows nothing of the proxy; cmd/xksproxy maps a
// *File onto proxy.Config.
//
// Every error names the file and the field, e.g.
//
//	xksproxy.toml: backend[1].xks_url: must be https:// or http://
//
// Unknown keys are refused. Durations are TOML strings in Go syntax ("200ms", "15s").
// A secret is given exactly one way: inline (`secret_access_key`), from a file
// (`secret_access_key_file`, read and trimmed; a warning is returned when the file is group- or
// world-readable) or from an environment variable (`secret_access_key_env`). The admin token
// follows the same rule with `token`, `token_file`, `token_env`.
//
// Reference (defaults in brackets; see testdata/full.toml for a complete example):
//
//	[server]
//	listen            main XKS listener ["127.0.0.1:8443"]
//	metrics_listen    Prometheus /metrics listener ["127.0.0.1:9464"]; "off" disables
//	version_label     reported in xksProxyModel [the binary's version]
//	prefer_http1      offer http/1.1 before h2 in ALPN [false]; h2 costs ~47 µs more CPU per request
//
//	[server.limits]
//	max_body_bytes      request body bound [65536]
//	max_header_bytes    [16384]
//	max_header_count    [64]
//	read_header_timeout ["5s"]   read_timeout ["10s"]   write_timeout ["10s"]
//	idle_timeout        ["120s"] (AWS reuses connections)
//	budget              total time per request, fallback included ["240ms"]; ≤ 250ms
//	max_in_flight       beyond it 429 ThrottlingException [1024]
//	max_payload_bytes   largest plaintext/ciphertext [6144]; ≥ 4300 (spec minimum)
//	max_aad_bytes       largest AAD [8192]; ≥ 8192 (spec minimum)
//
//	[tls]
//	mode       "files" | "self-signed" | "acme" ["files"]
//	cert_file, key_file   PEM files (mode "files", both required; re-read on change and SIGHUP)
//	poll_interval         how often mode "files" checks the files for a change ["30s"]; ≥ 1s
//	hosts      DNS names / IPs for the self-signed certificate [["localhost"]]
//	domains    DNS names of the ACME certificate (mode "acme", required; no IPs, no wildcards)
//	ca         ACME directory URL [Let's Encrypt production]
//	email      ACME account contact [""]
//	storage_dir           ACME account, keys and certificates (0700) ["/var/lib/xksproxy/acme"]
//	challenge             "tls-alpn-01" (answered on server.listen) | "dns-01" ["tls-alpn-01"]
//	preferred_chain_root  root CN of the chain to prefer ["ISRG Root X1" with Let's Encrypt]
//	trusted_roots_file    PEM roots trusted for the ACME directory (private/test CA) [system]
//
//	[[prefix]]             one per logical key store (≥ 1)
//	path       URI prefix before /kms/xks/v1, "" or "/..." (e.g. "/aws")
//	region     SigV4 region AWS KMS signs with (required)
//	service    SigV4 service ["kms-xks-proxy"]
//	[[prefix.credential]]  1..16 sets, distinct access key ids
//	access_key_id, secret_access_key | secret_access_key_file | secret_access_key_env
//	created    when the set was issued, RFC 3339 ("2026-01-15T00:00:00Z", "2026-01-15" or a
//	           TOML date), for xks_sigv4_credential_age_days [the secret file's mtime; without
//	           a file the set has no age series and a warning says so]
//
//	[[backend]]            1..10 Cosmian KMS servers
//	name            [a-z0-9-]{1,32}, unique (e.g. "a", "b")
//	xks_url         base before /kms/xks/v1, e.g. "https://kms-a:9998/aws"
//	region          SigV4 region of the backend (required)
//	service         ["kms-xks-proxy"]
//	access_key_id, secret_access_key | _file | _env   the backend's aws_xks_sigv4_* credential
//	ckms_config     ckms client TOML of this backend (TLS for the XKS path, KMIP for migrations)
//	timeout         per attempt ["200ms"]; < budget
//	max_idle_conns  keep-alive pool [64]
//	model           ekmFleetDetails.model ["Cosmian KMS"]
//
//	[route]
//	primary         backend name [the first backend]
//	fallback        backend name or "" [""]
//
//	[health]
//	interval ["15s"] (≤ 55s)   test_key_id ["xksproxy-health-check"]
//	principal_arn ["xksproxy-health"]   degraded_latency ["150ms"]   disabled [false]
//
//	[admin]
//	listen          "" disables [""]; must be loopback unless allow_remote
//	allow_remote    [false]
//	token | token_file | token_env   required when listen is set; ≥ 32 characters
//
//	[cutover]
//	journal_path ["/var/lib/xksproxy/cutover.json"]  source ["a"]  target ["b"]
//	select "tag" | "owned" | "list" ["tag"]   tag ["aws-xks"]   keys (for select = "list")
//	concurrency [8]   target_acl "arn" | "service" | "both" ["both"]
//	shadow_duration ["0s"]   shadow_sample_rate 0..1 [0.01]
//	probation_duration ["10m"]   probation_max_error_rate 0..1 [0.01]
//	probation_max_p99 ["100ms"]   probation_min_requests [100]
//	revoke_source_grants_on_finalize [false]
//
//	[log]
//	level "debug" | "info" | "warn" | "error" ["info"]   format "json" | "text" ["json"]
package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/xksproxy/xksproxy/sigv4"
)

// ErrInvalid matches every parse or validation error (errors.Is).
var ErrInvalid = errors.New("invalid configuration")

// FieldError is a parse or validation error. Its text is "file[:line]: field: message"; Field
// is a dotted path such as "backend[1].xks_url" ("" for a syntax error).
type FieldError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Msg
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Duration is a time.Duration written as a TOML string ("200ms").
type Duration time.Duration

// UnmarshalText parses Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. \"200ms\", \"15s\")")
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// File is a parsed, validated configuration with defaults filled.
type File struct {
	Path    string    `toml:"-"`
	Server  Server    `toml:"server"`
	TLS     TLS       `toml:"tls"`
	Prefix  []Prefix  `toml:"prefix"`
	Backend []Backend `toml:"backend"`
	Route   Route     `toml:"route"`
	Health  Health    `toml:"health"`
	Admin   Admin     `toml:"admin"`
	Cutover Cutover   `toml:"cutover"`
	Log     Log       `toml:"log"`
}

// Server is [server].
type Server struct {
	Listen        string `toml:"listen"`
	MetricsListen string `toml:"metrics_listen"`
	VersionLabel  string `toml:"version_label"`
	PreferHTTP1   bool   `toml:"prefer_http1"`
	Limits        Limits `toml:"limits"`
}

// Limits is [server.limits].
type Limits struct {
	MaxBodyBytes      int64    `toml:"max_body_bytes"`
	MaxHeaderBytes    int      `toml:"max_header_bytes"`
	MaxHeaderCount    int      `toml:"max_header_count"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	Budget            Duration `toml:"budget"`
	MaxInFlight       int      `toml:"max_in_flight"`
	MaxPayloadBytes   int      `toml:"max_payload_bytes"`
	MaxAADBytes       int      `toml:"max_aad_bytes"`
}

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

// ACME defaults and challenges.
const (
	DefaultACMECA         = "https://acme-v02.api.letsencrypt.org/directory" // Let's Encrypt production
	DefaultACMEStorageDir = "/var/lib/xksproxy/acme"
	DefaultPollInterval   = 30 * time.Second
	ChallengeTLSALPN01    = "tls-alpn-01"
	ChallengeDNS01        = "dns-01"
)

// Timestamp is a point in time written as RFC 3339 ("2026-01-15T00:00:00Z"), a date
// ("2026-01-15", midnight UTC), or the TOML datetime/date of either.
type Timestamp struct{ time.Time }

// UnmarshalText parses RFC 3339 or a bare date.
func (ts *Timestamp) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		ts.Time = t.UTC()
		return nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		ts.Time = t
		return nil
	}
	return fmt.Errorf("not an RFC 3339 date (want e.g. \"2026-01-15T00:00:00Z\" or \"2026-01-15\")")
}

// MarshalText writes RFC 3339.
func (ts Timestamp) MarshalText() ([]byte, error) { return []byte(ts.UTC().Format(time.RFC3339)), nil }

// Prefix is one [[prefix]].
type Prefix struct {
	Path       string       `toml:"path"`
	Region     string       `toml:"region"`
	Service    string       `toml:"service"`
	Credential []Credential `toml:"credential"`
}

// Credential is one [[prefix.credential]]; Secret is resolved from whichever source was given.
type Credential struct {
	AccessKeyID         string `toml:"access_key_id"`
	SecretAccessKey     string `toml:"secret_access_key"`
	SecretAccessKeyFile string `toml:"secret_access_key_file"`
	SecretAccessKeyEnv  string `toml:"secret_access_key_env"`
	// Created is when the set was issued: the configured date, else the secret file's
	// modification time, else zero (no age metric for this set).
	Created Timestamp `toml:"created"`
}

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

// Route is [route].
type Route struct {
	Primary  string `toml:"primary"`
	Fallback string `toml:"fallback"`
}

// Health is [health].
type Health struct {
	Interval        Duration `toml:"interval"`
	TestKeyID       string   `toml:"test_key_id"`
	PrincipalARN    string   `toml:"principal_arn"`
	DegradedLatency Duration `toml:"degraded_latency"`
	Disabled        bool     `toml:"disabled"`
}

// Admin is [admin].
type Admin struct {
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
	Token       string `toml:"token"`
	TokenFile   string `toml:"token_file"`
	TokenEnv    string `toml:"token_env"`
}

// Cutover is [cutover].
type Cutover struct {
	JournalPath                  string   `toml:"journal_path"`
	Source                       string   `toml:"source"`
	Target                       string   `toml:"target"`
	Select                       string   `toml:"select"`
	Tag                          string   `toml:"tag"`
	Keys                         []string `toml:"keys"`
	Concurrency                  int      `toml:"concurrency"`
	TargetACL                    string   `toml:"target_acl"`
	ShadowDuration               Duration `toml:"shadow_duration"`
	ShadowSampleRate             *float64 `toml:"shadow_sample_rate"`
	ProbationDuration            Duration `toml:"probation_duration"`
	ProbationMaxErrorRate        *float64 `toml:"probation_max_error_rate"`
	ProbationMaxP99              Duration `toml:"probation_max_p99"`
	ProbationMinRequests         int      `toml:"probation_min_requests"`
	RevokeSourceGrantsOnFinalize bool     `toml:"revoke_source_grants_on_finalize"`
}

// Log is [log].
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Credentials returns the prefix's credential sets as sigv4 credentials.
func (p Prefix) Credentials() []sigv4.Credential {
	out := make([]sigv4.Credential, len(p.Credential))
	for i, c := range p.Credential {
		out[i] = sigv4.Credential{AccessKeyID: c.AccessKeyID, Secret: c.SecretAccessKey}
	}
	return out
}

// SigV4 returns the backend's credential.
func (b Backend) SigV4() sigv4.Credential {
	return sigv4.Credential{AccessKeyID: b.AccessKeyID, Secret: b.SecretAccessKey}
}

// Defaults.
const (
	DefaultListen        = "127.0.0.1:8443"
	DefaultMetricsListen = "127.0.0.1:9464"
	DefaultJournalPath   = "/var/lib/xksproxy/cutover.json"
	maxFileSize          = 1 << 20
)

// Load reads and parses the file at path. Warnings are non-fatal findings (e.g. a
// world-readable secret file).
func Load(path string) (*File, []string, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return Parse(path, data)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return b, nil
}

// Parse parses data as the file named path (path is used in messages and to resolve relative
// secret files). Relative file paths in the configuration are relative to the file's directory.
func Parse(path string, data []byte) (*File, []string, error) {
	name := filepath.Base(path)
	if path == "" {
		name = "config"
	}
	f := &File{Path: path}
	md, err := toml.Decode(string(data), f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &FieldError{File: name, Line: pe.Position.Line, Field: pe.LastKey, Msg: pe.Message}
		}
		return nil, nil, decodeError(name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		return nil, nil, &FieldError{File: name, Field: keys[0], Msg: "unknown key"}
	}
	c := checker{name: name, dir: filepath.Dir(path), cutoverSet: md.IsDefined("cutover")}
	c.check(f)
	if c.err != nil {
		return nil, c.warnings, c.err
	}
	return f, c.warnings, nil
}

// typeErrRE matches BurntSushi's type-mismatch text: `toml: line 17 (last key "a.b"): msg`.
var typeErrRE = regexp.MustCompile(`^(?:toml: )?line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns a non-syntax decode error (type mismatch) into a FieldError.
func decodeError(name string, err error) *FieldError {
	s := err.Error()
	if m := typeErrRE.FindStringSubmatch(s); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{File: name, Line: line, Field: m[2], Msg: m[3]}
	}
	return &FieldError{File: name, Msg: strings.TrimPrefix(s, "toml: ")}
}

type checker struct {
	name, dir  string
	cutoverSet bool
	warnings   []string
	err        error
}

func (c *checker) fail(field, format string, args ...any) {
	if c.err == nil {
		c.err = &FieldError{File: c.name, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
}

func (c *checker) warn(field, format string, args ...any) {
	c.warnings = append(c.warnings, fmt.Sprintf("%s: %s: %s", c.name, field, fmt.Sprintf(format, args...)))
}

func defDur(d *Duration, v time.Duration) {
	if *d == 0 {
		*d = Duration(v)
	}
}

func defInt[T int | int64](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

func defStr(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

func (c *checker) positiveDur(field string, d Duration) {
	if d < 0 {
		c.fail(field, "must not be negative")
	}
}

func (c *checker) check(f *File) {
	// [server]
	s := &f.Server
	defStr(&s.Listen, DefaultListen)
	c.hostPort("server.listen", s.Listen)
	switch s.MetricsListen {
	case "":
		s.MetricsListen = DefaultMetricsListen
	case "off":
		s.MetricsListen = ""
	}
	if s.MetricsListen != "" {
		c.hostPort("server.metrics_listen", s.MetricsListen)
	}
	l := &s.Limits
	defInt(&l.MaxBodyBytes, 64<<10)
	defInt(&l.MaxHeaderBytes, 16<<10)
	defInt(&l.MaxHeaderCount, 64)
	defDur(&l.ReadHeaderTimeout, 5*time.Second)
	defDur(&l.ReadTimeout, 10*time.Second)
	defDur(&l.WriteTimeout, 10*time.Second)
	defDur(&l.IdleTimeout, 120*time.Second)
	defDur(&l.Budget, 240*time.Millisecond)
	defInt(&l.MaxInFlight, 1024)
	defInt(&l.MaxPayloadBytes, 6144)
	defInt(&l.MaxAADBytes, 8192)
	const lp = "server.limits."
	if l.MaxBodyBytes < 32<<10 || l.MaxBodyBytes > 16<<20 {
		c.fail(lp+"max_body_bytes", "must be between 32768 and 16777216")
	}
	if l.MaxHeaderBytes < 4096 || l.MaxHeaderBytes > 1<<20 {
		c.fail(lp+"max_header_bytes", "must be between 4096 and 1048576")
	}
	if l.MaxHeaderCount < 8 || l.MaxHeaderCount > 1000 {
		c.fail(lp+"max_header_count", "must be between 8 and 1000")
	}
	c.positiveDur(lp+"read_header_timeout", l.ReadHeaderTimeout)
	c.positiveDur(lp+"read_timeout", l.ReadTimeout)
	c.positiveDur(lp+"write_timeout", l.WriteTimeout)
	c.positiveDur(lp+"idle_timeout", l.IdleTimeout)
	if l.Budget <= 0 || l.Budget.D() > 250*time.Millisecond {
		c.fail(lp+"budget", "must be positive and at most 250ms (AWS KMS's timeout)")
	}
	if l.MaxInFlight < 1 {
		c.fail(lp+"max_in_flight", "must be at least 1")
	}
	if l.MaxPayloadBytes < 4300 || l.MaxPayloadBytes > 1<<20 {
		c.fail(lp+"max_payload_bytes", "must be between 4300 (spec minimum) and 1048576")
	}
	if l.MaxAADBytes < 8192 || l.MaxAADBytes > 1<<20 {
		c.fail(lp+"max_aad_bytes", "must be between 8192 (spec minimum) and 1048576")
	}

	// [tls]
	c.tls(&f.TLS)

	// [[prefix]]
	if len(f.Prefix) == 0 {
		c.fail("prefix", "at least one [[prefix]] is required")
	}
	seenPrefix := map[string]int{}
	for i := range f.Prefix {
		p := &f.Prefix[i]
		fp := fmt.Sprintf("prefix[%d]", i)
		if err := validPrefix(p.Path); err != nil {
			c.fail(fp+".path", "%v", err)
		}
		if j, dup := seenPrefix[p.Path]; dup {
			c.fail(fp+".path", "same path as prefix[%d]", j)
		}
		seenPrefix[p.Path] = i
		c.scopePart(fp+".region", p.Region, true)
		defStr(&p.Service, sigv4.DefaultService)
		c.scopePart(fp+".service", p.Service, false)
		if len(p.Credential) == 0 || len(p.Credential) > sigv4.MaxCredentials {
			c.fail(fp+".credential", "need 1 to %d [[prefix.credential]] sets", sigv4.MaxCredentials)
		}
		seen := map[string]int{}
		for k := range p.Credential {
			cr := &p.Credential[k]
			fc := fmt.Sprintf("%s.credential[%d]", fp, k)
			cr.SecretAccessKey = c.secret(fc, "secret_access_key", cr.SecretAccessKey, cr.SecretAccessKeyFile, cr.SecretAccessKeyEnv, true)
			c.credential(fc, cr.AccessKeyID, cr.SecretAccessKey)
			c.created(fc, cr)
			if j, dup := seen[cr.AccessKeyID]; dup {
				c.fail(fc+".access_key_id", "same access key id as credential[%d]", j)
			}
			seen[cr.AccessKeyID] = k
		}
	}

	// [[backend]]
	if len(f.Backend) == 0 || len(f.Backend) > 10 {
		c.fail("backend", "need 1 to 10 [[backend]] entries")
	}
	names := map[string]int{}
	for i := range f.Backend {
		b := &f.Backend[i]
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
		if b.Timeout <= 0 || b.Timeout >= l.Budget {
			c.fail(fb+".timeout", "must be positive and below server.limits.budget (%v)", l.Budget.D())
		}
		defInt(&b.MaxIdleConns, 64)
		if b.MaxIdleConns < 1 || b.MaxIdleConns > 10000 {
			c.fail(fb+".max_idle_conns", "must be between 1 and 10000")
		}
		defStr(&b.Model, "Cosmian KMS")
	}

	// [route]
	if f.Route.Primary == "" && len(f.Backend) > 0 {
		f.Route.Primary = f.Backend[0].Name
	}
	if _, ok := names[f.Route.Primary]; !ok && len(f.Backend) > 0 {
		c.fail("route.primary", "no backend is named %q", f.Route.Primary)
	}
	if fb := f.Route.Fallback; fb != "" {
		if _, ok := names[fb]; !ok {
			c.fail("route.fallback", "no backend is named %q", fb)
		} else if fb == f.Route.Primary {
			c.fail("route.fallback", "must differ from route.primary")
		}
	}

	// [health]
	h := &f.Health
	defDur(&h.Interval, 15*time.Second)
	if h.Interval <= 0 || h.Interval.D() > 55*time.Second {
		c.fail("health.interval", "must be positive and at most 55s (the cached result must stay under a minute old)")
	}
	defStr(&h.TestKeyID, "xksproxy-health-check")
	if !validKeyID(h.TestKeyID) {
		c.fail("health.test_key_id", "must be 1 to 128 characters of A-Z a-z 0-9 . - _")
	}
	defStr(&h.PrincipalARN, "xksproxy-health")
	if len(h.PrincipalARN) > 2048 {
		c.fail("health.principal_arn", "longer than 2048 characters")
	}
	defDur(&h.DegradedLatency, 150*time.Millisecond)
	if h.DegradedLatency <= 0 {
		c.fail("health.degraded_latency", "must be positive")
	}

	// [admin]
	a := &f.Admin
	a.Token = c.secret("admin", "token", a.Token, a.TokenFile, a.TokenEnv, a.Listen != "")
	if a.Listen != "" {
		if host, ok := c.hostPort("admin.listen", a.Listen); ok && !a.AllowRemote && !isLoopback(host) {
			c.fail("admin.listen", "must be a loopback address (127.0.0.1, ::1, localhost) unless admin.allow_remote = true")
		}
		if len(a.Token) < 32 {
			c.fail("admin.token", "must be at least 32 characters")
		}
	}

	// [cutover]
	co := &f.Cutover
	defStr(&co.JournalPath, DefaultJournalPath)
	co.JournalPath = c.rel(co.JournalPath)
	defStr(&co.Source, "a")
	defStr(&co.Target, "b")
	if _, ok := names[co.Source]; !ok && len(f.Backend) > 0 && c.sectionUsed(f) {
		c.fail("cutover.source", "no backend is named %q", co.Source)
	}
	if _, ok := names[co.Target]; !ok && len(f.Backend) > 0 && c.sectionUsed(f) {
		c.fail("cutover.target", "no backend is named %q", co.Target)
	}
	if co.Source == co.Target {
		c.fail("cutover.target", "must differ from cutover.source")
	}
	defStr(&co.Select, "tag")
	switch co.Select {
	case "tag", "owned":
	case "list":
		if len(co.Keys) == 0 {
			c.fail("cutover.keys", "required when cutover.select = \"list\"")
		}
	default:
		c.fail("cutover.select", "must be \"tag\", \"owned\" or \"list\"")
	}
	for i, k := range co.Keys {
		if !validKeyID(k) {
			c.fail(fmt.Sprintf("cutover.keys[%d]", i), "must be 1 to 128 characters of A-Z a-z 0-9 . - _")
		}
	}
	defStr(&co.Tag, "aws-xks")
	defInt(&co.Concurrency, 8)
	if co.Concurrency < 1 || co.Concurrency > 256 {
		c.fail("cutover.concurrency", "must be between 1 and 256")
	}
	defStr(&co.TargetACL, "both")
	switch co.TargetACL {
	case "arn", "service", "both":
	default:
		c.fail("cutover.target_acl", "must be \"arn\", \"service\" or \"both\"")
	}
	c.positiveDur("cutover.shadow_duration", co.ShadowDuration)
	co.ShadowSampleRate = c.rate("cutover.shadow_sample_rate", co.ShadowSampleRate, 0.01)
	defDur(&co.ProbationDuration, 10*time.Minute)
	c.positiveDur("cutover.probation_duration", co.ProbationDuration)
	co.ProbationMaxErrorRate = c.rate("cutover.probation_max_error_rate", co.ProbationMaxErrorRate, 0.01)
	defDur(&co.ProbationMaxP99, 100*time.Millisecond)
	c.positiveDur("cutover.probation_max_p99", co.ProbationMaxP99)
	defInt(&co.ProbationMinRequests, 100)
	if co.ProbationMinRequests < 0 {
		c.fail("cutover.probation_min_requests", "must not be negative")
	}

	// [log]
	defStr(&f.Log.Level, "info")
	switch f.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		c.fail("log.level", "must be \"debug\", \"info\", \"warn\" or \"error\"")
	}
	defStr(&f.Log.Format, "json")
	switch f.Log.Format {
	case "json", "text":
	default:
		c.fail("log.format", "must be \"json\" or \"text\"")
	}
}

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
		defDur(&t.PollInterval, DefaultPollInterval)
		if t.PollInterval.D() < time.Second || t.PollInterval.D() > 24*time.Hour {
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
		defStr(&t.CA, DefaultACMECA)
		if u, err := url.Parse(t.CA); err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && u.Scheme != "http") {
			c.fail("tls.ca", "must be the ACME directory URL (https://...)")
		}
		if t.Email != "" && (len(t.Email) > 254 || strings.Count(t.Email, "@") != 1 ||
			strings.HasPrefix(t.Email, "@") || strings.HasSuffix(t.Email, "@") || strings.ContainsAny(t.Email, " \t\r\n<>,;")) {
			c.fail("tls.email", "must be an e-mail address")
		}
		defStr(&t.StorageDir, DefaultACMEStorageDir)
		t.StorageDir = c.rel(t.StorageDir)
		defStr(&t.Challenge, ChallengeTLSALPN01)
		switch t.Challenge {
		case ChallengeTLSALPN01, ChallengeDNS01:
		default:
			c.fail("tls.challenge", "must be %q or %q", ChallengeTLSALPN01, ChallengeDNS01)
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

// created fills cr.Created: the configured date, else the secret file's modification time
// (rotation writes a new file), else zero with a warning: the set then has no age series.
func (c *checker) created(field string, cr *Credential) {
	if !cr.Created.IsZero() {
		if cr.Created.After(time.Now().Add(24 * time.Hour)) {
			c.fail(field+".created", "is in the future")
		}
		return
	}
	if cr.SecretAccessKeyFile != "" {
		if st, err := os.Stat(c.rel(cr.SecretAccessKeyFile)); err == nil {
			cr.Created = Timestamp{st.ModTime().UTC()}
			return
		}
		return // the read error is reported by secret()
	}
	c.warn(field+".created", "not set and the secret is not from a file: xks_sigv4_credential_age_days has no series for %s", cr.AccessKeyID)
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

// sectionUsed: the cutover backends are checked when [cutover] is written or there are two or
// more backends (a single-backend file without [cutover] is valid).
func (c *checker) sectionUsed(f *File) bool { return c.cutoverSet || len(f.Backend) >= 2 }

func (c *checker) rate(field string, p *float64, def float64) *float64 {
	if p == nil {
		return &def
	}
	if math.IsNaN(*p) || *p < 0 || *p > 1 {
		c.fail(field, "must be between 0 and 1")
	}
	return p
}

func (c *checker) rel(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

func (c *checker) hostPort(field, s string) (string, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		c.fail(field, "must be host:port (e.g. \"0.0.0.0:443\")")
		return "", false
	}
	for _, ch := range port {
		if ch < '0' || ch > '9' {
			c.fail(field, "port must be a number")
			return "", false
		}
	}
	return host, true
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *checker) scopePart(field, s string, required bool) {
	if s == "" {
		if required {
			c.fail(field, "required")
		}
		return
	}
	if len(s) > 64 {
		c.fail(field, "longer than 64 characters")
		return
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			c.fail(field, "may only contain a-z 0-9 - _ .")
			return
		}
	}
}

func (c *checker) credential(field, akid, secret string) {
	if akid == "" {
		c.fail(field+".access_key_id", "required")
		return
	}
	if secret == "" {
		return // already reported by secret()
	}
	if err := (sigv4.Credential{AccessKeyID: akid, Secret: secret}).Validate(); err != nil {
		// Validate's message names the field and never echoes the secret.
		what := ".secret_access_key"
		if strings.Contains(err.Error(), "access key id must") {
			what = ".access_key_id"
		}
		c.fail(field+what, "%s", strings.TrimPrefix(err.Error(), sigv4.ErrInvalidCredential.Error()+": "))
	}
}

// secret resolves exactly one of inline / file / env for the key named base under field.
func (c *checker) secret(field, base, inline, file, env string, required bool) string {
	n := 0
	for _, s := range []string{inline, file, env} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		c.fail(field+"."+base, "give exactly one of %s, %s_file, %s_env", base, base, base)
		return ""
	}
	switch {
	case inline != "":
		return inline
	case file != "":
		p := c.rel(file)
		st, err := os.Stat(p)
		if err != nil {
			c.fail(field+"."+base+"_file", "cannot read: %v", errors.Unwrap(err))
			return ""
		}
		if st.Mode().Perm()&0o077 != 0 {
			c.warn(field+"."+base+"_file", "%s is readable by group or others (mode %v); chmod 600 it", p, st.Mode().Perm())
		}
		b, err := readBounded(p)
		if err != nil {
			c.fail(field+"."+base+"_file", "cannot read: %v", err)
			return ""
		}
		s := strings.TrimSpace(string(b))
		clear(b)
		if s == "" {
			c.fail(field+"."+base+"_file", "file is empty")
		}
		return s
	case env != "":
		v, ok := os.LookupEnv(env)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			c.fail(field+"."+base+"_env", "environment variable %s is not set or empty", env)
		}
		return v
	}
	if required {
		c.fail(field+"."+base, "required (or %s_file / %s_env)", base, base)
	}
	return ""
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

// validPrefix mirrors xks.ValidPrefix (config must not depend on the protocol package for it).
func validPrefix(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' || len(p) == 1 {
		return errors.New("must be empty or \"/\" followed by at least one character")
	}
	if len(p)+len("/kms/xks/v1") > 128 {
		return errors.New("prefix + /kms/xks/v1 longer than 128 characters")
	}
	for i := 1; i < len(p); i++ {
		b := p[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '/' || b == '-' || b == '_') {
			return errors.New("may only contain a-z A-Z 0-9 / - _")
		}
	}
	return nil
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

func validKeyID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}
