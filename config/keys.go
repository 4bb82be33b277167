package config

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// unknown reports every key the file's structure does not have, at each place it is written,
// with the key it most likely meant. Under an unknown table only the table is reported.
func (c *checker) unknown(keys []toml.Key) {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		seen[k.String()] = true
	}
	for _, k := range keys {
		if len(k) > 1 && seen[k[:len(k)-1].String()] {
			continue
		}
		msg := "unknown key"
		if s := suggest(k); s != "" {
			msg += "; did you mean " + s + "?"
		}
		occ := c.pos.occurrences(k.String())
		if len(occ) == 0 {
			occ = []string{k.String()}
		}
		for _, field := range occ {
			c.fail(field, "%s", msg)
		}
	}
}

// suggest names the key k most likely meant: a known key of the same table whose name is a
// few edits away, else a key of that name in another table ("server.listen").
func suggest(k toml.Key) string {
	name := k[len(k)-1]
	parent := strings.Join(k[:len(k)-1], ".")
	best, bestD := "", len(name)/3+1
	if bestD < 2 {
		bestD = 2
	}
	for _, known := range keysOf(fieldType(parent)) {
		if d := editDistance(name, known); d <= bestD && (best == "" || d < bestD) {
			best, bestD = known, d
		}
	}
	if best != "" {
		return strconv.Quote(best)
	}
	var elsewhere []string
	var walk func(prefix string, t reflect.Type, depth int)
	walk = func(prefix string, t reflect.Type, depth int) {
		if depth > 4 {
			return
		}
		for _, key := range keysOf(t) {
			path := join(prefix, key)
			if key == name && path != k.String() {
				elsewhere = append(elsewhere, path)
			}
			walk(path, fieldType(path), depth+1)
		}
	}
	walk("", fieldType(""), 0) // in the order of File's fields: [server] before [admin]
	if len(elsewhere) > 0 {
		return elsewhere[0] + " (in another table)"
	}
	return ""
}

// fieldType is the Go type a key path without indices ("backend.timeout") decodes into, or nil.
func fieldType(path string) reflect.Type {
	t := reflect.TypeOf(File{})
	if path == "" {
		return t
	}
	for seg := range strings.SplitSeq(path, ".") {
		t = elem(t)
		if t.Kind() != reflect.Struct {
			return nil
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("toml"), ","); tag == seg && tag != "-" {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return nil
		}
	}
	return t
}

// elem strips pointers and slices: an array of tables' entries have the element's keys.
func elem(t reflect.Type) reflect.Type {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice) {
		t = t.Elem()
	}
	return t
}

// keysOf lists the keys of a table type (nil for anything else).
func keysOf(t reflect.Type) []string {
	t = elem(t)
	if t == nil || t.Kind() != reflect.Struct || t == reflect.TypeOf(Timestamp{}) {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

// editDistance is the Levenshtein distance of two short key names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// typeErrRE matches BurntSushi's type-mismatch text: `toml: line 17 (last key "a.b"): msg`.
var typeErrRE = regexp.MustCompile(`^(?:toml: )?line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns an error of decoding into File (a value of the wrong type, a bad duration
// or date) into a FieldError that names the entry. BurntSushi names the key without its array
// index and gives the line of the key's last occurrence; when the key is written in several
// entries, each candidate value is decoded alone into the same Go type, and the first that
// fails — decoding goes through the entries in order — is the one reported.
func decodeError(name string, pos *positions, tree map[string]any, err error) *FieldError {
	var key, msg string
	var line int
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key, msg, line = pe.LastKey, pe.Message, pe.Position.Line
	} else if m := typeErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		key, msg = m[2], m[3]
	} else {
		return &FieldError{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	occ := pos.occurrences(key)
	switch {
	case len(occ) == 1:
		return &FieldError{File: name, Line: pos.lines[occ[0]], Field: occ[0], Msg: msg}
	case len(occ) > 1:
		if t := fieldType(key); t != nil {
			for _, field := range occ {
				if v, ok := valueAt(tree, field); ok && !decodes(v, t) {
					return &FieldError{File: name, Line: pos.lines[field], Field: field, Msg: msg}
				}
			}
		}
		return &FieldError{File: name, Field: key, Msg: msg} // no line rather than a wrong one
	}
	return &FieldError{File: name, Line: line, Field: key, Msg: msg}
}

// decodes reports whether v, a value of the generic tree, decodes into a Go value of type t.
func decodes(v any, t reflect.Type) bool {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": v}); err != nil {
		return true // cannot tell: not the culprit
	}
	dst := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: t, Tag: `toml:"v"`}}))
	_, err := toml.Decode(buf.String(), dst.Interface())
	return err == nil
}

// valueAt finds an indexed path ("backend[1].timeout") in the generic tree.
func valueAt(tree map[string]any, path string) (any, bool) {
	var cur any = tree
	for seg := range strings.SplitSeq(path, ".") {
		name, idx := seg, -1
		if i := strings.IndexByte(seg, '['); i >= 0 && strings.HasSuffix(seg, "]") {
			n, err := strconv.Atoi(seg[i+1 : len(seg)-1])
			if err != nil {
				return nil, false
			}
			name, idx = seg[:i], n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[name]; !ok {
			return nil, false
		}
		if idx < 0 {
			continue
		}
		switch a := cur.(type) {
		case []map[string]any:
			if idx >= len(a) {
				return nil, false
			}
			cur = a[idx]
		case []any:
			if idx >= len(a) {
				return nil, false
			}
			cur = a[idx]
		default:
			return nil, false
		}
	}
	return cur, true
}
