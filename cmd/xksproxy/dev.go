package main

import (
	"context"
	"flag"
	"io"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// serveDev runs `serve --dev` in xksproxy-dev (devtool.go) once its flags are checked here.
// fs holds exactly the --dev flags and --dev itself: serve refuses --config beside --dev.
func serveDev(ctx context.Context, fs *flag.FlagSet, d *cli.DevFlags, stdout, stderr io.Writer) error {
	if err := d.Check(); err != nil {
		return err
	}
	return runDevTool(ctx, append([]string{"serve"}, cli.Args(fs)...), stdout, stderr)
}
