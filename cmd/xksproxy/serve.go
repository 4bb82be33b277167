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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/internal/cli"
	"github.com/xksproxy/xksproxy/upgrade"
)

func serveCommand() command {
	return command{
		name:     "serve",
		synopsis: "--config FILE | --dev [flags]",
		summary:  "run from a configuration file, or (--dev) in front of two in-process emulated Cosmian servers",
		flagGroups: []flagGroup{{
			heading: "Flags with --dev only (two in-process emulated Cosmian servers; a configuration file says all this itself):",
			names:   cli.DevFlagNames,
		}},
		setup: func(fs *flag.FlagSet) runFunc {
			cfgPath := fs.String("config", "", "TOML configuration file")
			dev := fs.Bool("dev", false, "run in front of two in-process emulated Cosmian KMS servers (no configuration file)")
			var d cli.DevFlags
			d.Register(fs)
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				switch {
				case *dev && *cfgPath != "":
					return usageErr("serve: --dev and --config are exclusive")
				case *dev:
					return serveDev(ctx, fs, &d, stdout, stderr)
				case *cfgPath == "":
					return usageErr("serve: --config FILE is required (or --dev)")
				}
				// The --dev flags would be silently ignored with a file: say so instead.
				var stray string
				fs.Visit(func(f *flag.Flag) {
					if stray == "" && d.Owns(f.Name) {
						stray = f.Name
					}
				})
				if stray != "" {
					return usageErr("serve: --%s is only used with --dev (the configuration file says it)", stray)
				}
				return serveConfig(ctx, *cfgPath, stderr)
			}
		},
	}
}

func serveConfig(ctx context.Context, path string, stderr io.Writer) error {
	f, warnings, err := config.Load(path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log, err := newLevelLogger(stderr, level, f.Log.Level, f.Log.Format)
	if err != nil {
		return fmt.Errorf("%s: log: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn("configuration", "warning", w)
	}
	up, err := upgrade.New(upgrade.Config{Logger: log})
	if err != nil {
		return err
	}
	defer up.Stop()
	// The sockets outlive configurations (a reload keeps them) and processes (an upgrade
	// passes them on); those of xksproxy.socket are found by their address.
	sockets := app.NewSockets(up.Listen)
	defer sockets.Close()
	live, err := app.NewLive(ctx, app.LiveConfig{
		Path: path, Version: version, Logger: log, Level: level, Sockets: sockets, Acquire: up.Acquire,
		Setup: func(ctx context.Context, f *config.File) (app.Config, error) {
			ac, err := app.FromFile(ctx, f, "xksproxy "+version, log, nil)
			if err != nil {
				return app.Config{}, f.Locate(err)
			}
			checkKMIP(ctx, ac, log)
			return ac, nil
		},
	}, f)
	if err != nil {
		return proxyConfigErr(filepath.Base(path), err)
	}
	// The process stops on SIGTERM, or once the process that replaces it serves: it stops
	// accepting first (the sockets live on there, or in systemd), then drains.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-up.Exit():
			log.Info("upgrade: the new process serves; draining")
		case <-runCtx.Done():
		}
		_ = sockets.Close()
		stop()
	}()
	go onSignals(runCtx, live, up, log)
	ready := func() {
		if err := up.Ready(live.NoteCreated); err != nil {
			log.Error("readiness not reported", "err", err)
		}
		// The controller runs once no other process serves: a route it moves is then the one
		// every connection sees.
		go func() {
			select {
			case <-up.ParentGone():
				live.StartController()
			case <-runCtx.Done():
			}
		}()
	}
	log.Info("xksproxy starting", "version", version, "config", path, "listen", f.Server.Listen, "pid", os.Getpid(), "upgraded", up.HasParent())
	return proxyConfigErr(filepath.Base(path), live.Run(runCtx, ready))
}

// onSignals serves SIGHUP (systemctl reload: read the file again and apply it) and SIGUSR2
// (replace the binary: start the one at the same path on the same sockets, then drain).
func onSignals(ctx context.Context, live *app.Live, up *upgrade.Upgrader, log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sig:
			if s == syscall.SIGUSR2 {
				go func() {
					if err := up.Upgrade(live); err != nil {
						log.Error("upgrade failed; this process goes on serving", "err", err)
					}
				}()
				continue
			}
			up.Reloading()
			up.Reloaded(reload(ctx, live, log))
		}
	}
}

// reload is one SIGHUP: the file is read again and applied (app.Live.Reload), and the
// certificate files are read again even when the file is refused: renewing a certificate must
// not depend on an unrelated edit. It returns a one-line status for systemd.
func reload(ctx context.Context, live *app.Live, log *slog.Logger) string {
	log.Info("reload: SIGHUP received")
	status := "reload applied"
	notApplied, err := live.Reload(ctx)
	switch {
	case errors.Is(err, app.ErrReloadRefused):
		status = "reload refused; the previous configuration serves"
		log.Error("reload: refused; the previous configuration serves", "problems", strings.Count(err.Error(), "\n"))
		for _, line := range strings.Split(err.Error(), "\n")[1:] {
			log.Error("reload: refused", "problem", line)
		}
	case err != nil:
		status = "reload failed; the previous configuration serves"
		log.Error("reload: failed; the previous configuration serves", "err", err)
	default:
		log.Info("reload: applied")
		for _, k := range notApplied {
			log.Warn("reload: changed but not applied: a binary upgrade (SIGUSR2) or a restart applies it (the listening sockets and the log format stay)", "key", k)
		}
	}
	switch err := live.ReloadTLS(); {
	case errors.Is(err, app.ErrNothingToReload):
	case err != nil:
		log.Error("reload: certificate files refused; still serving the previous certificate", "err", err)
	default:
		log.Info("reload: certificate files checked (reloaded if changed)")
	}
	return status
}

// checkKMIP says at start-up, for every backend with a ckms_config, whether its KMIP side works:
// the server answers, the file's credential authenticates, and as whom. A broken one is logged as
// an error naming the file and its server_url: serving XKS does not need it, migrating does.
func checkKMIP(ctx context.Context, ac app.Config, log *slog.Logger) {
	type checker interface {
		Check(ctx context.Context) (cosmian.Identity, error)
	}
	var wg sync.WaitGroup
	for name, r := range ac.Proxy.KeyInfo.Readers {
		c, ok := r.(checker)
		if !ok {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			id, err := c.Check(cctx)
			if err != nil {
				log.Error("backend KMIP access (ckms_config) does not work: migrations cannot run until it does", "backend", name, "err", err)
				return
			}
			log.Info("backend KMIP access", "backend", name, "as", id.User, "cosmian", id.Version)
		})
	}
	wg.Wait()
}
