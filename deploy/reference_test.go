package deploy_test

import (
	"context"
	"encoding"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

// referenceFile is the commented reference configuration: every key of the file, its default
// and what it does.
const referenceFile = "examples/xksproxy.toml"

var (
	// A table header, written ([server], [[backend]]) or commented out (# [fleet]).
	refTableRe = regexp.MustCompile(`^(# )?\[\[?([a-z_.]+)\]\]?\s*$`)
	// A key, set (key = value) or shown with its default (# key = value).
	refKeyRe = regexp.MustCompile(`^(# )?([a-z][a-z0-9_]*) = (.+)$`)
	// What an active key's comment must say about it.
	refDefaultRe = regexp.MustCompile(`(?i)\bdefault|\brequired\b`)
)

// refLine is a key of the reference file.
type refLine struct {
	table, key string
	line       int  // 1-based
	set        bool // written, not commented out
	tableSet   bool // its table header is written
}

// parseReference lists the keys of the reference file in order.
func parseReference(doc string) (keys []refLine, tables map[string]bool) {
	tables = map[string]bool{}
	table, tableSet := "", true
	for i, l := range strings.Split(doc, "\n") {
		if m := refTableRe.FindStringSubmatch(l); m != nil {
			table, tableSet = m[2], m[1] == ""
			tables[table] = true
			continue
		}
		if m := refKeyRe.FindStringSubmatch(l); m != nil {
			keys = append(keys, refLine{table: table, key: m[2], line: i + 1, set: m[1] == "", tableSet: tableSet})
		}
	}
	return keys, tables
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// configKeys walks config.File's toml tags: every table (server.limits, prefix.credential) and
// every key (backend.ckms_config) the configuration file can hold.
func configKeys() (tables, keys []string) {
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			path := tag
			if prefix != "" {
				path = prefix + "." + tag
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
				tables = append(tables, path)
				walk(path, ft)
				continue
			}
			keys = append(keys, path)
		}
	}
	walk("", reflect.TypeFor[config.File]())
	return tables, keys
}

// referenceProblems names what the reference file lacks or gets wrong against config.File: a
// table or key it does not show, a key it shows that config does not have, a key shown twice in
// one table entry, and a key set (not commented out) whose comment says nothing of its default.
func referenceProblems(doc string) []string {
	refKeys, refTables := parseReference(doc)
	tables, keys := configKeys()
	var problems []string
	for _, tb := range tables {
		if !refTables[tb] {
			problems = append(problems, fmt.Sprintf("table [%s] is not shown", tb))
		}
	}
	shown := map[string]bool{}
	lines := strings.Split(doc, "\n")
	for _, k := range refKeys {
		path := k.key
		if k.table != "" {
			path = k.table + "." + k.key
		}
		if !slices.Contains(keys, path) {
			problems = append(problems, fmt.Sprintf("line %d: %s is not a key of the configuration file", k.line, path))
			continue
		}
		if shown[path] {
			continue // a second [[backend]] repeats the keys it sets
		}
		shown[path] = true
		if k.set && !refDefaultRe.MatchString(commentAbove(lines, k.line-1)) {
			problems = append(problems, fmt.Sprintf("line %d: %s is set, and the comment above it gives no default (\"Default …\" or \"Required\")", k.line, path))
		}
	}
	for _, key := range keys {
		if !shown[key] {
			problems = append(problems, fmt.Sprintf("key %s is not shown: add it with its default and one line on what it does", key))
		}
	}
	return problems
}

// commentAbove is the comment block that describes the key at lines[i]: the comment lines just
// above it, past the keys of the same group (cert_file and key_file share one comment).
func commentAbove(lines []string, i int) string {
	j := i - 1
	for j >= 0 && refKeyRe.MatchString(lines[j]) {
		j--
	}
	var block []string
	for ; j >= 0 && strings.HasPrefix(lines[j], "#") && !refKeyRe.MatchString(lines[j]) && !refTableRe.MatchString(lines[j]); j-- {
		block = append(block, lines[j])
	}
	return strings.Join(block, "\n")
}

