package main

import (
	"context"
	"flag"
	"io"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// demoCommand parses and checks the demo's flags here, so that its help and usage errors need
// no tool, then runs the demo in xksproxy-dev (devtool.go), which links what it needs.
func demoCommand() command {
	return command{
		name:     "demo",
		synopsis: "[--replicas N] [--keys N] [--rps R] [--json]",
		summary:  "live migration A→B under AWS-like load, then a report",
		setup: func(fs *flag.FlagSet) runFunc {
			var d cli.DemoFlags
			d.Register(fs)
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				if err := d.Check(); err != nil {
					return err
				}
				return runDevTool(ctx, append([]string{"demo"}, cli.Args(fs)...), stdout, stderr)
			}
		},
	}
}
