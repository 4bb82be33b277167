package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docMetricRe finds a metric family named in prose: xks_… (a family ending in _* is a prefix).
var docMetricRe = regexp.MustCompile(`\bxks_[a-z0-9_]+\*?`)

// TestDocumentedMetricsAreExported: every xks_ metric the README, docs/ and this directory's
// README name is one the proxy exports, so that an operator's alert rule written from the docs
// selects something (the days → seconds rename is the case this catches). CHANGELOG.md names
// former metrics on purpose and is not read.
func TestDocumentedMetricsAreExported(t *testing.T) {
	known := map[string]bool{}
	names := exportedMetricNames(t)
	for _, n := range names {
		known[n] = true
	}
	keys := map[string]bool{} // configuration keys such as xks_url are not metrics
	_, all := configKeys()
	for _, k := range all {
		keys[k[strings.LastIndex(k, ".")+1:]] = true
	}
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md", "README.md", "examples/xksproxy.toml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range docMetricRe.FindAllString(string(b), -1) {
			if prefix, ok := strings.CutSuffix(n, "*"); ok {
				found := false
				for _, k := range names {
					found = found || strings.HasPrefix(k, prefix)
				}
				if !found {
					t.Errorf("%s: no exported metric starts with %s", f, prefix)
				}
				continue
			}
			if keys[n] {
				continue
			}
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suf); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("%s: %s is not a metric the proxy exports", f, n)
			}
		}
	}
}
