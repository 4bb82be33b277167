package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// options are the parsed command line.
type options struct {
	listen, region, service, akid, secret, defaultUser, version string
	tls                                                         bool
	tokens, keys, nodes                                         listFlag
	seedKeys                                                    int
}

// maxSeedKeys bounds --seed-keys: enough for benchmarks, not a way to fill the memory.
const maxSeedKeys = 1_000_000

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("kmsemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9998", "address to listen on")
	fs.BoolVar(&o.tls, "tls-self-signed", false, "serve HTTPS with a fresh self-signed ECDSA certificate")
	fs.StringVar(&o.region, "xks-region", getenv("KMS_AWS_XKS_REGION"), "XKS SigV4 region (env KMS_AWS_XKS_REGION)")
	fs.StringVar(&o.service, "xks-service", getenv("KMS_AWS_XKS_SERVICE"), "XKS SigV4 service (env KMS_AWS_XKS_SERVICE; default kms-xks-proxy)")
	fs.StringVar(&o.akid, "xks-access-key-id", getenv("KMS_AWS_XKS_SIGV4_ACCESS_KEY_ID"), "XKS SigV4 access key id (env KMS_AWS_XKS_SIGV4_ACCESS_KEY_ID)")
	fs.StringVar(&o.secret, "xks-secret-access-key", getenv("KMS_AWS_XKS_SIGV4_SECRET_ACCESS_KEY"), "XKS SigV4 secret (env KMS_AWS_XKS_SIGV4_SECRET_ACCESS_KEY)")
	fs.StringVar(&o.defaultUser, "default-user", "admin", "identity of unauthenticated callers and owner of seeded keys")
	fs.StringVar(&o.version, "cosmian-version", string(kmsemu.NewestGeneration), "Cosmian release to emulate: "+string(kmsemu.Cosmian526)+" (XKS calls run as the caller's ARN), "+
		string(kmsemu.Cosmian527)+" (XKS calls run as [aws-xks-service]; alias xks-service) or "+string(kmsemu.Cosmian528)+" (5.27, and keys that are not extractable cannot be exported)")
	fs.Var(&o.nodes, "node-listen", "ADDR of one more node over the same store, like Cosmian's HA mode on one database (repeatable)")
	fs.Var(&o.tokens, "token", "USER=TOKEN bearer token for /kmip and /access (repeatable; none → no authentication)")
	fs.Var(&o.keys, "key", "ID[:USAGE] seed an AES-256 key owned by the default user, tagged aws-xks, granted to * (repeatable; USAGE encrypt-decrypt|encrypt|decrypt|none)")
	fs.IntVar(&o.seedKeys, "seed-keys", 0, fmt.Sprintf("N seed N encrypt-decrypt keys key-000001 … like N --key flags (0 to %d)", maxSeedKeys))
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.seedKeys < 0 || o.seedKeys > maxSeedKeys {
		return o, fmt.Errorf("--seed-keys wants a number of keys from 0 to %d, got %d", maxSeedKeys, o.seedKeys)
	}
	return o, nil
}

// usageMasks maps --key USAGE to a usage mask ("none" keeps only WrapKey|UnwrapKey).
var usageMasks = map[string]int32{
	"encrypt-decrypt": kmsemu.DefaultUsageMask,
	"encrypt":         0x4,
	"decrypt":         0x8,
	"none":            0x10 | 0x20,
}

func buildServer(o options, logger *slog.Logger) (*kmsemu.Server, error) {
	gen, err := kmsemu.ParseGeneration(o.version)
	if err != nil {
		return nil, err
	}
	cfg := kmsemu.Config{DefaultUser: o.defaultUser, CosmianVersion: gen, Logger: logger}
	if len(o.tokens) > 0 {
		cfg.Tokens = map[string]string{}
		for _, t := range o.tokens {
			user, tok, ok := strings.Cut(t, "=")
			if !ok || user == "" || tok == "" {
				return nil, fmt.Errorf("--token wants USER=TOKEN, got %q", user)
			}
			cfg.Tokens[tok] = user
		}
	}
	set := 0
	for _, v := range []string{o.region, o.akid, o.secret} {
		if v != "" {
			set++
		}
	}
	switch set {
	case 0:
	case 3:
		cfg.XKS = &kmsemu.XKSConfig{Region: o.region, Service: o.service, AccessKeyID: o.akid, SecretAccessKey: o.secret}
	default:
		return nil, errors.New("XKS needs --xks-region, --xks-access-key-id and --xks-secret-access-key together")
	}
	srv, err := kmsemu.New(cfg)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(o.keys)+o.seedKeys)
	keys = append(keys, o.keys...)
	for i := 1; i <= o.seedKeys; i++ {
		keys = append(keys, seedKeyID(i))
	}
	for _, k := range keys {
		id, usage, _ := strings.Cut(k, ":")
		if usage == "" {
			usage = "encrypt-decrypt"
		}
		mask, ok := usageMasks[usage]
		if !ok || id == "" {
			return nil, fmt.Errorf("--key wants ID[:encrypt-decrypt|encrypt|decrypt|none], got %q", k)
		}
		if err := srv.CreateKey(o.defaultUser, id, kmsemu.KeyOptions{UsageMask: mask, Tags: []string{"aws-xks"}}); err != nil {
			return nil, err
		}
		if err := srv.GrantAccess(o.defaultUser, id, "*", "encrypt", "decrypt", "getattributes"); err != nil {
			return nil, err
		}
	}
	if gen != kmsemu.Cosmian526 && cfg.XKS != nil {
		srv.MigrateXKSAccess() // as if the seeded keys predated a restart
	}
	return srv, nil
}

// seedKeyID names the i-th key of --seed-keys (1-based): key-000001, key-000002, …
func seedKeyID(i int) string { return fmt.Sprintf("key-%06d", i) }

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	o, err := parseFlags(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := buildServer(o, logger)
	if err != nil {
		return err
	}
	servers := []*kmsemu.Server{srv}
	for range o.nodes {
		node, err := srv.Node()
		if err != nil {
			return err
		}
		servers = append(servers, node)
	}
	var running []*kmsemu.Running
	defer func() {
		for _, r := range running {
			_ = r.Close()
		}
	}()
	for i, s := range servers {
		addr := o.listen
		if i > 0 {
			addr = o.nodes[i-1]
		}
		r, err := s.Start(addr, o.tls)
		if err != nil {
			return err
		}
		running = append(running, r)
		logger.Info("kmsemu ready", "url", r.URL, "node", i, "xks", o.region != "", "cosmianVersion", string(srv.Generation()),
			"keys", len(o.keys)+o.seedKeys, "auth", len(o.tokens) > 0)
	}
	<-ctx.Done()
	logger.Info("kmsemu shutting down")
	var errs []error
	for _, r := range running {
		errs = append(errs, r.Close())
	}
	running = nil
	return errors.Join(errs...)
}
