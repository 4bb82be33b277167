package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/internal/cli"
)

func awsConfigCommand() command {
	return command{
		name:     "aws-config",
		synopsis: "--config FILE [--prefix PATH] [--access-key-id ID]",
		summary:  "print the proxy configuration file JSON for AWS",
		setup: func(fs *flag.FlagSet) runFunc {
			cfgPath := fs.String("config", "", "TOML configuration file (required)")
			prefix := fs.String("prefix", "", "prefix path (default: the first [[prefix]])")
			akid := fs.String("access-key-id", "", "credential set (default: the last one listed, i.e. the newest in a rotation)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				return awsConfig(*cfgPath, *prefix, *akid, stdout)
			}
		},
	}
}

// awsConfig writes the AWS proxy configuration file of one prefix and credential set.
func awsConfig(cfgPath, prefix, akid string, stdout io.Writer) error {
	if cfgPath == "" {
		return usageErr("aws-config: --config FILE is required")
	}
	// Only the prefix's credential is printed: the backends' secrets need not be set here.
	f, _, err := config.LoadPrefixSecrets(cfgPath)
	if err != nil {
		return err
	}
	for _, p := range f.Prefix {
		if prefix != "" && p.Path != prefix {
			continue
		}
		if len(p.Credential) == 0 {
			return fmt.Errorf("%s: prefix %q has no credential", cfgPath, p.Path)
		}
		c := p.Credential[len(p.Credential)-1]
		if akid != "" {
			found := false
			for _, pc := range p.Credential {
				if pc.AccessKeyID == akid {
					c, found = pc, true
				}
			}
			if !found {
				return fmt.Errorf("%s: prefix %q has no credential with access key id %q", cfgPath, p.Path, akid)
			}
		}
		return cli.WriteProxyConfig(stdout, p.Path, c.AccessKeyID, c.SecretAccessKey)
	}
	return fmt.Errorf("%s: no [[prefix]] with path %q", cfgPath, prefix)
}
