// Package ttlv is the KMIP 2.1 JSON TTLV codec exactly as Cosmian KMS writes and reads it.
//
// A node is {"tag":…, "type":…, "value":…}. Cosmian's rules, which this codec follows:
//   - structures are written without "type"; on input "type" is optional and defaults to Structure;
//   - "type" must come before "value" (Cosmian's parser decides the value's type from an
//     already-seen "type");
//   - Integer is a JSON number (input also "0x" + 8 or 16 hex digits); LongInteger is written
//     "0x" + 16 upper-case hex digits (input: number or hex); ByteString is upper-case hex without
//     prefix (input any case); DateTime is RFC 3339 UTC (input RFC 3339 or "0x…" seconds);
//     Enumeration is the variant name, or "0x" + 8 hex digits when unnamed; Interval is a number;
//   - arrays are repeated sibling nodes with the same tag;
//   - the managed object is tagged with its object type ("SymmetricKey"), not "Object".
//
// The decoder is a small hand-written scanner rather than encoding/json so that hex key material is
// decoded straight from the input into a []byte that the caller can wipe (no intermediate strings
// the garbage collector would keep), and so that key order is observed as Cosmian's parser does.
package ttlv

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is a KMIP item type as named in JSON TTLV.
type Type string

// The KMIP 2.1 item types.
const (
	Structure        Type = "Structure"
	Integer          Type = "Integer"
	LongInteger      Type = "LongInteger"
	BigInteger       Type = "BigInteger"
	Enumeration      Type = "Enumeration"
	Boolean          Type = "Boolean"
	TextString       Type = "TextString"
	ByteString       Type = "ByteString"
	DateTime         Type = "DateTime"
	Interval         Type = "Interval"
	DateTimeExtended Type = "DateTimeExtended"
)

func (t Type) valid() bool {
	switch t {
	case Structure, Integer, LongInteger, BigInteger, Enumeration, Boolean, TextString, ByteString,
		DateTime, Interval, DateTimeExtended:
		return true
	}
	return false
}

// Node is one TTLV item. Exactly one value field is meaningful, chosen by Type:
// Children (Structure), Int (Integer, LongInteger, Interval, DateTimeExtended), Str (TextString,
// Enumeration), Bytes (ByteString, BigInteger as big-endian two's complement), Bool (Boolean),
// Time (DateTime).
type Node struct {
	Tag      string
	Type     Type
	Children []Node
	Int      int64
	Str      string
	Bytes    []byte
	Bool     bool
	Time     time.Time
}

// ErrSyntax is wrapped by every decoding error.
var ErrSyntax = errors.New("ttlv: invalid JSON TTLV")

// MaxDepth bounds structure nesting; real KMIP messages stay under 10 levels.
const MaxDepth = 32

// Constructors, so that requests read like the wire format.

// Struct builds a Structure node.
func Struct(tag string, children ...Node) Node {
	return Node{Tag: tag, Type: Structure, Children: children}
}

// Text builds a TextString node.
func Text(tag, s string) Node { return Node{Tag: tag, Type: TextString, Str: s} }

// Int builds an Integer node (KMIP Integer is 32-bit signed).
func Int(tag string, v int32) Node { return Node{Tag: tag, Type: Integer, Int: int64(v)} }

// Long builds a LongInteger node.
func Long(tag string, v int64) Node { return Node{Tag: tag, Type: LongInteger, Int: v} }

// Enum builds an Enumeration node from a variant name (or "0x0000000A" for unnamed values).
func Enum(tag, name string) Node { return Node{Tag: tag, Type: Enumeration, Str: name} }

// Bytes builds a ByteString node. The slice is not copied.
func Bytes(tag string, b []byte) Node { return Node{Tag: tag, Type: ByteString, Bytes: b} }

// Bool builds a Boolean node.
func Bool(tag string, v bool) Node { return Node{Tag: tag, Type: Boolean, Bool: v} }

