package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// validConfig is a single-backend file with nothing to warn about: created dates on the
// credential sets, the backend's secret from the environment.
const validConfig = `[server]
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
created = "2026-01-15"

[[backend]]
name = "a"
xks_url = "https://127.0.0.1:1/aws"
region = "us-east-1"
access_key_id = "AKIABACKENDBACKENDA1"
secret_access_key_env = "XKSPROXY_TEST_BACKEND_SECRET"
`

const backendSecret = "YmFja2VuZC1hLXNlY3JldC1iYWNrZW5kLWEtc2VjcmV0LWE="

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	edit := func(pairs ...string) string {
		doc := validConfig
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(doc, pairs[i]) {
				t.Fatalf("test document lacks %q", pairs[i])
			}
			doc = strings.Replace(doc, pairs[i], pairs[i+1], 1)
		}
		return doc
	}
	write("ckms-a.toml", "[http_config]\nserver_url = \"https://127.0.0.1:1\"\n", 0o644)
	for _, tc := range []struct {
		name, doc string
		env       bool // XKSPROXY_TEST_BACKEND_SECRET set
		code      int
		out       string // regexp over the whole of stdout
	}{
		{"good", validConfig, true, 0, `^\S+/good\.toml: valid\n$`},
		{"backend secret unset", validConfig, false, 1,
			`^backend secret unset\.toml:22: backend\[0\]\.secret_access_key_env: environment variable XKSPROXY_TEST_BACKEND_SECRET is not set or empty\n$`},
		{"every problem, with its line", edit(
			`path = "/aws"`, `path = "aws"`,
			`name = "a"`, `nmae = "a"`,
			`listen = "127.0.0.1:0"`, `listen = "nowhere"`),
			true, 1,
			`^every problem, with its line\.toml:2: server\.listen: must be host:port[^\n]*\n` +
				`every problem, with its line\.toml:9: prefix\[0\]\.path: [^\n]*\n` +
				`every problem, with its line\.toml:17: backend\[0\]\.name: must be [^\n]*\n` +
				`every problem, with its line\.toml:18: backend\[0\]\.nmae: unknown key; did you mean "name"\?\n$`},
		// The proxy's own rule, checked by building it as serve does (no file line: the proxy
		// names the prefix and the credential set).
		{"prefix secret too short", edit(`b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQtb2xk`, `c2hvcnQtc2VjcmV0LXNob3J0LXNlY3JldA`), true, 1,
			`^prefix secret too short\.toml: proxy: invalid configuration: prefix\[0\] "/aws": credential\[0\] AKIAOLDOLDOLDOLDOLD1: secret access key of 34 characters; the XKS spec wants 43 to 64\n$`},
		// The ckms client file is read as serve reads it, and its mode is checked.
		{"ckms file readable by others", edit(`secret_access_key_env = "XKSPROXY_TEST_BACKEND_SECRET"`,
			"secret_access_key_env = \"XKSPROXY_TEST_BACKEND_SECRET\"\nckms_config = \"ckms-a.toml\""), true, 0,
			`^warning: ckms file readable by others\.toml:23: backend\[0\]\.ckms_config: \S+ is readable by group or others \(mode -rw-r--r--\); chmod 600 it\n.+: valid\n$`},
		{"ckms file missing", edit(`secret_access_key_env = "XKSPROXY_TEST_BACKEND_SECRET"`,
			"secret_access_key_env = \"XKSPROXY_TEST_BACKEND_SECRET\"\nckms_config = \"nowhere.toml\""), true, 1,
			`^ckms file missing\.toml:23: backend\[0\]\.ckms_config: cannot read: no such file or directory\n$`},
		// ACME: checked without an order (nothing is contacted).
		{"acme", edit(`mode = "self-signed"`, "mode = \"acme\"\ndomains = [\"xks.example.com\"]\nca = \"https://127.0.0.1:1/dir\"\nstorage_dir = \"acme\""), true, 0,
			`^\S+/acme\.toml: valid \(the ACME certificate is obtained when serve starts\)\n$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env {
				t.Setenv("XKSPROXY_TEST_BACKEND_SECRET", backendSecret)
			} else {
				t.Setenv("XKSPROXY_TEST_BACKEND_SECRET", "")
			}
			path := write(tc.name+".toml", tc.doc, 0o600)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var out, errb bytes.Buffer
			code := run(ctx, []string{"validate", "--config", path}, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if !regexp.MustCompile(tc.out).MatchString(out.String()) {
				t.Errorf("stdout:\n%s\ndoes not match %s", out.String(), tc.out)
			}
			if strings.Contains(out.String()+errb.String(), backendSecret) || strings.Contains(out.String()+errb.String(), "b2xkLXNlY3JldC1vbGQ") {
				t.Errorf("a secret is printed")
			}
			if tc.code != 0 && !strings.Contains(errb.String(), "the configuration has problems") {
				t.Errorf("stderr: %s", errb.String())
			}
		})
	}
}

// serve refuses a file for the same reasons validate names, in the same words, before it
// listens.
func TestServeSaysWhatValidateSays(t *testing.T) {
	t.Setenv("XKSPROXY_TEST_BACKEND_SECRET", backendSecret)
	for _, doc := range []string{
		strings.Replace(validConfig, `name = "a"`, `nmae = "a"`, 1),
		strings.Replace(validConfig, `b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQtb2xk`, `c2hvcnQtc2VjcmV0LXNob3J0LXNlY3JldA`, 1),
	} {
		path := writeTemp(t, "x.toml", doc)
		var vout, verr, sout, serr bytes.Buffer
		if code := run(context.Background(), []string{"validate", "--config", path}, &vout, &verr); code != 1 {
			t.Fatalf("validate: exit %d", code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code := run(ctx, []string{"serve", "--config", path}, &sout, &serr)
		cancel()
		if code != 1 {
			t.Fatalf("serve: exit %d: %s", code, serr.String())
		}
		for line := range strings.SplitSeq(strings.TrimSpace(vout.String()), "\n") {
			if !strings.Contains(serr.String(), "xksproxy: "+line+"\n") {
				t.Errorf("serve does not say %q:\n%s", line, serr.String())
			}
		}
	}
}
