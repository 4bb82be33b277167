package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/internal/cli"
)

const cliTestConfig = `
[server]
listen = "127.0.0.1:0"
metrics_listen = "off"

[tls]
mode = "self-signed"

[[prefix]]
path = "/aws"
region = "us-east-1"
[[prefix.credential]]
access_key_id = "AKIAOLDOLDOLDOLDOLD1"
secret_access_key = "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQtb2xk"
[[prefix.credential]]
access_key_id = "AKIANEWNEWNEWNEWNEW2"
secret_access_key = "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQtbmV3"

[[backend]]
name = "a"
xks_url = "https://127.0.0.1:1/aws"
region = "us-east-1"
access_key_id = "AKIABACKENDBACKENDA1"
secret_access_key = "YmFja2VuZC1hLXNlY3JldC1iYWNrZW5kLWEtc2VjcmV0LWE="
`

func writeTemp(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommandLine(t *testing.T) {
	cfg := writeTemp(t, "xksproxy.toml", cliTestConfig)
	bad := writeTemp(t, "bad.toml", strings.Replace(cliTestConfig, `xks_url = "https://127.0.0.1:1/aws"`, `xks_url = "ftp://x"`, 1))
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string // regexps
	}{
		{"no command", nil, 2, "", "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, `^xksproxy \S+\n$`, ""},
		{"serve needs a config", []string{"serve"}, 2, "", `--config FILE is required`},
		{"serve --dev and --config", []string{"serve", "--dev", "--config", cfg}, 2, "", "exclusive"},
		{"serve names file, line and field", []string{"serve", "--config", bad}, 1, "", `bad\.toml:21: backend\[0\]\.xks_url: must be https:// or http://`},
		{"serve missing file", []string{"serve", "--config", "/nonexistent/x.toml"}, 1, "", `/nonexistent/x\.toml`},
		{"bad dev key usage", []string{"serve", "--dev", "--dev-key", "k1:sign"}, 2, "", `--dev-key "k1:sign"`},
		{"aws-config newest credential", []string{"aws-config", "--config", cfg}, 0,
			`"XksProxyUriPath": "/aws/kms/xks/v1"[\s\S]*"AccessKeyId": "AKIANEWNEWNEWNEWNEW2"[\s\S]*"RawSecretAccessKey": "bmV3`, ""},
		{"aws-config chosen credential", []string{"aws-config", "--config", cfg, "--access-key-id", "AKIAOLDOLDOLDOLDOLD1"}, 0, `AKIAOLDOLDOLDOLDOLD1`, ""},
		{"aws-config unknown prefix", []string{"aws-config", "--config", cfg, "--prefix", "/nope"}, 1, "", `no \[\[prefix\]\] with path "/nope"`},
		{"cutover needs a token", []string{"cutover", "status"}, 2, "", "admin token is required"},
		{"cutover unknown", []string{"cutover", "explode", "--admin", "http://127.0.0.1:1"}, 2, "", "unknown command"},
		{"demo bad flag", []string{"demo", "--keys"}, 2, "", "flag needs an argument"},
		{"stray argument", []string{"cutover", "status", "extra"}, 2, "", `cutover status: unexpected argument "extra"`},
		{"stray serve argument", []string{"serve", "--config", cfg, "now"}, 2, "", `serve: unexpected argument "now"`},
		{"negative watch", []string{"cutover", "status", "--watch", "-5s"}, 2, "", `invalid value "-5s" for flag --watch: must not be negative \(see xksproxy cutover status --help\)`},
		{"negative shadow", []string{"cutover", "start", "--shadow", "-1m"}, 2, "", `must not be negative`},
		{"negative demo probation", []string{"demo", "--probation", "-1s"}, 2, "", `must not be negative`},
		{"dev flag with a config", []string{"serve", "--config", cfg, "--dev-key", "k1"}, 2, "", `--dev-key is only used with --dev`},
		{"plan has only its flags", []string{"cutover", "plan", "-h"}, 0, `^Usage: xksproxy cutover plan[\s\S]*\n  --admin string\n[\s\S]*\n  --token-file string\n`, `^$`},
		{"plan refuses another command's flag", []string{"cutover", "plan", "--reason", "x"}, 2, "", "flag provided but not defined: --reason"},
		{"cutover help", []string{"cutover", "-h"}, 0, `cutover finalize`, `^$`},
		{"help", []string{"help"}, 0, `cutover COMMAND`, `^$`},
		{"--help", []string{"--help"}, 0, `^xksproxy — [\s\S]*validate --config FILE[\s\S]*COMMAND --help`, `^$`},
		// serve's own flags, then the --dev ones under their heading, and nothing else between.
		{"serve help", []string{"serve", "--help"}, 0,
			`^Usage: xksproxy serve [\s\S]*\nFlags:\n  --config string\n[^\n]*\n  --dev\n[^\n]*\n\nFlags with --dev only[^\n]*\n  --access-key-id string\n[\s\S]*  --dev-key value\n[\s\S]*  --listen string\n[^\n]*\(default "127\.0\.0\.1:8443"\)`, `^$`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XKSPROXY_ADMIN_TOKEN", "")
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if tc.out != "" && !regexp.MustCompile(tc.out).MatchString(out.String()) {
				t.Errorf("stdout %q does not match %q", out.String(), tc.out)
			}
			if tc.err != "" && !regexp.MustCompile(tc.err).MatchString(errb.String()) {
				t.Errorf("stderr %q does not match %q", errb.String(), tc.err)
			}
		})
	}
}

