// Package cli is what the two commands share: xksproxy, the product binary, and xksproxy-dev,
// the tool it runs for `xksproxy demo` and `xksproxy serve --dev`. It holds the flags of those
// two commands (xksproxy parses and checks them, so that help and usage errors need no tool;
// xksproxy-dev parses the same ones), the flag types, the logger and the AWS proxy
// configuration file. It imports nothing of the tooling (emulator, load generator, embedded
// etcd): the product binary links none of it.
package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// DevToolName is the executable that runs `demo` and `serve --dev`.
const DevToolName = "xksproxy-dev"

// ErrUsage marks an error in how a command was called (exit status 2).
var ErrUsage = errors.New("usage")

// UsageErr is an ErrUsage with a message.
func UsageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// NewLogger builds a process logger: JSON or text at the given level.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	return NewLevelLogger(w, new(slog.LevelVar), level, format)
}

// NewLevelLogger is NewLogger with its level in lv, which a reload sets again.
func NewLevelLogger(w io.Writer, lv *slog.LevelVar, level, format string) (*slog.Logger, error) {
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, UsageErr("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, UsageErr("log format %q: want json or text", format)
	}
}

// Repeated is a repeatable string flag.
type Repeated []string

func (r *Repeated) String() string     { return strings.Join(*r, ",") }
func (r *Repeated) Set(v string) error { *r = append(*r, v); return nil }

// duration is a time.Duration flag that refuses a negative value: every duration flag here is a
// length of time, and "-5s" is a mistake to report, not a value to run with.
type duration struct{ d *time.Duration }

// DurationVar registers a non-negative duration flag.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(duration{p}, name, usage)
}

func (v duration) String() string {
	if v.d == nil {
		return "0s"
	}
	return v.d.String()
}

func (v duration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (e.g. 2s, 5m)")
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	*v.d = d
	return nil
}

// Args turns the flags set on fs back into arguments ("--name=value", one per value of a
// Repeated flag), for xksproxy to hand the flags it checked to xksproxy-dev.
func Args(fs *flag.FlagSet) []string {
	var out []string
	fs.Visit(func(f *flag.Flag) {
		if r, ok := f.Value.(*Repeated); ok {
			for _, v := range *r {
				out = append(out, "--"+f.Name+"="+v)
			}
			return
		}
		out = append(out, "--"+f.Name+"="+f.Value.String())
	})
	return out
}

// ProxyConfigFile is the JSON file the AWS KMS console accepts when creating or updating an
// external key store ("proxy configuration file").
type ProxyConfigFile struct {
	XksProxyURIPath                  string          `json:"XksProxyUriPath"`
	XksProxyAuthenticationCredential AWSCredentialJS `json:"XksProxyAuthenticationCredential"`
}

// AWSCredentialJS is the credential part of ProxyConfigFile.
type AWSCredentialJS struct {
	AccessKeyID        string `json:"AccessKeyId"`
	RawSecretAccessKey string `json:"RawSecretAccessKey"`
}

// WriteProxyConfig writes the proxy configuration file of one prefix and credential.
func WriteProxyConfig(w io.Writer, prefix, akid, secret string) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ProxyConfigFile{
		XksProxyURIPath:                  prefix + xks.APIPathSuffix,
		XksProxyAuthenticationCredential: AWSCredentialJS{AccessKeyID: akid, RawSecretAccessKey: secret},
	})
}
