package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twoBackends is a file with two [[backend]] entries; the line numbers in the tests below are
// this document's.
const twoBackends = `[tls]
mode = "self-signed"

[[prefix]]
path = "/aws"
region = "us-east-1"

[[prefix.credential]]
access_key_id = "AKIAXKSPROXYOLDKEY01"
secret_access_key = "` + testSecret + `"

[[backend]]
name = "a"
xks_url = "https://kms-a:9998/aws"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = "` + testSecret + `"
timeout = "100ms"
max_idle_conns = 4

[[backend]]
name = "b"
xks_url = "https://kms-b:9998/aws"
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDB2"
secret_access_key = "` + testSecret + `"
timeout = "150ms"
max_idle_conns = 4
`

// Every problem of a file is reported, each with its line and the entry of an array of tables
// it belongs to — also a value of the wrong type in the first of two entries, which
// BurntSushi/toml alone places on the last entry's line.
func TestEveryProblemWithItsLine(t *testing.T) {
	edit := func(pairs ...string) string {
		doc := twoBackends
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(doc, pairs[i]) {
				t.Fatalf("test document lacks %q", pairs[i])
			}
			doc = strings.Replace(doc, pairs[i], pairs[i+1], 1)
		}
		return doc
	}
	for _, tc := range []struct {
		name string
		doc  string
		want []string // the error's lines, in order
	}{
		{"valid", twoBackends, nil},
		{"three problems in three places", edit(
			`xks_url = "https://kms-b:9998/aws"`, `xks_url = "ftp://kms-b/aws"`,
			`path = "/aws"`, `path = "aws"`,
			`name = "a"`, `name = "A!"`),
			[]string{
				"x.toml:5: prefix[0].path: URI path prefix must be empty or start with /",
				"x.toml:13: backend[0].name: must be 1 to 32 characters of a-z 0-9 -",
				"x.toml:23: backend[1].xks_url: must be https:// or http://",
				// A consequence, and true: no backend is named "a" any more.
				`x.toml: cutover.source: no backend is named "a"`,
			}},
		{"unknown key in the second entry", edit(`name = "b"`, `nmae = "b"`),
			[]string{
				"x.toml:21: backend[1].name: must be 1 to 32 characters of a-z 0-9 -",
				`x.toml:22: backend[1].nmae: unknown key; did you mean "name"?`,
				`x.toml: cutover.target: no backend is named "b"`,
			}},
		{"unknown key in both entries", edit(`timeout = "100ms"`, `timout = "100ms"`, `timeout = "150ms"`, `timout = "150ms"`),
			[]string{
				`x.toml:18: backend[0].timout: unknown key; did you mean "timeout"?`,
				`x.toml:27: backend[1].timout: unknown key; did you mean "timeout"?`,
			}},
		{"key of another table", edit("[[prefix]]\n", "listen = \"0.0.0.0:443\"\n\n[[prefix]]\n"),
			[]string{`x.toml:4: tls.listen: unknown key; did you mean server.listen (in another table)?`}},
		{"unknown table", twoBackends + "\n[sever]\nlisten = \"0.0.0.0:443\"\n",
			[]string{`x.toml:30: sever: unknown key; did you mean "server"?`}},
		{"required key missing is reported at its table", edit("region = \"us-east-1\"\naccess_key_id = \"AKIACOSMIANBACKENDB2\"", "access_key_id = \"AKIACOSMIANBACKENDB2\""),
			[]string{"x.toml:21: backend[1].region: required"}},
		{"bad duration in the first of two entries", edit(`timeout = "100ms"`, `timeout = "soon"`),
			[]string{`x.toml:18: backend[0].timeout: not a duration (want e.g. "200ms", "15s")`}},
		{"bad duration in the second of two entries", edit(`timeout = "150ms"`, `timeout = "soon"`),
			[]string{`x.toml:27: backend[1].timeout: not a duration (want e.g. "200ms", "15s")`}},
		{"wrong type in the first of two entries", edit(`max_idle_conns = 4`, `max_idle_conns = "4"`),
			[]string{`x.toml:19: backend[0].max_idle_conns: incompatible types`}},
		{"wrong type in the second of two entries", edit(`timeout = "150ms"`+"\nmax_idle_conns = 4", `timeout = "150ms"`+"\nmax_idle_conns = true"),
			[]string{`x.toml:28: backend[1].max_idle_conns: incompatible types`}},
		// A secret from the environment is reported as secret_access_key, at the line that names it.
		{"short secret from the environment", edit(`secret_access_key = "`+testSecret+`"`+"\ntimeout = \"150ms\"", `secret_access_key_env = "XKSPROXY_TEST_SHORT"`+"\ntimeout = \"150ms\""),
			[]string{"x.toml:26: backend[1].secret_access_key: secret for access key id AKIACOSMIANBACKENDB2 must be 8 to 128 characters, got 3"}},
		{"syntax", edit(`name = "b"`, `name = = "b"`), []string{"x.toml:22: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XKSPROXY_TEST_SHORT", "abc")
			_, _, err := Parse("/etc/xksproxy/x.toml", []byte(tc.doc))
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(got), len(tc.want), err)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %d:\n got %s\nwant %s…", i, got[i], tc.want[i])
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Line == 0 {
				t.Errorf("not a FieldError with a line: %#v", err)
			}
		})
	}
}

