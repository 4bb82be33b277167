package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"time"

	"github.com/xksproxy/xksproxy/internal/demo"
)

func demoCommand() command {
	return command{
		name:     "demo",
		synopsis: "[--replicas N] [--keys N] [--rps R] [--json]",
		summary:  "live migration A→B under AWS-like load, then a report",
		setup: func(fs *flag.FlagSet) runFunc {
			var o demo.Options
			fs.IntVar(&o.Keys, "keys", 100, "keys on backend A")
			fs.IntVar(&o.Replicas, "replicas", 1, "proxies behind one load balancer; above 1 they form a fleet over an embedded etcd")
			fs.Float64Var(&o.RPS, "rps", 300, "AWS-like requests per second throughout")
			durationVar(fs, &o.Warmup, "warmup", 3*time.Second, "`duration` of traffic before the migration starts")
			durationVar(fs, &o.Shadow, "shadow", 2*time.Second, "mirror live Decrypts to B for this `duration` before switching")
			noShadow := fs.Bool("no-shadow", false, "switch without mirroring Decrypts to B first")
			durationVar(fs, &o.Probation, "probation", 5*time.Second, "watch B for this `duration` after the switch before finalizing")
			durationVar(fs, &o.Tail, "tail", 2*time.Second, "`duration` of traffic after finalizing")
			asJSON := fs.Bool("json", false, "print one JSON object instead of the summary")
			logLevel := fs.String("log-level", "error", "log level for the components (logs go to stderr)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				if *noShadow {
					o.Shadow = -1 // demo.Options: negative is no shadowing
				}
				return runDemo(ctx, o, *asJSON, *logLevel, stdout, stderr)
			}
		},
	}
}

func runDemo(ctx context.Context, o demo.Options, asJSON bool, logLevel string, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, logLevel, "text")
	if err != nil {
		return err
	}
	o.Logger = log
	if !asJSON {
		o.Progress = stdout
	}
	rep, err := demo.Run(ctx, o)
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
		rep.WriteText(stdout)
	}
	if !rep.OK() {
		return errors.New("demo: the migration did not meet its bar (see the report)")
	}
	return nil
}