// Every command's asked-for help goes to stdout (so that `xksproxy serve -h | less` shows it),
// exits 0, and spells every flag --name.
func TestHelpOfEveryCommand(t *testing.T) {
	var paths [][]string
	for _, c := range commands() {
		if c.subs == nil {
			paths = append(paths, []string{c.name})
		}
		for _, sub := range c.subs {
			paths = append(paths, []string{c.name, sub.name})
		}
	}
	singleDash := regexp.MustCompile(`(?m)^\s+-[a-z]`)
	for _, p := range paths {
		for _, h := range []string{"-h", "--help"} {
			args := append(slices.Clone(p), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errb bytes.Buffer
				code := run(context.Background(), args, &out, &errb)
				if code != 0 || errb.Len() != 0 || !strings.HasPrefix(out.String(), "Usage: xksproxy "+strings.Join(p, " ")) {
					t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
				}
				if m := singleDash.FindString(out.String()); m != "" {
					t.Errorf("a flag spelled with one dash (%q):\n%s", m, out.String())
				}
			})
		}
	}
}

// aws-config prints a prefix's credential without needing the backends' secrets.
func TestAWSConfigWithoutBackendSecrets(t *testing.T) {
	t.Setenv("XKSPROXY_TEST_BACKEND_SECRET", "")
	doc := strings.Replace(cliTestConfig, `secret_access_key = "YmFja2VuZC1hLXNlY3JldC1iYWNrZW5kLWEtc2VjcmV0LWE="`, `secret_access_key_env = "XKSPROXY_TEST_BACKEND_SECRET"`, 1)
	if doc == cliTestConfig {
		t.Fatal("the backend's secret is not in cliTestConfig")
	}
	path := writeTemp(t, "x.toml", doc)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"aws-config", "--config", path}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), `"AccessKeyId": "AKIANEWNEWNEWNEWNEW2"`) {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
}

// syncBuffer is a bytes.Buffer safe to read while the command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestServeDevAndCutoverCLI runs `serve --dev` and drives it with `cutover plan` and
// `cutover status` as an operator would, through the admin API with the printed token.
func TestServeDevAndCutoverCLI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pcfg := filepath.Join(t.TempDir(), "proxy-config.json")
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--listen", "127.0.0.1:0", "--log-level", "error",
			"--dev-key", "k1", "--dev-key", "k2:encrypt", "--proxy-config-out", pcfg}, &out, &errb)
	}()
	re := regexp.MustCompile(`admin API\s+(http://\S+)\s+\(token: (\S+)\)`)
	var m []string
	deadline := time.Now().Add(60 * time.Second)
	for m == nil && time.Now().Before(deadline) {
		m = re.FindStringSubmatch(out.String())
		time.Sleep(50 * time.Millisecond)
	}
	if m == nil {
		t.Fatalf("serve --dev did not start:\n%s\n%s", out.String(), errb.String())
	}
	b, err := os.ReadFile(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	var pc cli.ProxyConfigFile
	if err := json.Unmarshal(b, &pc); err != nil || pc.XksProxyURIPath != "/aws/kms/xks/v1" || pc.XksProxyAuthenticationCredential.AccessKeyID == "" {
		t.Fatalf("proxy configuration file %s: %v", b, err)
	}
	if fi, _ := os.Stat(pcfg); fi.Mode().Perm() != 0o600 {
		t.Errorf("proxy configuration file mode %v, want 0600 (it holds the secret)", fi.Mode().Perm())
	}
	t.Setenv("XKSPROXY_ADMIN_TOKEN", m[2])
	var pout, perr bytes.Buffer
	if code := run(ctx, []string{"cutover", "plan", "--admin", m[1], "--json"}, &pout, &perr); code != 0 {
		t.Fatalf("cutover plan: exit %d: %s", code, perr.String())
	}
	// B holds the same keys as A in dev mode: both keys are skipped, none copied.
	if !strings.Contains(pout.String(), `"skip": 2`) {
		t.Errorf("plan: %s", pout.String())
	}
	var sout, serr bytes.Buffer
	if code := run(ctx, []string{"cutover", "status", "--admin", m[1]}, &sout, &serr); code != 0 || !strings.Contains(sout.String(), "serving") {
		t.Errorf("cutover status: exit %d: %s %s", code, sout.String(), serr.String())
	}
	// A whole migration by hand: every state-changing command says what it did and the new
	// state, and status --watch stops once the migration waits for the operator.
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"cutover", "start", "--no-auto-switch", "--no-shadow"}, "migration a → b started"},
		{[]string{"cutover", "status", "--watch", "50ms"}, "verified: switch with"},
		{[]string{"cutover", "switch"}, "switched: b serves, a is the fallback"},
		// Probation has not passed (no traffic): finalize needs --force and a reason.
		{[]string{"cutover", "finalize", "--force", "--reason", "dev walkthrough"}, "finalized: b serves alone"},
		{[]string{"cutover", "status", "--watch", "50ms"}, "migration finalized"},
		{[]string{"cutover", "plan"}, "copy       0"},
	} {
		var o, e bytes.Buffer
		if code := run(ctx, append(step.args, "--admin", m[1]), &o, &e); code != 0 || !strings.Contains(o.String(), step.want) {
			t.Fatalf("%v: exit %d, stdout lacks %q:\n%s\n%s", step.args, code, step.want, o.String(), e.String())
		}
	}
	t.Setenv("XKSPROXY_ADMIN_TOKEN", "wrong-token-wrong-token-wrong-token")
	var wout, werr bytes.Buffer
	if code := run(ctx, []string{"cutover", "status", "--admin", m[1]}, &wout, &werr); code != 1 || !strings.Contains(werr.String(), "401") {
		t.Errorf("wrong token: exit %d: %s", code, werr.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve --dev exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve --dev did not stop")
	}
}