// Date builds a DateTime node (second precision, UTC, as KMIP has it).
func Date(tag string, t time.Time) Node {
	return Node{Tag: tag, Type: DateTime, Time: t.UTC().Truncate(time.Second)}
}

// Child returns the first direct child with the given tag.
func (n Node) Child(tag string) (Node, bool) {
	for _, c := range n.Children {
		if c.Tag == tag {
			return c, true
		}
	}
	return Node{}, false
}

// All returns every direct child with the given tag (KMIP arrays are repeated siblings).
func (n Node) All(tag string) []Node {
	var out []Node
	for _, c := range n.Children {
		if c.Tag == tag {
			out = append(out, c)
		}
	}
	return out
}

// Path follows a chain of child tags (first match at each level).
func (n Node) Path(tags ...string) (Node, bool) {
	cur := n
	for _, t := range tags {
		c, ok := cur.Child(t)
		if !ok {
			return Node{}, false
		}
		cur = c
	}
	return cur, true
}

// Wipe zeroes every ByteString and BigInteger buffer in the tree. Call it once key material is no
// longer needed.
func (n *Node) Wipe() {
	clear(n.Bytes)
	for i := range n.Children {
		n.Children[i].Wipe()
	}
}

// Equal reports whether two trees are equivalent: same tags, types and values, in the same order.
func Equal(a, b Node) bool {
	if a.Tag != b.Tag || a.Type != b.Type || len(a.Children) != len(b.Children) {
		return false
	}
	switch a.Type {
	case Structure:
		for i := range a.Children {
			if !Equal(a.Children[i], b.Children[i]) {
				return false
			}
		}
		return true
	case Integer, LongInteger, Interval, DateTimeExtended:
		return a.Int == b.Int
	case TextString, Enumeration:
		return a.Str == b.Str
	case ByteString, BigInteger:
		return bytes.Equal(a.Bytes, b.Bytes)
	case Boolean:
		return a.Bool == b.Bool
	case DateTime:
		return a.Time.Equal(b.Time)
	}
	return false
}

// String renders the node for debugging with byte strings elided, so that key material cannot
// reach a log through %v.
func (n Node) String() string {
	var sb strings.Builder
	n.debug(&sb)
	return sb.String()
}

func (n Node) debug(sb *strings.Builder) {
	sb.WriteString(n.Tag)
	switch n.Type {
	case Structure:
		sb.WriteString("{")
		for i, c := range n.Children {
			if i > 0 {
				sb.WriteString(" ")
			}
			c.debug(sb)
		}
		sb.WriteString("}")
	case ByteString, BigInteger:
		fmt.Fprintf(sb, "=<%d bytes>", len(n.Bytes))
	case TextString, Enumeration:
		fmt.Fprintf(sb, "=%q", n.Str)
	case Boolean:
		fmt.Fprintf(sb, "=%t", n.Bool)
	case DateTime:
		sb.WriteString("=" + n.Time.UTC().Format(time.RFC3339))
	default:
		fmt.Fprintf(sb, "=%d", n.Int)
	}
}

// ---------------------------------------------------------------------------------------------
// Encoding

// Marshal encodes the node as compact JSON TTLV.
func Marshal(n Node) ([]byte, error) { return Append(nil, n) }

// Append appends the JSON TTLV encoding of n to dst.
func Append(dst []byte, n Node) ([]byte, error) { return appendNode(dst, n, 0) }

