// Package config reads the xksproxy TOML configuration file (`xksproxy serve --config FILE`):
// parsing and validation. app.FromFile maps a *File onto the components' configurations.
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
// The keys and their defaults are listed once, in deploy/examples/xksproxy.toml (a test holds
// it to these structures; testdata/full.toml is a complete example). The defaults themselves are
// the components': a key left out stays zero (nil for the keys where a written zero means
// something) and the component's Config fills it; the rules a component owns are the
// component's validators, called here so that the message still names the file and the field.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/xksproxy/xksproxy/xks"
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
	Err   error // the error File.Locate placed, else nil
}

// Unwrap returns the error File.Locate placed (nil for the file's own problems).
func (e *FieldError) Unwrap() error { return e.Err }

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
	Path    string     `toml:"-"`
	pos     *positions // where each key is written (Locate)
	Server  Server     `toml:"server"`
	TLS     TLS        `toml:"tls"`
	Prefix  []Prefix   `toml:"prefix"`
	Backend []Backend  `toml:"backend"`
	Route   Route      `toml:"route"`
	Health  Health     `toml:"health"`
	Admin   Admin      `toml:"admin"`
	Cutover Cutover    `toml:"cutover"`
	Fleet   *Fleet     `toml:"fleet"`
	Log     Log        `toml:"log"`
}

// Defaults.
const (
	DefaultJournalPath = "/var/lib/xksproxy/cutover.json"
	maxFileSize        = 1 << 20
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
//
// The error names every problem found, one per line, each a *FieldError that carries the
// key's line ("x.toml:12: backend[1].xks_url: must be https:// or http://"); errors.As finds
// the first. A syntax error or a value of the wrong type stops the parse and comes alone.
func Parse(path string, data []byte) (*File, []string, error) {
	return parse(path, data, options{})
}

// options are the variants of parse.
type options struct {
	// prefixSecretsOnly leaves every secret but the prefixes' credentials unresolved.
	prefixSecretsOnly bool
}

// LoadPrefixSecrets is Load for a command that needs only the prefixes' credentials (the AWS
// proxy configuration file): every key is checked as Load checks it, but the secrets of the
// backends, the admin API and the fleet are not read (they stay empty, and an unset
// environment variable or a missing file they name is no error).
func LoadPrefixSecrets(path string) (*File, []string, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return parse(path, data, options{prefixSecretsOnly: true})
}

func parse(path string, data []byte, o options) (*File, []string, error) {
	name := filepath.Base(path)
	if path == "" {
		name = "config"
	}
	// The syntax first, into a generic tree: a syntax error's position is exact, and the tree
	// tells which entry of an array of tables a decoding error belongs to (decodeError).
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &FieldError{File: name, Line: pe.Position.Line, Field: pe.LastKey, Msg: pe.Message}
		}
		return nil, nil, &FieldError{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	pos := locate(data)
	f := &File{Path: path, pos: pos}
	md, err := toml.Decode(string(data), f)
	if err != nil {
		return nil, nil, decodeError(name, pos, tree, err)
	}
	c := checker{name: name, dir: filepath.Dir(path), cutoverSet: md.IsDefined("cutover"), pos: pos, opts: o}
	c.unknown(md.Undecoded())
	c.check(f)
	if len(c.errs) > 0 {
		return nil, c.warnings, c.err()
	}
	return f, c.warnings, nil
}

// locateRE splits "key: message" where key is a field path ("backend[0].ckms_config").
var locateRE = regexp.MustCompile(`(?s)^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$`)

// Locate gives an error about a key of f, written "FILE: key: message" (as app.FromFile writes
// the problems it finds in the files a configuration names), the key's line, so that it reads
// as the file's own problems do: "FILE:LINE: key: message". Any other error is returned as is.
func (f *File) Locate(err error) error {
	if err == nil || f == nil {
		return err
	}
	name := filepath.Base(f.Path)
	rest, ok := strings.CutPrefix(err.Error(), name+": ")
	if !ok {
		return err
	}
	m := locateRE.FindStringSubmatch(rest)
	if m == nil {
		return err
	}
	line := f.pos.line(m[1])
	if line == 0 {
		return err
	}
	return &FieldError{File: name, Line: line, Field: m[1], Msg: m[2], Err: err}
}

type checker struct {
	name, dir  string
	cutoverSet bool
	pos        *positions
	opts       options
	warnings   []string
	errs       []*FieldError
}

// fail records a problem with field; checking goes on, so that one run names them all.
func (c *checker) fail(field, format string, args ...any) {
	e := &FieldError{File: c.name, Line: c.pos.line(field), Field: field, Msg: fmt.Sprintf(format, args...)}
	for _, o := range c.errs {
		if *o == *e {
			return
		}
	}
	c.errs = append(c.errs, e)
}

// err joins every recorded problem, in the order of the file (those without a line last).
func (c *checker) err() error {
	sort.SliceStable(c.errs, func(i, j int) bool {
		li, lj := c.errs[i].Line, c.errs[j].Line
		return li != 0 && (lj == 0 || li < lj)
	})
	errs := make([]error, len(c.errs))
	for i, e := range c.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (c *checker) warn(field, format string, args ...any) {
	where := c.name
	if l := c.pos.line(field); l > 0 {
		where += ":" + strconv.Itoa(l)
	}
	c.warnings = append(c.warnings, fmt.Sprintf("%s: %s: %s", where, field, fmt.Sprintf(format, args...)))
}

func defStr(p *string, v string) {
	if *p == "" {
		*p = v
	}
}

// rule reports a component's verdict on one key (nil: the key is fine).
func (c *checker) rule(field string, err error) {
	if err != nil {
		c.fail(field, "%v", err)
	}
}

// xksRule is rule for the xks package's validators, whose errors carry the XKS error name: the
// operator gets the message only.
func (c *checker) xksRule(field string, err error) {
	var xe *xks.Error
	if errors.As(err, &xe) {
		err = errors.New(xe.Message)
	}
	c.rule(field, err)
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
