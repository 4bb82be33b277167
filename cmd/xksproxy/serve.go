package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "TOML configuration file")
	dev := fs.Bool("dev", false, "run in front of two in-process emulated Cosmian KMS servers (no configuration file)")
	var d devFlags
	d.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("serve: unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *dev && *cfgPath != "":
		return usageErr("serve: --dev and --config are exclusive")
	case *dev:
		return serveDev(ctx, d, stdout, stderr)
	case *cfgPath == "":
		return usageErr("serve: --config FILE is required (or --dev)")
	}
	return serveConfig(ctx, *cfgPath, stderr)
}

func serveConfig(ctx context.Context, path string, stderr io.Writer) error {
	f, warnings, err := config.Load(path)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.Log.Level, f.Log.Format)
	if err != nil {
		return fmt.Errorf("%s: log: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn("configuration", "warning", w)
	}
	ac, err := app.FromFile(f, "xksproxy "+version, log, nil)
	if err != nil {
		return err
	}
	a, err := app.New(ac)
	if err != nil {
		return err
	}
	go reloadOnHUP(ctx, path, a, log)
	log.Info("xksproxy starting", "version", version, "config", path, "listen", ac.Proxy.Listen)
	return a.Run(ctx)
}

// reloadOnHUP re-reads the configuration file on SIGHUP and applies the SigV4 credential sets of
// every prefix without dropping connections: the spec's rotation procedure (add the new set,
// update the key store in AWS, wait, remove the old set) is two edits and two SIGHUPs.
func reloadOnHUP(ctx context.Context, path string, a *app.App, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		f, _, err := config.Load(path)
		if err != nil {
			log.Error("reload: configuration refused; keeping the current credentials", "err", err)
			continue
		}
		for _, p := range f.Prefix {
			if err := a.Proxy.SetCredentials(p.Path, p.Credentials()); err != nil {
				log.Error("reload: credentials refused", "prefix", p.Path, "err", err)
				continue
			}
			ids := make([]string, 0, len(p.Credential))
			for _, c := range p.Credential {
				ids = append(ids, c.AccessKeyID)
			}
			log.Info("reload: credentials applied", "prefix", p.Path, "access_key_ids", ids)
		}
	}
}