// TestReferenceShowsEveryKey: every key of config's structures is in the reference file, and
// the file shows no key config does not have. A key added to config without a line here fails.
func TestReferenceShowsEveryKey(t *testing.T) {
	b, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range referenceProblems(string(b)) {
		t.Errorf("%s: %s", referenceFile, p)
	}
	// The check itself: a key taken out, a key misspelt and a default left unsaid are found.
	for _, tc := range []struct{ edit, want string }{
		{"# max_idle_conns = 64\n", "key backend.max_idle_conns is not shown"},
		{"# lease_ttl = \"10s\"\n", "key fleet.lease_ttl is not shown"},
		{"# admin_server_name = \"\"\n", "key fleet.admin_server_name is not shown"},
		{"# The ACME account's contact. Default \"\" (none).\n# email = \"\"\n", "key tls.email is not shown"},
	} {
		doc := string(b)
		if !strings.Contains(doc, tc.edit) {
			t.Fatalf("the reference no longer holds %q", tc.edit)
		}
		doc = strings.Replace(doc, tc.edit, "", 1)
		if p := referenceProblems(doc); !slices.ContainsFunc(p, func(s string) bool { return strings.HasPrefix(s, tc.want) }) {
			t.Errorf("without %q: problems %q, want %q", tc.edit, p, tc.want)
		}
	}
	if p := referenceProblems(strings.Replace(string(b), "# max_in_flight = 1024", "# max_inflight = 1024", 1)); len(p) == 0 ||
		!strings.Contains(strings.Join(p, "\n"), "server.limits.max_inflight is not a key") {
		t.Errorf("a misspelt key is not found: %q", p)
	}
	if p := referenceProblems(strings.Replace(string(b), "Default \"127.0.0.1:8443\".", ".", 1)); len(p) == 0 ||
		!strings.Contains(strings.Join(p, "\n"), "server.listen is set, and the comment above it gives no default") {
		t.Errorf("a set key without its default is not found: %q", p)
	}
}

// uncomment writes every "# key = value" line of the tables for which keep says so as
// "key = value" (and their commented-out headers as headers): each shown default made explicit.
func uncomment(doc string, keep func(table string) bool) string {
	lines := strings.Split(doc, "\n")
	table := ""
	for i, l := range lines {
		if m := refTableRe.FindStringSubmatch(l); m != nil {
			table = m[2]
			if m[1] != "" && keep(table) {
				lines[i] = strings.TrimPrefix(l, "# ")
			}
			continue
		}
		if m := refKeyRe.FindStringSubmatch(l); m != nil && m[1] != "" && keep(table) {
			lines[i] = strings.TrimPrefix(l, "# ")
		}
	}
	return strings.Join(lines, "\n")
}