// The ckms client file holds the keys' owner credential: it must exist, and a mode that lets
// group or others read it draws the secret files' warning.
func TestCKMSConfigFile(t *testing.T) {
	dir := t.TempDir()
	doc := strings.Replace(twoBackends, `timeout = "100ms"`, "timeout = \"100ms\"\nckms_config = \"ckms-a.toml\"", 1)
	path := filepath.Join(dir, "x.toml")
	if _, _, err := Parse(path, []byte(doc)); err == nil || !strings.HasPrefix(err.Error(), "x.toml:19: backend[0].ckms_config: cannot read") {
		t.Fatalf("missing ckms file: %v", err)
	}
	ckms := filepath.Join(dir, "ckms-a.toml")
	if err := os.WriteFile(ckms, []byte("[http_config]\nserver_url = \"https://kms-a:9998\"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	// Group-readable by the process's own group only (the shipped root:xksproxy 0640): no warning.
	if _, warns, err := Parse(path, []byte(doc)); err != nil || len(ckmsWarnings(warns)) != 0 {
		t.Fatalf("a file readable by the proxy's own group only: %v %q", err, warns)
	}
	if err := os.Chmod(ckms, 0o644); err != nil {
		t.Fatal(err)
	}
	f, warns, err := Parse(path, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if f.Backend[0].CKMSConfig != ckms {
		t.Errorf("ckms_config %q, want %q", f.Backend[0].CKMSConfig, ckms)
	}
	if w := ckmsWarnings(warns); len(w) != 1 || !strings.HasPrefix(w[0], "x.toml:19: backend[0].ckms_config: ") || !strings.Contains(w[0], "chmod 600") {
		t.Errorf("warnings %q", warns)
	}
	if err := os.Chmod(ckms, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, warns, err := Parse(path, []byte(doc)); err != nil || len(ckmsWarnings(warns)) != 0 {
		t.Errorf("mode 0600: %v, warnings %q", err, warns)
	}
}

// LoadPrefixSecrets reads the prefixes' secrets only: the backends' and the admin token's
// environment variables may be unset, a prefix's may not.
func TestLoadPrefixSecrets(t *testing.T) {
	dir := t.TempDir()
	doc := strings.ReplaceAll(twoBackends, `secret_access_key = "`+testSecret+`"`+"\ntimeout", `secret_access_key_env = "XKSPROXY_TEST_UNSET_BACKEND"`+"\ntimeout") +
		"\n[admin]\nlisten = \"127.0.0.1:9465\"\ntoken_env = \"XKSPROXY_TEST_UNSET_TOKEN\"\n"
	path := filepath.Join(dir, "x.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), "backend[1].secret_access_key_env: environment variable XKSPROXY_TEST_UNSET_BACKEND is not set") {
		t.Fatalf("Load: %v", err)
	}
	f, _, err := LoadPrefixSecrets(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Prefix[0].Credential[0].SecretAccessKey != testSecret || f.Backend[0].SecretAccessKey != "" {
		t.Errorf("prefix secret %q, backend secret %q", f.Prefix[0].Credential[0].SecretAccessKey, f.Backend[0].SecretAccessKey)
	}
	prefixEnv := strings.Replace(doc, `secret_access_key = "`+testSecret+`"`, `secret_access_key_env = "XKSPROXY_TEST_UNSET_PREFIX"`, 1)
	if err := os.WriteFile(path, []byte(prefixEnv), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadPrefixSecrets(path); err == nil || !strings.HasPrefix(err.Error(), "x.toml:10: prefix[0].credential[0].secret_access_key_env: ") {
		t.Errorf("unset prefix secret: %v", err)
	}
}

func ckmsWarnings(warns []string) []string {
	var out []string
	for _, w := range warns {
		if strings.Contains(w, "ckms_config") {
			out = append(out, w)
		}
	}
	return out
}
