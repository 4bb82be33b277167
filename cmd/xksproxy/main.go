// Command xksproxy is the AWS KMS external key store (XKS) endpoint in front of Cosmian KMS, with
// live zero-downtime migration between Cosmian servers.
//
//	xksproxy serve --config FILE     run the proxy from a TOML configuration file
//	xksproxy serve --dev             run the proxy in front of two in-process emulated Cosmian servers
//	xksproxy demo                    the whole migration story, unattended, with a report
//	xksproxy cutover plan|start|status|switch|rollback|finalize   control a running proxy
//	xksproxy aws-config              print the AWS "proxy configuration file" JSON for a prefix
//	xksproxy version
//
// This package only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set with -ldflags "-X main.version=…" by release builds.
var version = "0.1.0-dev"

const usage = `xksproxy — AWS KMS external key store proxy for Cosmian KMS, with live migration

Usage:
  xksproxy serve --config FILE        run from a configuration file
  xksproxy serve --dev [flags]        run in front of two in-process emulated Cosmian servers
  xksproxy demo [--keys N] [--rps R] [--json]
                                      live migration A→B under AWS-like load, then a report
  xksproxy cutover COMMAND [flags]    plan | start | status | switch | rollback | finalize
  xksproxy aws-config --config FILE [--prefix PATH] [--access-key-id ID]
                                      print the proxy configuration file JSON for AWS
  xksproxy version

Run "xksproxy COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the process exit code: 0 ok, 1 failure, 2 usage error. It returns when ctx is
// done for the long-running commands.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "cutover":
		err = cmdCutover(ctx, args[1:], stdout, stderr)
	case "aws-config":
		err = cmdAWSConfig(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "xksproxy", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "xksproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "xksproxy:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "xksproxy:", err)
		return 1
	}
}

var errUsage = errors.New("usage")

// parseFlags parses args and turns a flag error into a usage error (exit status 2); the flag
// package has already printed the message and the defaults.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// newLogger builds the process logger: JSON or text on stderr at the given level.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(defaultStr(level, "info")))); err != nil {
		return nil, usageErr("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch defaultStr(format, "text") {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, usageErr("log format %q: want json or text", format)
	}
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// repeated is a repeatable string flag.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }
