package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
)

// adminFlags are the flags every cutover command has: where the admin API is, its token, and
// the output form.
type adminFlags struct {
	admin, tokenFile, caFile, serverName string
	json                                 bool
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.admin, "admin", defaultStr(os.Getenv("XKSPROXY_ADMIN"), "http://127.0.0.1:9465"), "admin API base URL (or $XKSPROXY_ADMIN)")
	fs.StringVar(&a.tokenFile, "token-file", "", "file holding the admin token (or $XKSPROXY_ADMIN_TOKEN)")
	fs.StringVar(&a.caFile, "admin-ca", "", "PEM file of the CA that signed an https admin API's certificate (default: the system roots)")
	fs.StringVar(&a.serverName, "admin-server-name", os.Getenv("XKSPROXY_ADMIN_SERVER_NAME"),
		"`name` the https admin API's certificate must carry when --admin is an address it does not name, e.g. 127.0.0.1 inside a pod whose admin listener has the XKS certificate (or $XKSPROXY_ADMIN_SERVER_NAME)")
	fs.BoolVar(&a.json, "json", false, "print JSON instead of text")
}

// client builds the admin API client from the flags and the environment.
func (a *adminFlags) client() (*adminapi.Client, error) {
	token := os.Getenv("XKSPROXY_ADMIN_TOKEN")
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usageErr("cutover: an admin token is required (--token-file or $XKSPROXY_ADMIN_TOKEN)")
	}
	c := &adminapi.Client{BaseURL: a.admin, Token: token}
	if a.caFile == "" && a.serverName == "" {
		return c, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: a.serverName}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, fmt.Errorf("--admin-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageErr("--admin-ca: no PEM certificate in %s", a.caFile)
		}
	}
	c.HTTP = &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{TLSClientConfig: tc}}
	return c, nil
}

// print writes v as JSON with --json, else runs text.
func (a *adminFlags) print(w io.Writer, v any, text func()) error {
	if a.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text()
	return nil
}

// done reports a state-changing command: what it did, then the new state (the status JSON with
// --json).
func (a *adminFlags) done(w io.Writer, st *cutover.Status, did string) error {
	return a.print(w, st, func() {
		fmt.Fprintln(w, did)
		fmt.Fprintln(w)
		adminapi.RenderStatus(w, st)
	})
}

// adminCommand is a cutover command: the common admin flags, the command's own flags (own may
// be nil), and a body that gets the client.
func adminCommand(name, synopsis, summary string, own func(fs *flag.FlagSet), body func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error) command {
	return command{name: name, synopsis: synopsis, summary: summary, setup: func(fs *flag.FlagSet) runFunc {
		var a adminFlags
		a.register(fs)
		if own != nil {
			own(fs)
		}
		return func(ctx context.Context, stdout, stderr io.Writer) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return body(ctx, c, &a, stdout, stderr)
		}
	}}
}

