// Command xksproxy-dev runs the demo and dev mode of xksproxy: `xksproxy demo` and
// `xksproxy serve --dev` check their flags and then run this tool with them
// (`xksproxy-dev demo [flags]`, `xksproxy-dev serve --dev [flags]`). It links what the product
// binary does not: the Cosmian emulator, the load generator and an embedded etcd server.
//
// xksproxy finds it next to its own executable, or, run from this module's source tree (as
// `go run ./cmd/xksproxy demo` is), builds it with `go build` into the user's cache directory.
// The flags are internal/cli's, shared with xksproxy; `xksproxy demo --help` and
// `xksproxy serve --help` document them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// version is set with -ldflags "-X main.version=…" like xksproxy's.
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `Usage:
  xksproxy-dev demo [flags]         (see xksproxy demo --help)
  xksproxy-dev serve --dev [flags]  (see xksproxy serve --help)
`

// run returns the exit code: 0 ok, 1 failure, 2 usage error, as xksproxy's.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, cli.ErrUsage):
		printErr(stderr, err)
		return 2
	default:
		printErr(stderr, err)
		return 1
	}
}

// printErr writes err as xksproxy does: the caller typed an xksproxy command.
func printErr(stderr io.Writer, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintln(stderr, "xksproxy:", line)
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageErr("a command is required\n%s", usage)
	}
	fs := flag.NewFlagSet("xksproxy "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	parse := func() error {
		if err := fs.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return cli.UsageErr("%s: %v", args[0], err)
		}
		if fs.NArg() > 0 {
			return cli.UsageErr("%s: unexpected argument %q", args[0], fs.Arg(0))
		}
		return nil
	}
	switch args[0] {
	case "demo":
		var d cli.DemoFlags
		d.Register(fs)
		if err := parse(); err != nil {
			return err
		}
		return runDemo(ctx, d, stdout, stderr)
	case "serve":
		dev := fs.Bool("dev", false, "required")
		var d cli.DevFlags
		d.Register(fs)
		if err := parse(); err != nil {
			return err
		}
		if !*dev {
			return cli.UsageErr("serve: only serve --dev runs here; xksproxy serve --config runs the product")
		}
		return serveDev(ctx, d, stdout, stderr)
	case "-h", "--help", "help":
		return flag.ErrHelp
	}
	return cli.UsageErr("unknown command %q\n%s", args[0], usage)
}