func appendNode(dst []byte, n Node, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, fmt.Errorf("ttlv: structure nested deeper than %d", MaxDepth)
	}
	if n.Tag == "" {
		return dst, errors.New("ttlv: node without tag")
	}
	dst = append(dst, `{"tag":`...)
	dst = appendJSONString(dst, n.Tag)
	if n.Type == "" || n.Type == Structure {
		dst = append(dst, `,"value":[`...)
		for i, c := range n.Children {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendNode(dst, c, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, "]}"...), nil
	}
	if !n.Type.valid() {
		return dst, fmt.Errorf("ttlv: node %s has unknown type %q", n.Tag, n.Type)
	}
	dst = append(dst, `,"type":"`...)
	dst = append(dst, n.Type...)
	dst = append(dst, `","value":`...)
	switch n.Type {
	case Integer:
		if n.Int < math.MinInt32 || n.Int > math.MaxInt32 {
			return dst, fmt.Errorf("ttlv: Integer %s out of 32-bit range", n.Tag)
		}
		dst = strconv.AppendInt(dst, n.Int, 10)
	case Interval:
		if n.Int < 0 || n.Int > math.MaxUint32 {
			return dst, fmt.Errorf("ttlv: Interval %s out of range", n.Tag)
		}
		dst = strconv.AppendInt(dst, n.Int, 10)
	case LongInteger, DateTimeExtended:
		dst = appendHex64(dst, uint64(n.Int))
	case BigInteger:
		dst = append(dst, `"0x`...)
		dst = appendUpperHex(dst, n.Bytes)
		dst = append(dst, '"')
	case Enumeration:
		if n.Str == "" {
			return dst, fmt.Errorf("ttlv: Enumeration %s is empty", n.Tag)
		}
		dst = appendJSONString(dst, n.Str)
	case TextString:
		dst = appendJSONString(dst, n.Str)
	case ByteString:
		dst = append(dst, '"')
		dst = appendUpperHex(dst, n.Bytes)
		dst = append(dst, '"')
	case Boolean:
		dst = strconv.AppendBool(dst, n.Bool)
	case DateTime:
		dst = append(dst, '"')
		dst = n.Time.UTC().AppendFormat(dst, time.RFC3339)
		dst = append(dst, '"')
	}
	return append(dst, '}'), nil
}

func appendHex64(dst []byte, v uint64) []byte {
	const digits = "0123456789ABCDEF"
	dst = append(dst, `"0x`...)
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, digits[(v>>uint(shift))&0xF])
	}
	return append(dst, '"')
}

func appendUpperHex(dst, b []byte) []byte {
	const digits = "0123456789ABCDEF"
	for _, c := range b {
		dst = append(dst, digits[c>>4], digits[c&0xF])
	}
	return dst
}

// appendJSONString quotes s as JSON (not Go) would, via encoding/json for correctness on
// control characters and invalid UTF-8; text values are short and not on a hot path.
func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

// ---------------------------------------------------------------------------------------------
// Decoding

// Unmarshal decodes one JSON TTLV node. The input must hold exactly one node (surrounding
// whitespace allowed). ByteString values are freshly allocated; the caller may Wipe them and may
// also wipe data afterwards.
func Unmarshal(data []byte) (Node, error) {
	d := decoder{data: data}
	d.ws()
	n, err := d.node(0)
	if err != nil {
		return Node{}, err
	}
	d.ws()
	if d.pos != len(d.data) {
		return Node{}, d.errf("trailing data after the node")
	}
	return n, nil
}

type decoder struct {
	data []byte
	pos  int
}

func (d *decoder) errf(format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrSyntax, d.pos, fmt.Sprintf(format, args...))
}

func (d *decoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) expect(c byte) error {
	d.ws()
	if d.pos >= len(d.data) || d.data[d.pos] != c {
		return d.errf("expected %q", c)
	}
	d.pos++
	return nil
}

func (d *decoder) peek() byte {
	d.ws()
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// rawString returns the bytes between the quotes of the next JSON string, and whether it contains
// escapes. It does not allocate.
func (d *decoder) rawString() ([]byte, bool, error) {
	if err := d.expect('"'); err != nil {
		return nil, false, err
	}
	start := d.pos
	escaped := false
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			d.pos += 2
		case c < 0x20:
			return nil, false, d.errf("control character in string")
		default:
			d.pos++
		}
	}
	return nil, false, d.errf("unterminated string")
}

