package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/handoff"
	"github.com/xksproxy/xksproxy/proxy"
)

func handoffCommands() []command {
	return []command{{
		name:     "check",
		synopsis: "--config FILE --backend NAME [--prefix PATH] [--principal ARN] [--json]",
		summary:  "check that a Cosmian server answers AWS directly, as the proxy does today (before moving the endpoint to it)",
		setup: func(fs *flag.FlagSet) runFunc {
			cfgPath := fs.String("config", "", "the proxy's TOML configuration file (required)")
			backend := fs.String("backend", "", "the [[backend]] AWS is to call directly (required)")
			prefix := fs.String("prefix", "", "the [[prefix]] whose URI path and credentials AWS uses (default: the first)")
			principal := fs.String("principal", handoff.DefaultPrincipal, "awsPrincipalArn to send: on Cosmian 5.26 a key answers only to a principal it grants")
			asJSON := fs.Bool("json", false, "print the report as JSON")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				return handoffCheck(ctx, *cfgPath, *backend, *prefix, *principal, *asJSON, stdout)
			}
		},
	}}
}

func handoffCheck(ctx context.Context, path, name, prefix, principal string, asJSON bool, stdout io.Writer) error {
	switch {
	case path == "":
		return usageErr("handoff check: --config FILE is required")
	case name == "":
		return usageErr("handoff check: --backend NAME is required")
	}
	f, _, err := config.Load(path)
	if err != nil {
		return err
	}
	var p *config.Prefix
	for i := range f.Prefix {
		if prefix == "" || f.Prefix[i].Path == prefix {
			p = &f.Prefix[i]
			break
		}
	}
	if p == nil {
		return fmt.Errorf("%s: no [[prefix]] with path %q", path, prefix)
	}
	tag := f.Cutover.Tag
	if tag == "" {
		tag = cosmian.XKSTag
	}
	var skip []string
	for _, b := range f.Backend {
		skip = append(skip, proxy.HealthKeyID(proxy.HealthConfig{TestKeyID: f.Health.TestKeyID}, proxy.BackendConfig{Name: b.Name, Credential: b.SigV4()}))
	}
	cfg := handoff.Config{Backend: name, Path: p.Path, Region: p.Region, Service: p.Service,
		Credentials: p.Credentials(), Principal: principal, Elsewhere: map[string][]string{}}
	found := false
	lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i, b := range f.Backend {
		if b.CKMSConfig == "" {
			if b.Name == name {
				return fmt.Errorf("%s: backend[%d] %q has no ckms_config: its keys cannot be listed as their owner", path, i, name)
			}
			continue
		}
		ck, err := cosmian.LoadCKMSConfig(b.CKMSConfig)
		if err != nil {
			return fmt.Errorf("%s: backend[%d].ckms_config: %w", path, i, err)
		}
		cc, err := ck.ClientConfig()
		if err != nil {
			return fmt.Errorf("%s: backend[%d].ckms_config: %w", path, i, err)
		}
		k, err := cosmian.NewClient(cc)
		if err != nil {
			return fmt.Errorf("%s: backend[%d].ckms_config: %w", path, i, err)
		}
		ids, err := handoff.ListKeys(lctx, k, tag, skip)
		if err != nil {
			return fmt.Errorf("listing the keys tagged %q on %s (%s): %w", tag, b.Name, b.CKMSConfig, err)
		}
		if b.Name != name {
			cfg.Elsewhere[b.Name] = ids
			continue
		}
		found = true
		cfg.Keys, cfg.XKSURL = ids, b.XKSURL
		if cfg.TLS, err = ck.TLSConfig(); err != nil {
			return fmt.Errorf("%s: backend[%d].ckms_config: %w", path, i, err)
		}
	}
	if !found {
		return fmt.Errorf("%s: no [[backend]] named %q", path, name)
	}
	rep, err := handoff.Check(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		writeHandoff(stdout, rep)
	}
	if !rep.Ready {
		return fmt.Errorf("handoff check: %s is not ready for AWS to call it directly (the steps above say why)", name)
	}
	return nil
}

func writeHandoff(w io.Writer, r *handoff.Report) {
	verdict := "READY"
	if !r.Ready {
		verdict = "NOT READY"
	}
	fmt.Fprintf(w, "handoff to %s: %s\n", r.Backend, verdict)
	fmt.Fprintf(w, "  URI path     AWS uses %s, %s answers at %s\n", r.Path, r.Backend, r.ServerPath)
	fmt.Fprintf(w, "  credentials  accepted %v, refused %v\n", r.Accepted, r.Refused)
	fmt.Fprintf(w, "  health       %s\n", r.Health)
	fmt.Fprintf(w, "  keys         %d checked, %d unknown, %d failed, %d held elsewhere only\n", r.Checked, len(r.Missing), len(r.Failed), len(r.NotMigrated))
	for i, s := range r.Steps {
		fmt.Fprintf(w, "  %d. %s\n", i+1, s)
	}
}
