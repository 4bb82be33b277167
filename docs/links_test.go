// Package docs_test checks the repository's documentation: every relative link and every file
// path it names exists, and every #fragment names a heading of its page. A moved section or a
// renamed file breaks a reader's path through the docs without any Go code failing.
package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// pages are the documents checked, relative to the repository root.
var pages = []string{
	"README.md", "CHANGELOG.md", "docs/*.md", "deploy/README.md", "bench/README.md",
}

var (
	// [text](target) and ![alt](target); a target never holds spaces here.
	linkRe = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)\)`)
	// A repository path in backticks: `deploy/examples/fleet.toml`, `cmd/kmsemu`. Only words
	// with a slash and no glob, placeholder or absolute root (those are host paths such as
	// /etc/xksproxy, URL paths or patterns, not files of this repository).
	codePathRe = regexp.MustCompile("`((?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+/?)`")
	fenceRe    = regexp.MustCompile("(?m)^```")
	headingRe  = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
)

// repoRoot is the repository root seen from this package's directory.
const repoRoot = ".."

func TestRelativeLinks(t *testing.T) {
	var files []string
	for _, p := range pages {
		m, err := filepath.Glob(filepath.Join(repoRoot, p))
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			t.Errorf("%s: no such document", p)
		}
		files = append(files, m...)
	}
	for _, file := range files {
		rel, _ := filepath.Rel(repoRoot, file)
		t.Run(rel, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			prose := stripFences(string(b))
			for _, m := range linkRe.FindAllStringSubmatch(prose, -1) {
				if msg := checkLink(file, m[1]); msg != "" {
					t.Errorf("link (%s): %s", m[1], msg)
				}
			}
			for _, m := range codePathRe.FindAllStringSubmatch(prose, -1) {
				if !pathExists(file, m[1]) {
					t.Errorf("`%s`: no such file or directory in the repository (from %s or the repository root)", m[1], rel)
				}
			}
		})
	}
}

// checkLink returns what is wrong with a link target in the page at file ("" when it leads
// somewhere).
func checkLink(file, target string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return "" // outside the repository: not checked here
	}
	path, frag, _ := strings.Cut(target, "#")
	dest := file
	if path != "" {
		if strings.HasPrefix(path, "/") {
			return "absolute path: write it relative to the page"
		}
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
		st, err := os.Stat(dest)
		if err != nil {
			return "no such file"
		}
		if st.IsDir() {
			if frag != "" {
				return "a fragment on a directory"
			}
			return ""
		}
	}
	if frag == "" || !strings.HasSuffix(dest, ".md") {
		return ""
	}
	b, err := os.ReadFile(dest)
	if err != nil {
		return err.Error()
	}
	for _, a := range anchors(string(b)) {
		if a == frag {
			return ""
		}
	}
	return "no heading of " + filepath.Base(dest) + " has the anchor #" + frag
}

// pathExists reports whether p, when it is a path into the repository, names a file or
// directory there. Prose names files relative to the page or to the repository root; a word whose
// first segment is neither a directory or file beside the page nor one at the root (net/http,
// http/1.1, kubernetes.io/tls) is not a path of ours and passes.
func pathExists(file, p string) bool {
	if strings.ContainsAny(p, "*<>{}$") {
		return true
	}
	first, _, _ := strings.Cut(p, "/")
	claimed := false
	for _, base := range []string{filepath.Dir(file), repoRoot} {
		if _, err := os.Stat(filepath.Join(base, first)); err != nil {
			continue
		}
		claimed = true
		if _, err := os.Stat(filepath.Join(base, filepath.FromSlash(p))); err == nil {
			return true
		}
	}
	return !claimed
}

// stripFences drops fenced code blocks: commands and sample output name host paths and files a
// reader creates, not files of the repository.
func stripFences(s string) string {
	parts := fenceRe.Split(s, -1)
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 0 {
			b.WriteString(p)
		}
	}
	return b.String()
}

// anchors are the fragments GitHub gives a page's headings: lower case, letters, digits,
// spaces turned into hyphens, hyphens and underscores kept, everything else dropped; a repeated
// heading gets -1, -2, ….
func anchors(doc string) []string {
	seen := map[string]int{}
	var out []string
	for _, m := range headingRe.FindAllStringSubmatch(stripFences(doc), -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			out = append(out, a+"-"+strconv.Itoa(n))
		} else {
			out = append(out, a)
		}
		seen[a]++
	}
	return out
}

// TestAnchors pins the anchor rule on headings like the ones the docs use.
func TestAnchors(t *testing.T) {
	doc := "# Operating xksproxy\n## Runbook: A → B, with rollback\n```\n# not a heading\n```\n" +
		"## Fleet mode\n## Fleet mode\n### `[cutover]` keys\n"
	want := []string{"operating-xksproxy", "runbook-a--b-with-rollback", "fleet-mode", "fleet-mode-1", "cutover-keys"}
	got := anchors(doc)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("anchors = %q, want %q", got, want)
	}
	for _, tc := range []struct{ target, want string }{
		{"#fleet-mode-1", ""},
		{"#fleet", "no heading"},
	} {
		dir := t.TempDir()
		f := filepath.Join(dir, "x.md")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := checkLink(f, tc.target); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("checkLink(%q) = %q, want %q", tc.target, got, tc.want)
		}
	}
}

// TestPathCheck pins which backticked words are taken for repository paths.
func TestPathCheck(t *testing.T) {
	page := filepath.Join(repoRoot, "deploy", "README.md")
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"deploy/README.md", true},
		{"examples/fleet.toml", true}, // beside the page
		{"deploy/examples/none.toml", false},
		{"kubernetes/none.yaml", false},
		{"net/http", true}, // not a path of this repository
		{"cmd/xksproxy/validate*.go", true},
	} {
		if got := pathExists(page, tc.path); got != tc.ok {
			t.Errorf("pathExists(%q) = %v, want %v", tc.path, got, tc.ok)
		}
	}
}

// TestReadmeForNewcomers keeps README.md what a newcomer reads in ten minutes: at most 250 lines,
// none over 120 characters, and no build hashes (history is CHANGELOG.md's).
func TestReadmeForNewcomers(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) > 250 {
		t.Errorf("README.md has %d lines; at most 250: move detail to docs/ (operators: docs/operating.md)", len(lines))
	}
	hashRe := regexp.MustCompile(`\b[0-9a-f]{7,40}\b`)
	for i, l := range lines {
		if n := len([]rune(l)); n > 120 {
			t.Errorf("README.md:%d: %d characters; at most 120", i+1, n)
		}
		for _, h := range hashRe.FindAllString(l, -1) {
			if strings.ContainsAny(h, "0123456789") && strings.ContainsAny(h, "abcdef") {
				t.Errorf("README.md:%d: %q looks like a build hash: history goes to CHANGELOG.md", i+1, h)
			}
		}
	}
}