func (d *decoder) str() (string, error) {
	d.ws()
	start := d.pos
	raw, escaped, err := d.rawString()
	if err != nil {
		return "", err
	}
	if !utf8.Valid(raw) {
		return "", d.errf("string is not valid UTF-8")
	}
	if !escaped {
		return string(raw), nil
	}
	var s string
	if err := json.Unmarshal(d.data[start:d.pos], &s); err != nil {
		return "", d.errf("bad string escape")
	}
	return s, nil
}

// number returns the raw text of a JSON number.
func (d *decoder) number() ([]byte, error) {
	d.ws()
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			d.pos++
			continue
		}
		break
	}
	if d.pos == start {
		return nil, d.errf("expected a number")
	}
	return d.data[start:d.pos], nil
}

// node decodes one {"tag","type","value"} object.
func (d *decoder) node(depth int) (Node, error) {
	if depth > MaxDepth {
		return Node{}, d.errf("structure nested deeper than %d", MaxDepth)
	}
	if err := d.expect('{'); err != nil {
		return Node{}, err
	}
	var n Node
	var seenTag, seenType, seenValue bool
	if d.peek() == '}' {
		return Node{}, d.errf("empty node")
	}
	for {
		key, err := d.str()
		if err != nil {
			return Node{}, err
		}
		if err := d.expect(':'); err != nil {
			return Node{}, err
		}
		switch key {
		case "tag":
			if seenTag {
				return Node{}, d.errf("duplicate \"tag\"")
			}
			seenTag = true
			if n.Tag, err = d.str(); err != nil {
				return Node{}, err
			}
			if n.Tag == "" {
				return Node{}, d.errf("empty tag")
			}
		case "type":
			if seenType {
				return Node{}, d.errf("duplicate \"type\"")
			}
			if seenValue {
				return Node{}, d.errf("\"type\" after \"value\" in node %q: Cosmian requires type first", n.Tag)
			}
			seenType = true
			t, err := d.str()
			if err != nil {
				return Node{}, err
			}
			n.Type = Type(t)
			if !n.Type.valid() {
				return Node{}, d.errf("unknown type %q", t)
			}
		case "value":
			if seenValue {
				return Node{}, d.errf("duplicate \"value\"")
			}
			seenValue = true
			if n.Type == "" {
				n.Type = Structure
			}
			if err := d.value(&n, depth); err != nil {
				return Node{}, err
			}
		default:
			return Node{}, d.errf("unknown key %q", key)
		}
		switch d.peek() {
		case ',':
			d.pos++
			continue
		case '}':
			d.pos++
		default:
			return Node{}, d.errf("expected ',' or '}'")
		}
		break
	}
	if !seenTag {
		return Node{}, d.errf("node without \"tag\"")
	}
	if !seenValue {
		return Node{}, d.errf("node %q without \"value\"", n.Tag)
	}
	return n, nil
}

