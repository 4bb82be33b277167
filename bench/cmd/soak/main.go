// Command soak runs xksproxy under AWS-like signed load for a long time with faults injected
// (see bench/soak) and exits non-zero unless nothing was lost: no key lost or split, every
// recorded ciphertext re-decrypted through every replica, no failure outside the fault that
// explains it, no RSS or goroutine growth beyond what the load explains.
//
//	go run ./bench/cmd/soak --rate 1800 --duration 10m --json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/soak"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	var fail failed
	switch {
	case errors.As(err, &fail):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
}

// failed is a run that completed with a FAIL verdict (the report says why).
type failed struct{}

func (failed) Error() string { return "soak: FAIL" }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o soak.Options
	faults := fs.String("faults", soak.DefaultFaults, `fault schedule: kind[:length],... in order, spread over the run ("none" for none)`)
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	quiet := fs.Bool("quiet", false, "no progress lines on stderr")
	fs.Float64Var(&o.Rate, "rate", 1800, "requests per second over all replicas")
	fs.DurationVar(&o.Duration, "duration", 10*time.Minute, "how long the load runs")
	fs.IntVar(&o.Replicas, "replicas", 1, "proxy processes; more than 1: fleet mode over an etcd process (needs the etcd binary)")
	fs.DurationVar(&o.SampleEvery, "sample-every", 0, "RSS/goroutines/fds/p99 sampling interval (default 1m, at most duration/6)")
	fs.IntVar(&o.Keys, "keys", 50, "seeded keys taking traffic")
	fs.DurationVar(&o.Probation, "probation", 0, "migration probation before finalize (default 30s, compressed for short runs)")
	fs.DurationVar(&o.Grace, "grace", 0, "recovery allowed after a fault ends before failures are unexplained (default 3s)")
	fs.BoolVar(&o.HTTP2, "http2", false, "the load offers h2 and http/1.1 (default: HTTP/1.1 only)")
	fs.Float64Var(&o.AdversaryRate, "adversary-rate", 2, "adversarial callers' requests a second beside the load (CreateKeys for existing and raced ids, names like the proxy's own objects, its health-check keys); every key's access lists are checked at the end; negative: none")
	fs.StringVar(&o.Bin, "xksproxy", "", "xksproxy binary (default: built from this module)")
	fs.StringVar(&o.Dir, "dir", "", "keep configurations and proxy logs here (default: a temporary directory, removed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	f, err := soak.ParseFaults(*faults)
	if err != nil {
		return err
	}
	o.Faults = f
	if o.Faults == nil {
		o.Faults = []soak.FaultSpec{}
	}
	if !*quiet {
		o.Progress = stderr
	}
	// The first SIGINT/SIGTERM ends the load early and still reports; a second abandons the run.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	interrupt := make(chan struct{})
	o.Interrupt = interrupt
	go func() {
		<-sigs
		close(interrupt)
		fmt.Fprintln(stderr, "soak: ending the load early (signal again to abandon the run)")
		<-sigs
		cancel()
	}()
	// The emulators' HTTP servers log TLS handshakes the proxy abandons (its backend timeout
	// includes dialling); thousands of lines under a loaded machine drown the progress.
	log.SetOutput(io.Discard)
	rep, err := soak.Run(ctx, o)
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
	if !rep.Pass {
		return failed{}
	}
	return nil
}
