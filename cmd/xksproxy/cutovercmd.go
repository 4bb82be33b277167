package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
)

const cutoverUsage = `Usage: xksproxy cutover COMMAND [flags]

Commands (against a running proxy's admin API):
  plan                       list what a migration would copy, skip or refuse
  start [--shadow 5m] [--no-auto-switch] [--auto-finalize]
                             copy, verify, [shadow], switch, probation
  status [--watch 2s]        state, progress, per-key failures, fallbacks
  switch                     switch after verification (when started with --no-auto-switch)
  rollback --reason TEXT     go back to the source backend (copies target-only keys back first)
  finalize [--revoke-source-grants]
                             stop falling back to the source

Common flags:
  --admin URL                admin API base URL (default http://127.0.0.1:9465, or $XKSPROXY_ADMIN)
  --token-file FILE          admin token file (or $XKSPROXY_ADMIN_TOKEN)
  --json                     print JSON instead of text
`

func cmdCutover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, cutoverUsage)
		if len(args) == 0 {
			return usageErr("cutover: a command is required")
		}
		return nil
	}
	sub := args[0]
	switch sub {
	case "plan", "start", "status", "switch", "rollback", "finalize":
	default:
		fmt.Fprint(stderr, cutoverUsage)
		return usageErr("cutover: unknown command %q", sub)
	}
	fs := flag.NewFlagSet("cutover "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", defaultStr(os.Getenv("XKSPROXY_ADMIN"), "http://127.0.0.1:9465"), "admin API base URL")
	tokenFile := fs.String("token-file", "", "file holding the admin token")
	asJSON := fs.Bool("json", false, "print JSON")
	shadow := fs.Duration("shadow", 0, "start: mirror live Decrypts to the target for this long before switching")
	noAuto := fs.Bool("no-auto-switch", false, "start: stop after verification; switch with 'cutover switch'")
	autoFinalize := fs.Bool("auto-finalize", false, "start: finalize automatically once probation passes")
	reason := fs.String("reason", "", "rollback: why (recorded in the journal)")
	revoke := fs.Bool("revoke-source-grants", false, "finalize: revoke on the source the grants that were replicated")
	watch := fs.Duration("watch", 0, "status: refresh at this interval until the migration ends")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	token := os.Getenv("XKSPROXY_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return usageErr("cutover: an admin token is required (--token-file or $XKSPROXY_ADMIN_TOKEN)")
	}
	c := &adminapi.Client{BaseURL: *admin, Token: token}
	print := func(v any, text func()) error {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		text()
		return nil
	}
	switch sub {
	case "plan":
		p, err := c.Plan(ctx)
		if err != nil {
			return err
		}
		return print(p, func() {
			fmt.Fprintf(stdout, "plan %s → %s: %d keys\n", p.Source, p.Target, len(p.Keys))
			for action, n := range p.Counts {
				fmt.Fprintf(stdout, "  %-10s %d\n", action, n)
			}
			for _, k := range p.Keys {
				if k.Reason != "" {
					fmt.Fprintf(stdout, "  %-10s %s: %s\n", k.Action, k.KeyID, k.Reason)
				}
			}
		})
	case "start":
		opts := cutover.StartOptions{Shadow: *shadow, AutoSwitch: !*noAuto, AutoFinalize: *autoFinalize}
		if err := c.Start(ctx, opts); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "migration started; follow it with: xksproxy cutover status --watch 2s")
		return nil
	case "status":
		for {
			s, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if err := print(s, func() { adminapi.RenderStatus(stdout, s) }); err != nil {
				return err
			}
			if *watch <= 0 || !s.Running {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*watch):
			}
		}
	case "switch":
		return c.Switch(ctx)
	case "rollback":
		if *reason == "" {
			return usageErr("cutover rollback: --reason is required")
		}
		return c.Rollback(ctx, *reason)
	case "finalize":
		return c.Finalize(ctx, cutover.FinalizeOptions{RevokeSourceGrants: *revoke})
	default:
		fmt.Fprint(stderr, cutoverUsage)
		return usageErr("cutover: unknown command %q", sub)
	}
}