func (d *decoder) value(n *Node, depth int) error {
	switch n.Type {
	case Structure:
		if err := d.expect('['); err != nil {
			return fmt.Errorf("%w (node %q: a Structure value is an array)", err, n.Tag)
		}
		if d.peek() == ']' {
			d.pos++
			n.Children = []Node{}
			return nil
		}
		for {
			c, err := d.node(depth + 1)
			if err != nil {
				return err
			}
			n.Children = append(n.Children, c)
			switch d.peek() {
			case ',':
				d.pos++
				continue
			case ']':
				d.pos++
				return nil
			default:
				return d.errf("expected ',' or ']' in %q", n.Tag)
			}
		}
	case Boolean:
		d.ws()
		switch {
		case bytes.HasPrefix(d.data[d.pos:], []byte("true")):
			n.Bool = true
			d.pos += 4
		case bytes.HasPrefix(d.data[d.pos:], []byte("false")):
			d.pos += 5
		default:
			return d.errf("Boolean %q is not true or false", n.Tag)
		}
		return nil
	case ByteString, BigInteger:
		raw, escaped, err := d.rawString()
		if err != nil {
			return err
		}
		if escaped {
			return d.errf("escape in hex string %q", n.Tag)
		}
		if n.Type == BigInteger {
			if len(raw) < 2 || raw[0] != '0' || (raw[1] != 'x' && raw[1] != 'X') {
				return d.errf("BigInteger %q must be 0x-prefixed hex", n.Tag)
			}
			raw = raw[2:]
		}
		if len(raw)%2 != 0 {
			return d.errf("odd-length hex in %q", n.Tag)
		}
		n.Bytes = make([]byte, len(raw)/2)
		if _, err := hex.Decode(n.Bytes, raw); err != nil {
			clear(n.Bytes)
			return d.errf("bad hex in %q", n.Tag)
		}
		return nil
	case TextString:
		s, err := d.str()
		if err != nil {
			return err
		}
		n.Str = s
		return nil
	case Enumeration:
		if c := d.peek(); c != '"' {
			num, err := d.number()
			if err != nil {
				return err
			}
			v, err := strconv.ParseUint(string(num), 10, 32)
			if err != nil {
				return d.errf("Enumeration %q out of range", n.Tag)
			}
			n.Str = fmt.Sprintf("0x%08X", v)
			return nil
		}
		s, err := d.str()
		if err != nil {
			return err
		}
		if s == "" {
			return d.errf("empty Enumeration %q", n.Tag)
		}
		if isHexLiteral(s) {
			v, err := strconv.ParseUint(s[2:], 16, 32)
			if err != nil {
				return d.errf("Enumeration %q out of range", n.Tag)
			}
			s = fmt.Sprintf("0x%08X", v)
		}
		n.Str = s
		return nil
	case Integer, Interval, LongInteger, DateTimeExtended:
		v, err := d.integer(n)
		if err != nil {
			return err
		}
		switch n.Type {
		case Integer:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return d.errf("Integer %q out of 32-bit range", n.Tag)
			}
		case Interval:
			if v < 0 || v > math.MaxUint32 {
				return d.errf("Interval %q out of range", n.Tag)
			}
		}
		n.Int = v
		return nil
	case DateTime:
		if d.peek() != '"' {
			num, err := d.number()
			if err != nil {
				return err
			}
			secs, err := strconv.ParseInt(string(num), 10, 64)
			if err != nil {
				return d.errf("DateTime %q is not a whole number of seconds", n.Tag)
			}
			n.Time = time.Unix(secs, 0).UTC()
			return nil
		}
		s, err := d.str()
		if err != nil {
			return err
		}
		if isHexLiteral(s) {
			secs, err := strconv.ParseInt(s[2:], 16, 64)
			if err != nil {
				return d.errf("DateTime %q: bad hex seconds", n.Tag)
			}
			n.Time = time.Unix(secs, 0).UTC()
			return nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return d.errf("DateTime %q is not RFC 3339", n.Tag)
		}
		n.Time = t.UTC()
		return nil
	}
	return d.errf("unsupported type %q", n.Type)
}

func isHexLiteral(s string) bool {
	return len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')
}

// integer reads a JSON number or a "0x…" hex string (8 or 16 digits, as Cosmian accepts).
func (d *decoder) integer(n *Node) (int64, error) {
	if d.peek() == '"' {
		s, err := d.str()
		if err != nil {
			return 0, err
		}
		if !isHexLiteral(s) || (len(s)-2 != 8 && len(s)-2 != 16) {
			return 0, d.errf("%s %q: string value must be 0x + 8 or 16 hex digits", n.Type, n.Tag)
		}
		u, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			return 0, d.errf("%s %q: bad hex", n.Type, n.Tag)
		}
		if len(s)-2 == 8 {
			if n.Type == Integer {
				return int64(int32(uint32(u))), nil
			}
			return int64(uint32(u)), nil
		}
		return int64(u), nil
	}
	num, err := d.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return 0, d.errf("%s %q is not a whole number", n.Type, n.Tag)
	}
	return v, nil
}
