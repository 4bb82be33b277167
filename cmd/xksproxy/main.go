// Command xksproxy is the AWS KMS external key store (XKS) endpoint in front of Cosmian KMS, with
// live zero-downtime migration between Cosmian servers.
//
//	xksproxy serve --config FILE     run the proxy from a TOML configuration file
//	xksproxy serve --dev             run the proxy in front of two in-process emulated Cosmian servers
//	xksproxy validate --config FILE  check a configuration file as serve would, then exit
//	xksproxy demo                    the whole migration story, unattended, with a report
//	xksproxy cutover plan|start|status|switch|rollback|finalize|forget   control a running proxy
//	xksproxy aws-config              print the AWS "proxy configuration file" JSON for a prefix
//	xksproxy handoff check           check that a Cosmian server answers AWS directly before a handoff
//	xksproxy version
//
// demo and serve --dev run in xksproxy-dev (cmd/xksproxy-dev, devtool.go), so that this binary
// links none of the demo and dev tooling. This package only parses flags and wires packages
// together. Every command is a row of a table (commands, cutoverCommands): its own flag set and
// its run function, so `--help` lists only the flags that command reads. Asked-for help goes to
// stdout and exits 0; flags are written --name in help and messages.
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
	"time"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// version is set with -ldflags "-X main.version=…" by release builds.
var version = "0.1.0-dev"

// command is one row of a command table. setup registers the command's flags on fs and returns
// the function that runs it once the flags are parsed; a command with subs is a group.
type command struct {
	name     string
	synopsis string // after "xksproxy NAME", e.g. "--config FILE"
	summary  string
	setup    func(fs *flag.FlagSet) runFunc
	subs     []command
	// flagGroups are listed after the other flags, each under its heading.
	flagGroups []flagGroup
}

// runFunc runs a command after its flags are parsed.
type runFunc func(ctx context.Context, stdout, stderr io.Writer) error

// commands is the top-level table, in the order of the usage text.
func commands() []command {
	return []command{
		serveCommand(),
		validateCommand(),
		demoCommand(),
		{name: "cutover", synopsis: "COMMAND [flags]", summary: "control a migration on a running proxy", subs: cutoverCommands()},
		awsConfigCommand(),
		{name: "handoff", synopsis: "check [flags]", summary: "prepare handing the endpoint to a Cosmian server itself", subs: handoffCommands()},
		{name: "version", summary: "print the version", setup: func(fs *flag.FlagSet) runFunc {
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				fmt.Fprintln(stdout, "xksproxy", version)
				return nil
			}
		}},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the process exit code: 0 ok, 1 failure, 2 usage error. It returns when ctx is
// done for the long-running commands.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-v":
			args = []string{"version"}
		case "help", "-h", "--help":
			fmt.Fprint(stdout, usageText("xksproxy", "xksproxy — AWS KMS external key store proxy for Cosmian KMS, with live migration", commands()))
			return 0
		}
	}
	err := dispatch(ctx, "xksproxy", commands(), args, stdout, stderr)
	var exited exitStatus
	switch {
	case errors.As(err, &exited):
		return int(exited) // the dev tool's own status; it has said why
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		printErr(stderr, err)
		return 2
	default:
		printErr(stderr, err)
		return 1
	}
}

// printErr writes err to stderr, each line of it (a configuration's problems are one a line)
// after "xksproxy: ".
func printErr(stderr io.Writer, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintln(stderr, "xksproxy:", line)
	}
}

// dispatch finds args[0] in cmds, parses the rest with that command's own flag set, refuses
// stray arguments, and runs it.
func dispatch(ctx context.Context, path string, cmds []command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText(path, "", cmds))
		return usageErr("%sa command is required", who(path))
	}
	name := args[0]
	var cmd *command
	for i := range cmds {
		if cmds[i].name == name {
			cmd = &cmds[i]
		}
	}
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, usageText(path, "", cmds)) // asked for: stdout, so that | less shows it
		return flag.ErrHelp
	}
	if cmd == nil {
		fmt.Fprint(stderr, usageText(path, "", cmds))
		return usageErr("%sunknown command %q", who(path), name)
	}
	full := path + " " + cmd.name
	if cmd.subs != nil {
		return dispatch(ctx, full, cmd.subs, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet(full, flag.ContinueOnError)
	// The flag package would print its own usage (flags spelled -name) and errors to this
	// writer: they are written here instead.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	runCmd := cmd.setup(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, full, cmd, fs)
			return err
		}
		return usageErr("%s%s (see %s --help)", who(full), dashes(err.Error()), full)
	}
	if fs.NArg() > 0 {
		return usageErr("%sunexpected argument %q (flags go before it; see %s --help)", who(full), fs.Arg(0), full)
	}
	return runCmd(ctx, stdout, stderr)
}

// who is the command path for a message: "cutover status: " ("" at the top level, where the
// "xksproxy:" prefix already says it).
func who(path string) string {
	if p := strings.TrimPrefix(path, "xksproxy"); p != "" {
		return strings.TrimSpace(p) + ": "
	}
	return ""
}

// usageText lists a command table.
func usageText(path, title string, cmds []command) string {
	var b strings.Builder
	if title != "" {
		b.WriteString(title + "\n\n")
	}
	b.WriteString("Usage:\n")
	for _, c := range cmds {
		line := "  " + path + " " + c.name
		if c.synopsis != "" {
			line += " " + c.synopsis
		}
		if len(line) < 40 {
			fmt.Fprintf(&b, "%-40s%s\n", line, c.summary)
		} else {
			fmt.Fprintf(&b, "%s\n%-40s%s\n", line, "", c.summary)
		}
	}
	fmt.Fprintf(&b, "\nRun \"%s COMMAND --help\" for a command's flags.\n", path)
	return b.String()
}

var errUsage = cli.ErrUsage

func usageErr(format string, args ...any) error { return cli.UsageErr(format, args...) }

// newLogger builds the process logger: JSON or text on stderr at the given level.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	return cli.NewLogger(w, level, format)
}

// newLevelLogger is newLogger with its level in lv, which a reload sets again.
func newLevelLogger(w io.Writer, lv *slog.LevelVar, level, format string) (*slog.Logger, error) {
	return cli.NewLevelLogger(w, lv, level, format)
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// durationVar registers a non-negative duration flag.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	cli.DurationVar(fs, p, name, value, usage)
}
