package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
)

type devFlags struct {
	listen, prefix, region, akid, secret, proxyConfigOut, logLevel string
	keys                                                           repeated
}

func (d *devFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.listen, "listen", "127.0.0.1:8443", "proxy listen address")
	fs.StringVar(&d.prefix, "dev-prefix", "/aws", "URI path prefix before /kms/xks/v1")
	fs.StringVar(&d.region, "region", "us-east-1", "SigV4 region")
	fs.StringVar(&d.akid, "access-key-id", "", "SigV4 access key id (default: random per run)")
	fs.StringVar(&d.secret, "secret-access-key", "", "SigV4 secret (default: random per run)")
	fs.StringVar(&d.proxyConfigOut, "proxy-config-out", "", "write the AWS proxy configuration file JSON here")
	fs.StringVar(&d.logLevel, "log-level", "info", "log level")
	fs.Var(&d.keys, "dev-key", "key ID[:USAGE] on both backends, USAGE encrypt-decrypt|encrypt|decrypt|none (repeatable)")
}

// devFlagNames are the flags register adds: they only mean something with --dev.
var devFlagNames = []string{"listen", "dev-prefix", "region", "access-key-id", "secret-access-key", "proxy-config-out", "log-level", "dev-key"}

func (d *devFlags) owns(name string) bool {
	for _, n := range devFlagNames {
		if n == name {
			return true
		}
	}
	return false
}

func serveDev(ctx context.Context, d devFlags, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, d.logLevel, "text")
	if err != nil {
		return err
	}
	keys := devstack.DefaultKeys()
	if len(d.keys) > 0 {
		keys = keys[:0]
		for _, s := range d.keys {
			k, err := devstack.ParseKey(s)
			if err != nil {
				return usageErr("%v", err)
			}
			keys = append(keys, k)
		}
	}
	var cred sigv4.Credential
	if d.akid != "" || d.secret != "" {
		cred = sigv4.Credential{AccessKeyID: d.akid, Secret: d.secret}
		if err := cred.Validate(); err != nil {
			return usageErr("--access-key-id/--secret-access-key: %v", err)
		}
	}
	st, err := devstack.Start(ctx, devstack.Config{
		Listen: d.listen, Prefix: d.prefix, Region: d.region, Credential: cred,
		Keys: keys, KeysOnB: true, Logger: log, Version: "xksproxy " + version,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if d.proxyConfigOut != "" {
		f, err := os.OpenFile(d.proxyConfigOut, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--proxy-config-out: %w", err)
		}
		err = writeProxyConfig(f, st.Prefix, st.Credential.AccessKeyID, st.Credential.Secret)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("--proxy-config-out: %w", err)
		}
	}
	fmt.Fprintf(stdout, `xksproxy dev mode: two emulated Cosmian KMS servers (a, b) holding the same keys, proxy in front.

  endpoint        %s%s/kms/xks/v1   (self-signed certificate: use curl -k)
  region          %s
  access key id   %s
  secret          %s
  keys            %s
  admin API       %s  (token: %s)
  metrics         %s
  cutover journal %s

Try:
  curl -k --aws-sigv4 "aws:amz:%s:kms-xks-proxy" --user '%s:%s' \
    -H 'Content-Type: application/json' \
    -d '{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/dev","kmsOperation":"Encrypt","kmsRequestId":"1","kmsKeyArn":"arn:aws:kms:%s:111122223333:key/dev"},"plaintext":"aGVsbG8=","encryptionAlgorithm":"AES_GCM"}' \
    %s%s/kms/xks/v1/keys/%s/encrypt

  XKSPROXY_ADMIN=%s XKSPROXY_ADMIN_TOKEN=%s xksproxy cutover plan
  (b already holds every key: the plan skips them; start/switch/rollback work as in production)

Ctrl-C stops.
`, st.Endpoint, st.Prefix, st.Region, st.Credential.AccessKeyID, st.Credential.Secret, keyList(keys),
		st.AdminURL, st.AdminToken, st.MetricsURL, st.JournalPath,
		st.Region, st.Credential.AccessKeyID, st.Credential.Secret, st.Region, st.Endpoint, st.Prefix, keys[0].ID,
		st.AdminURL, st.AdminToken)
	<-ctx.Done()
	return nil
}

func keyList(keys []devstack.Key) string {
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += k.ID + ":" + string(k.Usage)
	}
	return s
}