// cutoverCommands is the `xksproxy cutover` table; each command talks to a running proxy's
// admin API.
func cutoverCommands() []command {
	var (
		shadow       time.Duration
		noShadow     bool
		noAuto       bool
		autoFinalize bool
		watch        time.Duration
		reason       string
		revoke       bool
		force        bool
		verbose      bool
		forgetFS     *flag.FlagSet
		source       string
		target       string
	)
	pairFlags := func(fs *flag.FlagSet) {
		fs.StringVar(&source, "source", "", "the backend to migrate from (default: [cutover] source; the backend that serves)")
		fs.StringVar(&target, "target", "", "the backend to migrate to (default: [cutover] target)")
	}
	return []command{
		adminCommand("plan", "[--source NAME --target NAME] [--verbose]", "count what a migration would copy, skip or refuse, and list the keys that need attention",
			func(fs *flag.FlagSet) {
				fs.BoolVar(&verbose, "verbose", false, "list every key, not only those that need attention")
				pairFlags(fs)
			},
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				p, err := c.Plan(ctx, cutover.PlanOptions{Source: source, Target: target})
				if err != nil {
					return err
				}
				return a.print(stdout, p, func() { adminapi.RenderPlan(stdout, p, verbose) })
			}),
		adminCommand("start", "[--source NAME --target NAME] [--shadow 5m | --no-shadow] [--no-auto-switch] [--auto-finalize]", "copy, verify, [shadow], switch, probation",
			func(fs *flag.FlagSet) {
				pairFlags(fs)
				durationVar(fs, &shadow, "shadow", 0, "mirror live Decrypts to the target for this `duration` before switching (default: [cutover] shadow_duration)")
				fs.BoolVar(&noShadow, "no-shadow", false, "switch without shadowing, whatever [cutover] shadow_duration says")
				fs.BoolVar(&noAuto, "no-auto-switch", false, "stop after verification; switch with 'cutover switch'")
				fs.BoolVar(&autoFinalize, "auto-finalize", false, "finalize automatically once probation passes")
			},
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				opts := cutover.StartOptions{Shadow: shadow, NoShadow: noShadow, AutoSwitch: !noAuto, AutoFinalize: autoFinalize,
					Source: source, Target: target}
				st, err := c.Start(ctx, opts)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("migration %s → %s started (shadow %s, auto-switch %v); follow it with: xksproxy cutover status --watch 2s",
					st.Source, st.Target, st.Options.Shadow, st.Options.AutoSwitch))
			}),
		adminCommand("status", "[--watch 2s]", "state, progress, per-key failures, fallbacks",
			func(fs *flag.FlagSet) {
				durationVar(fs, &watch, "watch", 0, "refresh every `interval` until the migration ends")
			},
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				var rate adminapi.Rate
				for first := true; ; first = false {
					s, err := c.Status(ctx)
					if err != nil {
						return err
					}
					outcome := adminapi.Outcome(s)
					err = a.print(stdout, s, func() {
						if !first {
							fmt.Fprintln(stdout)
						}
						adminapi.RenderStatus(stdout, s)
						if l := rate.Line(s, time.Now()); l != "" {
							fmt.Fprintln(stdout, l)
						}
						if watch > 0 && outcome != "" {
							fmt.Fprintln(stdout, outcome)
						}
					})
					if err != nil || watch <= 0 || outcome != "" {
						return err
					}
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(watch):
					}
				}
			}),
		adminCommand("switch", "[flags]", "switch after verification (when started with --no-auto-switch)", nil,
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				st, err := c.Switch(ctx)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("switched: %s serves, %s is the fallback during probation", st.Primary, st.Fallback))
			}),
		adminCommand("rollback", "--reason TEXT", "go back to the source backend (copies target-only keys back first)",
			func(fs *flag.FlagSet) {
				fs.StringVar(&reason, "reason", "", "why (recorded in the journal; required)")
			},
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				if reason == "" {
					return usageErr("cutover rollback: --reason is required")
				}
				st, err := c.Rollback(ctx, reason)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("rolled back: %s serves again (%s)", st.Primary, reason))
			}),
		adminCommand("finalize", "[--revoke-source-grants] [--force --reason TEXT]", "stop falling back to the source",
			func(fs *flag.FlagSet) {
				fs.BoolVar(&revoke, "revoke-source-grants", false, "revoke on the source the grants that were replicated")
				fs.BoolVar(&force, "force", false, "finalize although probation has not passed (needs --reason)")
				fs.StringVar(&reason, "reason", "", "why finalizing before probation passed (with --force; logged)")
			},
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				if force && strings.TrimSpace(reason) == "" {
					return usageErr("cutover finalize: --force needs --reason")
				}
				st, err := c.Finalize(ctx, cutover.FinalizeOptions{RevokeSourceGrants: revoke, Force: force, Reason: reason})
				if err != nil {
					return err
				}
				did := fmt.Sprintf("finalized: %s serves alone, no fallback to %s", st.Primary, st.Source)
				if revoke {
					did += "; the migrated keys' grants on " + st.Source + " are revoked"
				}
				return a.done(stdout, st, did)
			}),
		adminCommand("pause", "[flags]", "pause the migration's background work (copy, verification, backfill, rights sync) and its automatic steps", nil,
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				st, err := c.Pause(ctx)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("paused in %s: the background work waits for `xksproxy cutover resume`; switch, rollback and finalize still work", st.State))
			}),
		adminCommand("resume", "[flags]", "let the paused background work go on at the pace", nil,
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				st, err := c.Resume(ctx)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("resumed in %s", st.State))
			}),
		adminCommand("forget", "NAME", "fleet mode: stop waiting for a member whose lease expired (refused while it is alive)",
			func(fs *flag.FlagSet) { forgetFS = fs },
			func(ctx context.Context, c *adminapi.Client, a *adminFlags, stdout, stderr io.Writer) error {
				if forgetFS.NArg() != 1 {
					return usageErr("cutover forget: name exactly one member (see cutover status)")
				}
				name := forgetFS.Arg(0)
				st, err := c.Forget(ctx, name)
				if err != nil {
					return err
				}
				return a.done(stdout, st, fmt.Sprintf("forgotten: %s no longer holds back phase changes", name))
			}),
	}
}
