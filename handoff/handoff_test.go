package handoff

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
)

// server is an emulated Cosmian server with XKS enabled under cred, holding keys (granted to
// every principal), over real TLS on loopback.
func server(t *testing.T, gen kmsemu.Generation, cred sigv4.Credential, keys ...string) (string, *tls.Config) {
	t.Helper()
	s, err := kmsemu.New(kmsemu.Config{CosmianVersion: gen,
		XKS: &kmsemu.XKSConfig{Region: "eu-west-1", AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.Secret}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range keys {
		if err := s.CreateKey("admin", id, kmsemu.KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.GrantAccess("admin", id, "*", "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	s.MigrateXKSAccess()
	run, err := s.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	return run.URL + "/aws", &tls.Config{RootCAs: run.CertPool, MinVersion: tls.VersionTLS12}
}

func cred(t *testing.T) sigv4.Credential {
	t.Helper()
	c, err := devstack.RandomCredential("AKIA")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheck(t *testing.T) {
	aws, other := cred(t), cred(t)
	for _, tc := range []struct {
		name       string
		serverCred sigv4.Credential
		onServer   []string
		path       string
		elsewhere  map[string][]string
		ready      bool
		want       []string // in the steps
	}{
		{"ready", aws, []string{"k1", "k2"}, "/aws", nil, true, []string{"DNS"}},
		{"ready, the URI path changes first", aws, []string{"k1", "k2"}, "/xks/prod", nil, true,
			[]string{"--xks-proxy-uri-path /aws/kms/xks/v1", "DNS"}},
		{"AWS's credential refused", other, []string{"k1", "k2"}, "/aws", nil, false,
			[]string{"accept AWS's credential", "update-custom-key-store"}},
		{"a key missing", aws, []string{"k1"}, "/aws", nil, false, []string{"1 key(s) are unknown", "k2"}},
		{"a key not migrated", aws, []string{"k1", "k2"}, "/aws", map[string][]string{"a": {"k1", "k2", "k3"}}, false,
			[]string{"not on b (k3)", "finish the migration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, tc2 := server(t, kmsemu.Cosmian528, tc.serverCred, tc.onServer...)
			keys := []string{"k1", "k2"}
			if tc.elsewhere != nil {
				keys = tc.onServer
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rep, err := Check(ctx, Config{Backend: "b", XKSURL: u, TLS: tc2, Path: tc.path, Region: "eu-west-1",
				Credentials: []sigv4.Credential{aws}, Keys: keys, Elsewhere: tc.elsewhere})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Ready != tc.ready {
				t.Errorf("ready %v, want %v: %+v", rep.Ready, tc.ready, rep)
			}
			steps := strings.Join(rep.Steps, "\n")
			for _, w := range tc.want {
				if !strings.Contains(steps, w) {
					t.Errorf("steps lack %q:\n%s", w, steps)
				}
			}
			if strings.Contains(steps, aws.Secret) || strings.Contains(steps, other.Secret) {
				t.Error("a secret in the steps")
			}
		})
	}
}
