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
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
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
	Fleet   *Fleet    `toml:"fleet"`
	Log     Log       `toml:"log"`
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
	c.server(&f.Server)
	c.tls(&f.TLS)
	c.prefixes(f.Prefix)
	names := c.backends(f.Backend, f.Server.Limits.Budget)
	c.route(f, names)
	c.health(&f.Health)
	c.admin(&f.Admin)
	c.cutover(f, names)
	c.fleet(f)
	c.log(&f.Log)
}

func (c *checker) rel(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}
