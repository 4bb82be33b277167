package deploy_test

import (
	"os"
	"strings"
	"testing"
)

// A minimal block-YAML reader for our own manifests and rules (go.mod has no
// YAML module yet): mappings, sequences, plain/quoted scalars, "|" block
// scalars, flow "[a, b]" and "{}", comments and "---". Scalars stay strings.
// Anything else is an error, so a malformed file fails the test.

type yline struct {
	indent int
	text   string
	no     int
}

func readYAML(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := parseYAML(string(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return docs
}

func parseYAML(src string) ([]any, error) {
	var docs []any
	var cur []yline
	raw := strings.Split(src, "\n")
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		p := &yparser{lines: cur}
		v, err := p.block(cur[0].indent)
		if err != nil {
			return err
		}
		if p.i != len(p.lines) {
			return yerr(p.lines[p.i], "unexpected indentation")
		}
		docs = append(docs, v)
		cur = nil
		return nil
	}
	for i, l := range raw {
		if strings.Contains(l, "\t") && strings.TrimSpace(l) != "" && strings.HasPrefix(strings.TrimLeft(l, " "), "\t") {
			return nil, yerr(yline{no: i + 1}, "tab indentation")
		}
		if strings.TrimSpace(l) == "---" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		ind := len(l) - len(strings.TrimLeft(l, " "))
		cur = append(cur, yline{indent: ind, text: strings.TrimRight(l[ind:], " \r"), no: i + 1})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

type yparser struct {
	lines []yline
	i     int
}

type yamlError struct {
	no  int
	msg string
}

func (e *yamlError) Error() string { return "line " + itoa(e.no) + ": " + e.msg }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func yerr(l yline, msg string) error { return &yamlError{l.no, msg} }

// skip moves past blank and comment lines.
func (p *yparser) skip() {
	for p.i < len(p.lines) {
		t := p.lines[p.i].text
		if t == "" || strings.HasPrefix(t, "#") {
			p.i++
			continue
		}
		return
	}
}

func (p *yparser) block(indent int) (any, error) {
	p.skip()
	if p.i >= len(p.lines) {
		return nil, nil
	}
	l := p.lines[p.i]
	if l.indent != indent {
		return nil, yerr(l, "bad indentation")
	}
	if l.text == "-" || strings.HasPrefix(l.text, "- ") {
		return p.seq(indent)
	}
	return p.mapping(indent)
}

func (p *yparser) seq(indent int) (any, error) {
	var out []any
	for {
		p.skip()
		if p.i >= len(p.lines) || p.lines[p.i].indent < indent {
			return out, nil
		}
		l := p.lines[p.i]
		if l.indent != indent || !(l.text == "-" || strings.HasPrefix(l.text, "- ")) {
			return nil, yerr(l, "expected a sequence item")
		}
		rest := strings.TrimPrefix(strings.TrimPrefix(l.text, "-"), " ")
		if rest == "" {
			p.i++
			v, err := p.block(p.nextIndent())
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			continue
		}
		if isMapEntry(rest) {
			// "- key: v" opens a mapping indented past the dash.
			p.lines[p.i] = yline{indent: indent + 2 + len(rest) - len(strings.TrimLeft(rest, " ")), text: strings.TrimLeft(rest, " "), no: l.no}
			v, err := p.mapping(p.lines[p.i].indent)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			continue
		}
		p.i++
		v, err := scalar(l, rest)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

func (p *yparser) nextIndent() int {
	p.skip()
	if p.i < len(p.lines) {
		return p.lines[p.i].indent
	}
	return 0
}

func isMapEntry(s string) bool {
	if strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `'`) {
		q := s[:1]
		end := strings.Index(s[1:], q)
		return end >= 0 && strings.HasPrefix(s[end+2:], ":")
	}
	k, _, ok := strings.Cut(s, ":")
	return ok && !strings.ContainsAny(k, " []{}") && (strings.HasSuffix(s, ":") || strings.Contains(s, ": "))
}

func (p *yparser) mapping(indent int) (any, error) {
	out := map[string]any{}
	for {
		p.skip()
		if p.i >= len(p.lines) || p.lines[p.i].indent < indent {
			return out, nil
		}
		l := p.lines[p.i]
		if l.indent != indent {
			return nil, yerr(l, "bad indentation in mapping")
		}
		if !isMapEntry(l.text) {
			return nil, yerr(l, "expected key: value")
		}
		var key, rest string
		if q := l.text[:1]; q == `"` || q == `'` {
			end := strings.Index(l.text[1:], q) + 1
			key, rest = l.text[1:end], strings.TrimPrefix(l.text[end+1:], ":")
		} else {
			key, rest, _ = strings.Cut(l.text, ":")
		}
		rest = strings.TrimSpace(rest)
		if _, dup := out[key]; dup {
			return nil, yerr(l, "duplicate key "+key)
		}
		p.i++
		switch {
		case rest == "|" || rest == "|-" || rest == ">":
			var sb strings.Builder
			bi := -1
			for p.i < len(p.lines) {
				n := p.lines[p.i]
				if n.text != "" && n.indent <= indent {
					break
				}
				if bi < 0 && n.text != "" {
					bi = n.indent
				}
				if n.text != "" {
					sb.WriteString(strings.Repeat(" ", n.indent-bi))
				}
				sb.WriteString(n.text + "\n")
				p.i++
			}
			out[key] = sb.String()
		case rest == "" || strings.HasPrefix(rest, "#"):
			p.skip()
			if p.i >= len(p.lines) || p.lines[p.i].indent < indent ||
				(p.lines[p.i].indent == indent && !strings.HasPrefix(p.lines[p.i].text, "- ")) {
				out[key] = nil
				continue
			}
			v, err := p.block(p.lines[p.i].indent)
			if err != nil {
				return nil, err
			}
			out[key] = v
		default:
			v, err := scalar(l, rest)
			if err != nil {
				return nil, err
			}
			out[key] = v
		}
	}
}

func scalar(l yline, s string) (any, error) {
	switch {
	case strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `'`):
		q := s[:1]
		end := strings.LastIndex(s, q)
		if end == 0 {
			return nil, yerr(l, "unterminated string")
		}
		if tail := strings.TrimSpace(s[end+1:]); tail != "" && !strings.HasPrefix(tail, "#") {
			return nil, yerr(l, "text after string")
		}
		return s[1:end], nil
	case s == "{}":
		return map[string]any{}, nil
	case strings.HasPrefix(s, "["):
		end := strings.LastIndex(s, "]")
		if end < 0 {
			return nil, yerr(l, "unterminated flow sequence")
		}
		var out []any
		for _, part := range strings.Split(s[1:end], ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, strings.Trim(part, `"'`))
			}
		}
		return out, nil
	case strings.HasPrefix(s, "{") || strings.HasPrefix(s, "&") || strings.HasPrefix(s, "*"):
		return nil, yerr(l, "unsupported YAML construct")
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s, nil
}

// get walks nested mappings.
func get(t *testing.T, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("expected a mapping at %q", k)
		}
		v = m[k]
	}
	return v
}

func list(t *testing.T, v any) []any {
	t.Helper()
	l, ok := v.([]any)
	if !ok || len(l) == 0 {
		t.Fatalf("expected a non-empty sequence, got %T", v)
	}
	return l
}

func str(t *testing.T, v any) string {
	t.Helper()
	s, ok := v.(string)
	if !ok {
		t.Fatalf("expected a scalar, got %T", v)
	}
	return s
}

func TestYAMLReader(t *testing.T) {
	tests := []struct {
		name, src string
		ok        bool
	}{
		{"map and list", "a: 1\nb:\n  - x\n  - k: v\n    j: w\nc: |\n  line\n", true},
		{"tab indent", "a:\n\tb: 1\n", false},
		{"bad indent", "a:\n    b: 1\n  c: 2\n", false},
		{"duplicate", "a: 1\na: 2\n", false},
		{"anchor", "a: &x 1\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseYAML(tc.src)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
