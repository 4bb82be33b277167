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

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demo.Options
	fs.IntVar(&o.Keys, "keys", 100, "keys on backend A")
	fs.Float64Var(&o.RPS, "rps", 300, "AWS-like requests per second throughout")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "traffic before the migration starts")
	fs.DurationVar(&o.Shadow, "shadow", 2*time.Second, "mirror live Decrypts to B this long before switching (negative: no shadowing)")
	fs.DurationVar(&o.Probation, "probation", 5*time.Second, "watch B after the switch before finalizing")
	fs.DurationVar(&o.Tail, "tail", 2*time.Second, "traffic after finalizing")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the summary")
	logLevel := fs.String("log-level", "error", "log level for the components (logs go to stderr)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("demo: unexpected argument %q", fs.Arg(0))
	}
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	o.Logger = log
	if !*asJSON {
		o.Progress = stdout
	}
	rep, err := demo.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
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
