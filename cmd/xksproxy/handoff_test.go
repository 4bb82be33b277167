package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/internal/devstack"
	"github.com/xksproxy/xksproxy/sigv4"
)

// handoffBackend is an emulated Cosmian server as an operator configures one: XKS under cred,
// KMIP behind a bearer token, keys granted to every principal.
func handoffBackend(t *testing.T, dir, name string, gen kmsemu.Generation, cred sigv4.Credential, keys ...string) string {
	t.Helper()
	s, err := kmsemu.New(kmsemu.Config{CosmianVersion: gen, Tokens: map[string]string{"tok-" + name: "admin"},
		XKS: &kmsemu.XKSConfig{Region: "us-east-1", AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.Secret}})
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
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: run.Cert.Raw})
	ckms := filepath.Join(dir, "ckms-"+name+".toml")
	body := fmt.Sprintf("[http_config]\nserver_url = %q\naccess_token = %q\nverified_cert = %q\n", run.URL, "tok-"+name, cert)
	if err := os.WriteFile(ckms, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("\n[[backend]]\nname = %q\nxks_url = %q\nregion = \"us-east-1\"\naccess_key_id = %q\nsecret_access_key = %q\nckms_config = %q\n",
		name, run.URL+"/aws", cred.AccessKeyID, cred.Secret, ckms)
}

// `xksproxy handoff check` as an operator runs it after a migration A → B: B holds every key
// and accepts AWS's credential (READY, exit 0); B lacking a key A holds, or refusing AWS's
// credential, is NOT READY (exit 1) and the output says what to do.
func TestHandoffCheck(t *testing.T) {
	aws, err := devstack.RandomCredential("AKIA")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := devstack.RandomCredential("AKIA")
	for _, tc := range []struct {
		name  string
		bCred sigv4.Credential
		onB   []string
		code  int
		want  []string
	}{
		{"ready", aws, []string{"k1", "k2", "k3"}, 0, []string{"handoff to b: READY", "3 checked", "DNS"}},
		{"a key not migrated", aws, []string{"k1", "k2"}, 1, []string{"NOT READY", "held by another backend are not on b (k3)"}},
		{"AWS's credential refused", other, []string{"k1", "k2", "k3"}, 1, []string{"NOT READY", "refused [" + aws.AccessKeyID + "]", "aws_xks_sigv4_access_key_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			doc := fmt.Sprintf("[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\n\n[tls]\nmode = \"self-signed\"\n\n[[prefix]]\npath = \"/aws\"\nregion = \"us-east-1\"\n\n[[prefix.credential]]\naccess_key_id = %q\nsecret_access_key = %q\ncreated = \"2026-12-01\"\n",
				aws.AccessKeyID, aws.Secret)
			a, _ := devstack.RandomCredential("AKIA")
			doc += handoffBackend(t, dir, "a", kmsemu.Cosmian526, a, "k1", "k2", "k3")
			doc += handoffBackend(t, dir, "b", kmsemu.Cosmian528, tc.bCred, tc.onB...)
			doc += fmt.Sprintf("\n[route]\nprimary = \"b\"\n\n[cutover]\nsource = \"a\"\ntarget = \"b\"\njournal_path = %q\n", filepath.Join(dir, "journal"))
			path := filepath.Join(dir, "xksproxy.toml")
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{"handoff", "check", "--config", path, "--backend", "b"}, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, secret := range []string{aws.Secret, other.Secret} {
				if strings.Contains(out, secret) {
					t.Error("a secret in the output")
				}
			}
		})
	}
}
