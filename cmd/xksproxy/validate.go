package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/proxy"
)

func validateCommand() command {
	return command{
		name:     "validate",
		synopsis: "--config FILE",
		summary:  "check a configuration file as serve does before it listens (no port bound, nothing contacted), then exit",
		setup: func(fs *flag.FlagSet) runFunc {
			cfgPath := fs.String("config", "", "TOML configuration file (required)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				return validate(ctx, *cfgPath, stdout)
			}
		},
	}
}

// errInvalidConfig is validate's verdict on a file with problems (they are printed already).
var errInvalidConfig = errors.New("the configuration has problems")

// validate prints every problem of the file at path, one a line ("file:line: key: what is
// wrong"), and its warnings; it returns errInvalidConfig when there is a problem. A good file
// prints one line saying so, and the warnings if any.
func validate(ctx context.Context, path string, stdout io.Writer) error {
	if path == "" {
		return usageErr("validate: --config FILE is required")
	}
	f, warnings, err := config.Load(path)
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err == nil {
		err = preflight(ctx, f)
	}
	if err != nil {
		n := 0
		for line := range strings.SplitSeq(err.Error(), "\n") {
			fmt.Fprintln(stdout, line)
			n++
		}
		s := "s"
		if n == 1 {
			s = ""
		}
		return fmt.Errorf("validate: %s: %w: %d problem%s", path, errInvalidConfig, n, s)
	}
	note := ""
	if f.TLS.Mode == config.TLSACME {
		note = " (the ACME certificate is obtained when serve starts)"
	}
	if f.Fleet != nil {
		note += " (etcd is reached when serve starts)"
	}
	fmt.Fprintf(stdout, "%s: valid%s\n", path, note)
	return nil
}

// preflight makes the checks serve makes between reading the file and listening — the
// certificate files, the ckms client files, the proxy's rules (e.g. a prefix secret of 43 to 64
// characters), the migration and fleet settings — and leaves out what would reach another
// machine or change a file: no ACME order (mode "acme" is checked on a throwaway self-signed
// certificate for its domains), no etcd, no backend, and the cutover journal is not opened.
func preflight(ctx context.Context, f *config.File) error {
	name := filepath.Base(f.Path)
	if _, err := newLogger(io.Discard, f.Log.Level, f.Log.Format); err != nil {
		return fmt.Errorf("%s: log: %w", name, err)
	}
	g := *f
	if g.TLS.Mode == config.TLSACME {
		g.TLS = config.TLS{Mode: config.TLSSelfSigned, Hosts: f.TLS.Domains}
	}
	ac, err := app.FromFile(ctx, &g, "xksproxy "+version, nil, nil)
	if err != nil {
		return f.Locate(err)
	}
	if _, err := proxy.New(ac.Proxy); err != nil {
		return proxyConfigErr(name, err)
	}
	if ac.Cutover != nil {
		cc := *ac.Cutover
		if err := cc.CheckAndSetDefaults(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if ac.Fleet != nil {
		fc := *ac.Fleet
		if err := fc.CheckAndSetDefaults(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// proxyConfigErr names the file in the proxy's verdict on the configuration it was given (the
// rules the proxy owns, e.g. a prefix secret's length), as serve and validate print it.
func proxyConfigErr(name string, err error) error {
	if errors.Is(err, proxy.ErrConfig) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return err
}
