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
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
)

func serveCommand() command {
	return command{
		name:     "serve",
		synopsis: "--config FILE | --dev [flags]",
		summary:  "run from a configuration file, or (--dev) in front of two in-process emulated Cosmian servers",
		flagGroups: []flagGroup{{
			heading: "Flags with --dev only (two in-process emulated Cosmian servers; a configuration file says all this itself):",
			names:   devFlagNames,
		}},
		setup: func(fs *flag.FlagSet) runFunc {
			cfgPath := fs.String("config", "", "TOML configuration file")
			dev := fs.Bool("dev", false, "run in front of two in-process emulated Cosmian KMS servers (no configuration file)")
			var d devFlags
			d.register(fs)
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				switch {
				case *dev && *cfgPath != "":
					return usageErr("serve: --dev and --config are exclusive")
				case *dev:
					return serveDev(ctx, d, stdout, stderr)
				case *cfgPath == "":
					return usageErr("serve: --config FILE is required (or --dev)")
				}
				// The --dev flags would be silently ignored with a file: say so instead.
				var stray string
				fs.Visit(func(f *flag.Flag) {
					if stray == "" && d.owns(f.Name) {
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
	log, err := newLogger(stderr, f.Log.Level, f.Log.Format)
	if err != nil {
		return fmt.Errorf("%s: log: %w", path, err)
	}
	for _, w := range warnings {
		log.Warn("configuration", "warning", w)
	}
	ac, err := app.FromFile(ctx, f, "xksproxy "+version, log, nil)
	if err != nil {
		return f.Locate(err)
	}
	checkKMIP(ctx, ac, log)
	a, err := app.New(ac)
	if err != nil {
		return proxyConfigErr(filepath.Base(path), err)
	}
	go reloadOnHUP(ctx, path, f, a, log)
	log.Info("xksproxy starting", "version", version, "config", path, "listen", ac.Proxy.Listen)
	return a.Run(ctx)
}

// reloadOnHUP applies SIGHUP (systemctl reload): it re-reads the configuration file and applies
// the SigV4 credential sets of every prefix without dropping connections — the spec's rotation
// procedure (add the new set, update the key store in AWS, wait, remove the old set) is two edits
// and two SIGHUPs — updates xks_sigv4_credential_age_seconds, and re-reads the certificate files
// (tls.mode = "files"; a bad replacement is refused and the current certificate kept). Every
// other change is compared with the running configuration and logged key by key as needing a
// restart.
func reloadOnHUP(ctx context.Context, path string, running *config.File, a *app.App, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		reload(path, running, a, log)
	}
}

// credentialKey matches the keys a reload applies: a prefix's credential sets.
var credentialKey = regexp.MustCompile(`^prefix\[(\d+)\]\.credential`)

// reload is one SIGHUP. The certificate files are re-read even when the configuration file is
// refused: renewing a certificate must not depend on an unrelated edit. running is the
// configuration in effect; reload updates the credential sets it applied.
func reload(path string, running *config.File, a *app.App, log *slog.Logger) {
	log.Info("reload: SIGHUP received", "config", path)
	if f, warnings, err := config.Load(path); err != nil {
		log.Error("reload: configuration refused; keeping the current credentials", "err", err)
	} else {
		for _, w := range warnings {
			log.Warn("reload: configuration", "warning", w)
		}
		applied := map[string]bool{} // prefix paths whose credential sets are now f's
		for _, p := range f.Prefix {
			ids := make([]string, 0, len(p.Credential))
			ages := make([]certs.CredentialAge, 0, len(p.Credential))
			var noAge []string
			for _, c := range p.Credential {
				ids = append(ids, c.AccessKeyID)
				if c.Created.IsZero() {
					noAge = append(noAge, c.AccessKeyID)
					continue
				}
				ages = append(ages, certs.CredentialAge{AccessKeyID: c.AccessKeyID, Created: c.Created.Time})
			}
			if err := a.SetCredentials(p.Path, p.Credentials(), ages); err != nil {
				log.Error("reload: credentials refused", "prefix", p.Path, "err", err)
				continue
			}
			applied[p.Path] = true
			log.Info("reload: credentials applied", "prefix", p.Path, "access_key_ids", ids,
				"age_metric_sets", len(ages), "no_created_date", noAge)
		}
		changes := config.Changes(running, f)
		if len(changes) == 0 {
			log.Info("reload: configuration file unchanged")
		}
		for _, key := range changes {
			if m := credentialKey.FindStringSubmatch(key); m != nil {
				i, _ := strconv.Atoi(m[1])
				if i < len(f.Prefix) && applied[f.Prefix[i].Path] {
					log.Info("reload: applied", "key", key)
					continue
				}
			}
			log.Warn("reload: changed but not applied: restart to apply", "key", key)
		}
		for i := range running.Prefix {
			if i < len(f.Prefix) && f.Prefix[i].Path == running.Prefix[i].Path && applied[f.Prefix[i].Path] {
				running.Prefix[i].Credential = f.Prefix[i].Credential
			}
		}
	}
	switch err := a.ReloadTLS(); {
	case errors.Is(err, app.ErrNothingToReload):
		log.Info("reload: certificate not reloaded (not from files)")
	case err != nil:
		log.Error("reload: certificate files refused; still serving the previous certificate", "err", err)
	default:
		log.Info("reload: certificate files checked (reloaded if changed)")
	}
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
