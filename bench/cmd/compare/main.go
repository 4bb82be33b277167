// Command compare measures the same AWS-KMS-like load against the Cosmian emulator directly,
// through nginx and through xksproxy, in one run on one machine, then runs the cutover demo.
// See bench/README.md. Run it through bench/compare.sh, which installs nginx when missing.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/compare"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o compare.Options
	asJSON := fs.Bool("json", false, "print a JSON array of {name, rps_max, cpu_us_per_req, p50_ms, p99_ms, rss_mb, …} on stdout (the table goes to stderr)")
	out := fs.String("out", "", "directory to write compare.json (machine, paths, checks, demo) and compare.txt into")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each measured run (two per path)")
	fs.Float64Var(&o.Rate, "rate", 1800, "fixed open-loop rate for p50/p99, requests/s")
	fs.IntVar(&o.Keys, "keys", 100, "keys seeded in the emulator and spread over by the client")
	fs.IntVar(&o.Workers, "workers", 32, "closed-loop concurrency (and connections) for rps_max")
	fs.IntVar(&o.Conns, "conns", 16, "keep-alive connections at the fixed rate")
	fs.StringVar(&o.PerfDir, "perf", "", "profiling only: perf record -g the middle process in each phase into this directory (perturbs the figures)")
	fs.BoolVar(&o.HTTP2, "http2", false, "the client offers HTTP/2 on every path (nginx and xksproxy take it; the emulator speaks HTTP/1.1)")
	fs.BoolVar(&o.SkipNginx, "skip-nginx", false, "debugging only: leave nginx out")
	fs.BoolVar(&o.SkipDemo, "skip-demo", false, "leave the cutover-under-load demo out")
	fs.IntVar(&o.DemoKeys, "demo-keys", 1000, "cutover demo: keys")
	fs.Float64Var(&o.DemoRPS, "demo-rps", 1800, "cutover demo: requests/s")
	fs.DurationVar(&o.DemoLimit, "demo-timeout", 5*time.Minute, "cutover demo: give up after")
	var variants []compare.Variant
	fs.Func("variant", "A/B mode (repeatable): measure only the xksproxy path for each `NAME[@BIN][:KEY=VALUE,...]` "+
		"(BIN: an xksproxy binary, default the one built here; KEY=VALUE: added to its environment), interleaved over --rounds", func(s string) error {
		v, err := compare.ParseVariant(s)
		if err == nil {
			variants = append(variants, v)
		}
		return err
	})
	benchfmt := fs.String("benchfmt", "", "A/B mode: also write every run in Go benchmark format to this file (for benchstat -col /variant)")
	fs.IntVar(&o.Rounds, "rounds", 0, "measure every path (or --variant) this many times, interleaved, and report the medians [1; 3 with --variant]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.Log = stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(variants) > 0 {
		if o.Rounds == 0 {
			o.Rounds = 3
		}
		ab, err := compare.RunAB(ctx, o, variants, o.Rounds)
		if err != nil {
			return err
		}
		human := stdout
		if *asJSON {
			human = stderr
		}
		fmt.Fprintln(human)
		if err := compare.WriteMachine(human, ab.Machine); err != nil {
			return err
		}
		fmt.Fprintln(human)
		if err := compare.WriteAB(human, ab, variants); err != nil {
			return err
		}
		if *benchfmt != "" {
			var b strings.Builder
			if err := compare.WriteBenchfmt(&b, ab); err != nil {
				return err
			}
			if err := os.WriteFile(*benchfmt, []byte(b.String()), 0o644); err != nil {
				return err
			}
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ab)
		}
		return nil
	}
	res, err := compare.Run(ctx, o)
	if err != nil {
		return err
	}
	return report(res, *asJSON, *out, stdout, stderr)
}

func report(res *compare.Outcome, asJSON bool, out string, stdout, stderr io.Writer) error {
	human := stdout
	if asJSON {
		human = stderr
	}
	fmt.Fprintln(human)
	if err := compare.WriteMachine(human, res.Machine); err != nil {
		return err
	}
	fmt.Fprintln(human)
	if len(res.Runs) > 0 {
		fmt.Fprintln(human, "Every run:")
		if err := compare.WriteTable(human, res.Runs); err != nil {
			return err
		}
		fmt.Fprintf(human, "\nMedians of %d rounds (peak RSS: the highest):\n", res.Paths[0].Rounds)
	}
	if err := compare.WriteTable(human, res.Paths); err != nil {
		return err
	}
	if err := compare.WriteProtocols(human, res.Paths); err != nil {
		return err
	}
	fmt.Fprintln(human, "\nTargets (reported, not asserted):")
	if err := compare.WriteChecks(human, res.Checks); err != nil {
		return err
	}
	if res.DemoNote != "" || res.Demo != nil {
		fmt.Fprintf(human, "\nCutover demo: %s\n", res.DemoNote)
		if res.Demo != nil {
			var v any
			if json.Unmarshal(res.Demo, &v) == nil {
				b, _ := json.MarshalIndent(v, "", "  ")
				fmt.Fprintf(human, "%s\n", b)
			}
		}
	}
	if out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "compare.json"), append(b, '\n'), 0o644); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(out, "compare.txt"))
		if err != nil {
			return err
		}
		_ = compare.WriteMachine(f, res.Machine)
		fmt.Fprintln(f)
		_ = compare.WriteTable(f, res.Paths)
		_ = compare.WriteProtocols(f, res.Paths)
		fmt.Fprintln(f)
		_ = compare.WriteChecks(f, res.Checks)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if asJSON {
		return compare.WriteJSON(stdout, res.Paths)
	}
	return nil
}