// installReference writes doc as if installed in /etc/xksproxy: that directory and
// /var/lib/xksproxy become temporary ones, and every file a set key names is created with what
// it must hold (a certificate and its key, a CA, a ckms client file, a secret), mode 0600.
func installReference(t *testing.T, doc string) string {
	t.Helper()
	dir := t.TempDir()
	doc = strings.ReplaceAll(doc, "/etc/xksproxy/", dir+"/etc/")
	doc = strings.ReplaceAll(doc, "/var/lib/xksproxy/", dir+"/var/")
	ca := testpki.NewCA(t, "xksproxy reference test CA", time.Now().Add(48*time.Hour))
	certPEM, keyPEM := ca.Leaf(t, 0, time.Now().Add(24*time.Hour), "xks.example.com")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	fileRe := regexp.MustCompile(`(?m)^([a-z_]+) = "(` + regexp.QuoteMeta(dir) + `/[^"]+)"`)
	for _, m := range fileRe.FindAllStringSubmatch(doc, -1) {
		var body []byte
		switch key := m[1]; {
		case key == "cert_file":
			body = certPEM
		case key == "key_file":
			body = keyPEM
		case key == "ca_file" || key == "admin_ca_file" || key == "trusted_roots_file":
			body = caPEM
		case key == "ckms_config":
			body = []byte("[http_config]\nserver_url = \"https://kms.example.internal:9998\"\naccess_token = \"reference-owner-token\"\n")
		case strings.HasSuffix(key, "_file"):
			// A SigV4 secret of the spec's length, an admin token and a fleet secret at once.
			body = []byte("cmVmZXJlbmNlLXRlc3Qtc2VjcmV0LXJlZmVyZW5jZS10ZXN0LXNlY3JldA==\n")
		default:
			continue // journal_path, storage_dir: written by serve, not read by validate
		}
		if err := os.MkdirAll(filepath.Dir(m[2]), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m[2], body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "etc", "xksproxy.toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReferenceValidates: the reference file, installed, passes config.Load and `xksproxy
// validate --config`; so does it with every default it shows written out (the shown values are
// valid keys and values), and with its [fleet] section written out too. Writing out the shown
// defaults of [cutover] and [fleet] gives the migration and the fleet member exactly the
// settings leaving them out gives.
func TestReferenceValidates(t *testing.T) {
	b, err := os.ReadFile(referenceFile)
	if err != nil {
		t.Fatal(err)
	}
	shipped := string(b)
	// [tls] shows the keys of three modes, of which one applies.
	notTLS := func(table string) bool { return table != "tls" && table != "fleet" }
	withFleet := func(table string) bool { return table != "tls" }
	xksproxy := commandPath(t, "xksproxy")
	var base *app.Config
	for _, tc := range []struct{ name, doc string }{
		{"as shipped", shipped},
		{"defaults written out", uncomment(shipped, notTLS)},
		{"fleet written out", uncomment(shipped, withFleet)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.doc == shipped && tc.name != "as shipped" {
				t.Fatal("nothing was written out")
			}
			path := installReference(t, tc.doc)
			f, warnings, err := config.Load(path)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			for _, w := range warnings {
				t.Logf("warning: %s", w)
			}
			out, err := exec.Command(xksproxy, "validate", "--config", path).CombinedOutput()
			if err != nil || !strings.Contains(string(out), path+": valid") {
				t.Fatalf("xksproxy validate --config: %v\n%s", err, out)
			}
			ac, err := app.FromFile(context.Background(), f, "xksproxy test", nil, nil)
			if err != nil {
				t.Fatalf("app.FromFile: %v", err)
			}
			if ac.Cutover == nil {
				t.Fatal("no migration settings: the reference shows two backends and [cutover]")
			}
			if tc.name == "as shipped" {
				base = &ac
				return
			}
			if base == nil {
				t.Fatal("the file as shipped did not load")
			}
			sameCutover(t, *base.Cutover, *ac.Cutover)
			if ac.Fleet != nil {
				sameFleet(t, ac)
			}
		})
	}
}

// sameCutover: the migration settings after the controller's defaults are the same whether the
// shown defaults are left out or written.
func sameCutover(t *testing.T, left, written cutover.Config) {
	t.Helper()
	settle := func(c cutover.Config) cutover.Config {
		if err := c.CheckAndSetDefaults(); err != nil {
			t.Fatalf("cutover settings: %v", err)
		}
		return c
	}
	a, b := settle(left), settle(written)
	type view struct {
		Source, Target, SourceACL, TargetACL, Journal string
		Select                                        cutover.Selection
		Pace                                          cutover.PaceConfig
		RightsSyncRate                                float64
		ShadowDuration                                time.Duration
		SampleRate                                    float64
		Probation                                     [3]string
		MinRequests                                   int
		Revoke, Everyone                              bool
	}
	v := func(c cutover.Config) view {
		if len(c.Select.Keys) == 0 {
			c.Select.Keys = nil // keys = [] written, or left out
		}
		return view{
			Source: c.Source.Name, Target: c.Target.Name, SourceACL: c.Source.ACL, TargetACL: c.Target.ACL,
			Journal: filepath.Base(c.JournalPath), Select: c.Select, Pace: c.Pace,
			RightsSyncRate: c.RightsSync.Rate, ShadowDuration: c.Shadow.Duration, SampleRate: *c.Shadow.SampleRate,
			Probation:   [3]string{c.Probation.Duration.String(), fmt.Sprint(*c.Probation.MaxErrorRate), c.Probation.MaxP99.String()},
			MinRequests: *c.Probation.MinRequests, Revoke: c.RevokeSourceGrantsOnFinalize, Everyone: c.GrantEveryoneForServiceKeys,
		}
	}
	if va, vb := v(a), v(b); !reflect.DeepEqual(va, vb) {
		t.Errorf("the shown [cutover] defaults differ from the controller's:\nleft out: %+v\nwritten:  %+v", va, vb)
	}
}

// sameFleet: the shown [fleet] defaults are the fleet member's own.
func sameFleet(t *testing.T, ac app.Config) {
	t.Helper()
	written := *ac.Fleet
	left := fleet.Config{Endpoints: written.Endpoints}
	for _, c := range []*fleet.Config{&written, &left} {
		if err := c.CheckAndSetDefaults(); err != nil {
			t.Fatalf("fleet settings: %v", err)
		}
	}
	type view struct {
		Member, KeyPrefix, Address string
		LeaseTTL, DialTimeout      time.Duration
	}
	v := func(c fleet.Config) view {
		return view{c.Member, c.KeyPrefix, c.Address, c.LeaseTTL, c.DialTimeout}
	}
	if v(written) != v(left) {
		t.Errorf("the shown [fleet] defaults differ from fleet.Config's:\nwritten:  %+v\nleft out: %+v", v(written), v(left))
	}
}
