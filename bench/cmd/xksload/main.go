// Command xksload sends AWS-KMS-like, SigV4-signed traffic to an XKS proxy and reports
// latency percentiles and errors. Open loop with --rate, closed loop (max throughput) without.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "xksload:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("xksload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        loadgen.Config
		secretFile string
		insecure   bool
		caFile     string
		keys       string
		mix        string
		sizes      string
		principals string
		asJSON     bool
		verbose    bool
		redecrypt  bool
		noAAD      bool
	)
	fs.StringVar(&cfg.Endpoint, "endpoint", "", "XKS proxy endpoint, https://host[:port]")
	fs.StringVar(&cfg.Prefix, "prefix", "", "URI path prefix before /kms/xks/v1, e.g. /aws")
	fs.StringVar(&cfg.Region, "region", "us-east-1", "SigV4 region")
	fs.StringVar(&cfg.Service, "service", "", "SigV4 service (default kms-xks-proxy)")
	fs.StringVar(&cfg.Credential.AccessKeyID, "access-key-id", "", "SigV4 access key id")
	fs.StringVar(&cfg.Credential.Secret, "secret-access-key", "", "SigV4 secret (prefer --secret-file or $XKS_SECRET_ACCESS_KEY)")
	fs.StringVar(&secretFile, "secret-file", "", "file holding the SigV4 secret")
	fs.BoolVar(&insecure, "insecure", false, "skip TLS certificate verification")
	fs.StringVar(&caFile, "ca-file", "", "PEM file of CA certificates to trust")
	fs.IntVar(&cfg.Conns, "conns", loadgen.DefaultConns, "keep-alive connections, all opened and used in turn (behind a load balancer, each may reach another replica)")
	fs.BoolVar(&cfg.HTTP2, "http2", false, "use HTTP/2")
	fs.StringVar(&keys, "keys", "", "comma-separated external key ids")
	fs.StringVar(&mix, "mix", "", "operation weights, e.g. encrypt=0.45,decrypt=0.45,metadata=0.09,createkey=0.01")
	fs.StringVar(&sizes, "sizes", "", "plaintext sizes, e.g. 32:0.95,4300:0.05")
	fs.BoolVar(&noAAD, "no-aad", false, "send no additionalAuthenticatedData")
	fs.BoolVar(&cfg.CDIV, "cdiv", false, "ask for and verify ciphertextDataIntegrityValue")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop requests/s (0: closed loop with --workers)")
	fs.IntVar(&cfg.Workers, "workers", loadgen.DefaultWorkers, "closed-loop concurrency, or open-loop max outstanding")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "run time (0: until interrupted)")
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, "per-request timeout")
	fs.StringVar(&principals, "principals", "", "comma-separated awsPrincipalArn values to rotate through")
	fs.StringVar(&cfg.CreateKeyPrefix, "create-key-prefix", "", "id pattern with one %d for the CreateKey share (keys must exist in the key manager)")
	fs.BoolVar(&redecrypt, "redecrypt", false, "record every Encrypt and re-decrypt all of them after the run")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&verbose, "v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.NoAAD = noAAD
	cfg.Record = redecrypt
	if cfg.Credential.Secret == "" {
		cfg.Credential.Secret = os.Getenv("XKS_SECRET_ACCESS_KEY")
	}
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return fmt.Errorf("secret file: %w", err)
		}
		cfg.Credential.Secret = strings.TrimSpace(string(b))
	}
	cfg.Keys = splitList(keys)
	cfg.Principals = splitList(principals)
	if mix != "" {
		m, err := loadgen.ParseMix(mix)
		if err != nil {
			return err
		}
		cfg.Mix = m
	}
	if sizes != "" {
		s, err := loadgen.ParseSizes(sizes)
		if err != nil {
			return err
		}
		cfg.Sizes = s
	}
	tc := &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // explicit flag for test endpoints
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("ca file: no PEM certificates")
		}
		tc.RootCAs = pool
	}
	cfg.TLS = tc
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	r, err := loadgen.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if verbose {
		go progress(ctx, r, stderr)
	}
	rep, err := r.Run(ctx)
	if err != nil {
		return err
	}
	var re *redecryptResult
	if redecrypt {
		items := r.Recorded()
		ok, failed, failures, err := r.Redecrypt(context.Background(), items)
		re = &redecryptResult{OK: ok, Failed: failed, Failures: failures}
		if err != nil {
			return err
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*loadgen.Report
			Redecrypt *redecryptResult `json:"redecrypt,omitempty"`
		}{rep, re})
	}
	printReport(stdout, rep, re)
	return nil
}

type redecryptResult struct {
	OK       int      `json:"ok"`
	Failed   int      `json:"failed"`
	Failures []string `json:"failures,omitempty"`
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func progress(ctx context.Context, r *loadgen.Runner, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s := r.Snapshot()
			fmt.Fprintf(w, "total=%d failed=%d p99=%v rate=%.0f/s\n", s.Total, s.Failed, s.P99, s.Throughput)
		}
	}
}

func printReport(w io.Writer, r *loadgen.Report, re *redecryptResult) {
	fmt.Fprintf(w, "requests   %d  ok %d  failed %d  over 250ms %d\n", r.Total, r.Succeeded, r.Failed, r.Over250ms)
	fmt.Fprintf(w, "throughput %.1f req/s over %v\n", r.Throughput, r.Ended.Sub(r.Started).Round(time.Millisecond))
	fmt.Fprintf(w, "latency    p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", r.P50, r.P90, r.P99, r.P999, r.Max)
	ops := make([]string, 0, len(r.ByOperation))
	for op := range r.ByOperation {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		s := r.ByOperation[op]
		fmt.Fprintf(w, "  %-15s %8d  failed %6d  p50 %v  p99 %v\n", op, s.Count, s.Failed, s.P50, s.P99)
	}
	errs := make([]string, 0, len(r.ByError))
	for e := range r.ByError {
		errs = append(errs, e)
	}
	slices.Sort(errs)
	for _, e := range errs {
		fmt.Fprintf(w, "  error %-30s %d\n", e, r.ByError[e])
	}
	if re != nil {
		fmt.Fprintf(w, "redecrypt  ok %d  failed %d\n", re.OK, re.Failed)
		for _, f := range re.Failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
}
