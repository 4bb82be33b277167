package config

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions knows the line of every key and table header of a file, named as the checker names
// fields: "backend[1].xks_url", "prefix[0].credential[1]".
//
// BurntSushi/toml, which decodes the file, keeps key positions to itself and records one
// position per key name, so the second [[backend]]'s keys overwrite the first's; go-toml's
// parser gives every expression its place in the input. It only locates: decoding and its
// errors stay BurntSushi's.
type positions struct {
	lines map[string]int      // indexed path → line
	plain map[string][]string // path without indices → indexed paths, in file order
}

// locate indexes data, which BurntSushi has already parsed. A document go-toml does not parse
// (the two may differ on an edge of the grammar) keeps the positions found before the
// disagreement: messages then lose their line, nothing else.
func locate(data []byte) *positions {
	ps := &positions{lines: map[string]int{}, plain: map[string][]string{}}
	var starts []int // offset of each line's first byte
	starts = append(starts, 0)
	for i, b := range data {
		if b == '\n' {
			starts = append(starts, i+1)
		}
	}
	line := func(n *unstable.Node) int {
		off := int(n.Raw.Offset)
		return sort.Search(len(starts), func(i int) bool { return starts[i] > off })
	}
	aot := map[string]int{} // indexed path of an array of tables → entries so far
	var p unstable.Parser
	p.Reset(data)
	table := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			it := e.Key()
			path, first := "", (*unstable.Node)(nil)
			for it.Next() {
				k := it.Node()
				if first == nil {
					first = k
				}
				path = join(path, string(k.Data))
				if it.IsLast() && e.Kind == unstable.ArrayTable {
					n := aot[path] // a new entry of this array
					aot[path] = n + 1
					path += "[" + strconv.Itoa(n) + "]"
				} else if n := aot[path]; n > 0 {
					path += "[" + strconv.Itoa(n-1) + "]" // inside the array's latest entry
				}
			}
			if first != nil {
				ps.add(path, line(first))
			}
			table = path
		case unstable.KeyValue:
			it := e.Key()
			path, first := table, (*unstable.Node)(nil)
			for it.Next() {
				if first == nil {
					first = it.Node()
				}
				path = join(path, string(it.Node().Data))
			}
			if first != nil {
				ps.value(path, line(first), e.Value(), line)
			}
		}
	}
	return ps
}

// value records a key at line and, for an inline table or an array of them, the keys inside.
func (ps *positions) value(path string, at int, v *unstable.Node, line func(*unstable.Node) int) {
	ps.add(path, at)
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			kv := it.Node()
			k := kv.Key()
			sub := path
			var first *unstable.Node
			for k.Next() {
				if first == nil {
					first = k.Node()
				}
				sub = join(sub, string(k.Node().Data))
			}
			if first != nil {
				ps.value(sub, line(first), kv.Value(), line)
			}
		}
	case unstable.Array:
		it := v.Children()
		for i := 0; it.Next(); i++ {
			if el := it.Node(); el.Kind == unstable.InlineTable {
				ps.value(path+"["+strconv.Itoa(i)+"]", at, el, line)
			}
		}
	}
}

func (ps *positions) add(path string, line int) {
	if _, dup := ps.lines[path]; dup {
		return
	}
	ps.lines[path] = line
	plain := stripIndices(path)
	ps.plain[plain] = append(ps.plain[plain], path)
}

// line returns the line of field, else of the nearest enclosing key or table that is written
// (a required key that is missing is reported at its table's header), else 0.
func (ps *positions) line(field string) int {
	if ps == nil {
		return 0
	}
	for field != "" {
		if l, ok := ps.lines[field]; ok {
			return l
		}
		// A secret is reported as "x.secret_access_key" however it was given.
		for _, alt := range []string{field + "_env", field + "_file"} {
			if l, ok := ps.lines[alt]; ok {
				return l
			}
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			return 0
		}
		field = field[:i]
	}
	return 0
}

// occurrences returns the indexed paths of a key named without indices ("backend.nmae"), in
// file order.
func (ps *positions) occurrences(plain string) []string {
	if ps == nil {
		return nil
	}
	return ps.plain[plain]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// stripIndices turns "prefix[0].credential[1].created" into "prefix.credential.created".
func stripIndices(path string) string {
	if !strings.Contains(path, "[") {
		return path
	}
	var b strings.Builder
	skip := false
	for _, r := range path {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}
