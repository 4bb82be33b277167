package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/xksproxy/xksproxy/internal/cli"
	"github.com/xksproxy/xksproxy/internal/devstack"
)

func serveDev(ctx context.Context, d cli.DevFlags, stdout, stderr io.Writer) error {
	if err := d.Check(); err != nil {
		return err
	}
	log, err := cli.NewLogger(stderr, d.LogLevel, "text")
	if err != nil {
		return err
	}
	keys := devstack.DefaultKeys()
	if len(d.Keys) > 0 {
		keys = keys[:0]
		for _, s := range d.Keys {
			k, err := devstack.ParseKey(s)
			if err != nil {
				return cli.UsageErr("%v", err)
			}
			keys = append(keys, k)
		}
	}
	cred, err := d.Credential()
	if err != nil {
		return err
	}
	st, err := devstack.Start(ctx, devstack.Config{
		Listen: d.Listen, Prefix: d.Prefix, Region: d.Region, Credential: cred,
		Keys: keys, KeysOnB: true, Logger: log, Version: "xksproxy " + version,
	})
	if err != nil {
		return err
	}
	defer st.Close()
	if d.ProxyConfigOut != "" {
		f, err := os.OpenFile(d.ProxyConfigOut, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--proxy-config-out: %w", err)
		}
		err = cli.WriteProxyConfig(f, st.Prefix, st.Credential.AccessKeyID, st.Credential.Secret)
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
