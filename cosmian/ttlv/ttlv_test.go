package ttlv

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fillPlaceholders replaces the vector runner's {{…}} captures with plausible values: hex for
// byte strings, an id for text.
func fillPlaceholders(b []byte) []byte {
	r := strings.NewReplacer(
		"{{key_id}}", "0f1e2d3c-aaaa-4bbb-8ccc-000000000001",
		"{{ciphertext}}", "00112233445566778899AABBCCDDEEFF0011",
		"{{nonce}}", "000102030405060708090A0B",
		"{{auth_tag}}", "F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF",
	)
	return []byte(r.Replace(string(b)))
}

// generic decodes JSON into a comparable generic tree, normalising the optional
// "type":"Structure" and the letter case of hex strings.
func generic(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	return normalise(v)
}

func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x["type"] == "Structure" {
			delete(x, "type")
		}
		if x["type"] == "ByteString" {
			if s, ok := x["value"].(string); ok {
				x["value"] = strings.ToUpper(s)
			}
		}
		for k, e := range x {
			x[k] = normalise(e)
		}
		return x
	case []any:
		for i := range x {
			x[i] = normalise(x[i])
		}
		return x
	}
	return v
}

func TestFixturesRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/fixtures/*.json")
	if err != nil || len(files) < 10 {
		t.Fatalf("fixtures missing: %v (%d)", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in := fillPlaceholders(raw)
			n, err := Unmarshal(in)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			out, err := Marshal(n)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			want, _ := json.Marshal(generic(t, in))
			got, _ := json.Marshal(generic(t, out))
			if !bytes.Equal(want, got) {
				t.Fatalf("re-encoded tree differs\nwant %s\n got %s", want, got)
			}
			n2, err := Unmarshal(out)
			if err != nil || !Equal(n, n2) {
				t.Fatalf("second decode differs: %v", err)
			}
		})
	}
}

func TestFixtureShapes(t *testing.T) {
	raw, err := os.ReadFile("testdata/fixtures/test_data__vectors__fips__kmip_operations__import_key__step1_import.json")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := n.Path("SymmetricKey", "KeyBlock", "KeyValue", "KeyMaterial", "Key")
	if !ok || key.Type != ByteString || len(key.Bytes) != 32 || key.Bytes[0] != 0xAA {
		t.Fatalf("key material not found as 32-byte ByteString: %v", key)
	}
	ad, ok := n.Path("Attributes", "ActivationDate")
	if !ok || !ad.Time.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("ActivationDate = %v", ad)
	}
	if re, _ := n.Child("ReplaceExisting"); re.Type != Boolean || re.Bool {
		t.Fatalf("ReplaceExisting = %v", re)
	}
	// Wipe zeroes the decoded key material in place.
	n.Wipe()
	key, _ = n.Path("SymmetricKey", "KeyBlock", "KeyValue", "KeyMaterial", "Key")
	if !bytes.Equal(key.Bytes, make([]byte, 32)) {
		t.Fatal("Wipe left key material")
	}
	if strings.Contains(n.String(), "AABB") {
		t.Fatal("String() leaks byte strings")
	}
}

func TestEncodingRules(t *testing.T) {
	date := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		node Node
		want string
	}{
		{"structure has no type", Struct("Create", Enum("ObjectType", "SymmetricKey")),
			`{"tag":"Create","value":[{"tag":"ObjectType","type":"Enumeration","value":"SymmetricKey"}]}`},
		{"empty structure", Struct("Attributes"), `{"tag":"Attributes","value":[]}`},
		{"integer", Int("CryptographicLength", 256), `{"tag":"CryptographicLength","type":"Integer","value":256}`},
		{"long integer as 0x+16 hex", Long("UsageLimitsCount", 255), `{"tag":"UsageLimitsCount","type":"LongInteger","value":"0x00000000000000FF"}`},
		{"negative long", Long("X", -1), `{"tag":"X","type":"LongInteger","value":"0xFFFFFFFFFFFFFFFF"}`},
		{"bytes upper hex", Bytes("Data", []byte{0xab, 0x01}), `{"tag":"Data","type":"ByteString","value":"AB01"}`},
		{"datetime rfc3339 utc", Date("ActivationDate", date.In(time.FixedZone("x", 3600))), `{"tag":"ActivationDate","type":"DateTime","value":"2024-01-01T00:00:00Z"}`},
		{"bool", Bool("ReplaceExisting", true), `{"tag":"ReplaceExisting","type":"Boolean","value":true}`},
		{"text escapes", Text("AttributeValue", `["t1"]`), `{"tag":"AttributeValue","type":"TextString","value":"[\"t1\"]"}`},
		{"unnamed enum", Enum("Tag", "0x0000000A"), `{"tag":"Tag","type":"Enumeration","value":"0x0000000A"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Marshal(tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			back, err := Unmarshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if !Equal(back, tc.node) && tc.node.Type != DateTime {
				t.Fatalf("round trip differs: %v vs %v", back, tc.node)
			}
		})
	}
}

func TestDecodingInputForms(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		check func(Node) bool
	}{
		{"integer hex 8", `{"tag":"I","type":"Integer","value":"0x0000000C"}`, func(n Node) bool { return n.Int == 12 }},
		{"integer hex 8 negative", `{"tag":"I","type":"Integer","value":"0xFFFFFFFF"}`, func(n Node) bool { return n.Int == -1 }},
		{"long from number", `{"tag":"L","type":"LongInteger","value":42}`, func(n Node) bool { return n.Int == 42 }},
		{"bytes lower case", `{"tag":"B","type":"ByteString","value":"abcd"}`, func(n Node) bool { return bytes.Equal(n.Bytes, []byte{0xab, 0xcd}) }},
		{"datetime hex seconds", `{"tag":"D","type":"DateTime","value":"0x0000000065920080"}`, func(n Node) bool { return n.Time.Unix() == 0x65920080 }},
		{"datetime offset", `{"tag":"D","type":"DateTime","value":"2024-01-01T01:00:00+01:00"}`, func(n Node) bool { return n.Time.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) }},
		{"enum numeric", `{"tag":"E","type":"Enumeration","value":10}`, func(n Node) bool { return n.Str == "0x0000000A" }},
		{"type defaults to structure", `{"tag":"S","value":[]}`, func(n Node) bool { return n.Type == Structure }},
		{"explicit structure type", `{"tag":"S","type":"Structure","value":[{"tag":"T","type":"TextString","value":"x"}]}`, func(n Node) bool { return len(n.Children) == 1 }},
		{"whitespace", " {\n \"tag\" : \"T\" , \"type\":\"TextString\",\"value\":\"\\u00e9\"} \n", func(n Node) bool { return n.Str == "é" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Unmarshal([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(n) {
				t.Fatalf("unexpected node %v", n)
			}
		})
	}
}

func TestDecodingErrors(t *testing.T) {
	deep := strings.Repeat(`{"tag":"S","value":[`, MaxDepth+2) + strings.Repeat(`]}`, MaxDepth+2)
	tests := map[string]string{
		"type after value":    `{"tag":"T","value":"x","type":"TextString"}`,
		"scalar without type": `{"tag":"T","value":"x"}`,
		"unknown type":        `{"tag":"T","type":"Float","value":1}`,
		"unknown key":         `{"tag":"T","type":"TextString","value":"x","extra":1}`,
		"missing tag":         `{"type":"TextString","value":"x"}`,
		"missing value":       `{"tag":"T","type":"TextString"}`,
		"duplicate value":     `{"tag":"T","type":"TextString","value":"x","value":"y"}`,
		"odd hex":             `{"tag":"B","type":"ByteString","value":"ABC"}`,
		"bad hex":             `{"tag":"B","type":"ByteString","value":"ZZ"}`,
		"integer overflow":    `{"tag":"I","type":"Integer","value":4294967296}`,
		"integer fraction":    `{"tag":"I","type":"Integer","value":1.5}`,
		"integer hex 4":       `{"tag":"I","type":"Integer","value":"0x000C"}`,
		"bad date":            `{"tag":"D","type":"DateTime","value":"yesterday"}`,
		"bad bool":            `{"tag":"B","type":"Boolean","value":"true"}`,
		"trailing data":       `{"tag":"T","type":"TextString","value":"x"} {}`,
		"unterminated":        `{"tag":"T","type":"TextString","value":"x`,
		"too deep":            deep,
		"empty":               ``,
		"array root":          `[]`,
		"null value":          `{"tag":"T","type":"TextString","value":null}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Unmarshal([]byte(in))
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("want ErrSyntax, got %v", err)
			}
		})
	}
}

func FuzzUnmarshal(f *testing.F) {
	files, _ := filepath.Glob("testdata/fixtures/*.json")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(fillPlaceholders(b))
		}
	}
	f.Add([]byte(`{"tag":"X","type":"LongInteger","value":"0x00000000000000FF"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := Unmarshal(data)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same tree.
		out, err := Marshal(n)
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		back, err := Unmarshal(out)
		if err != nil {
			t.Fatalf("own output does not decode: %v\n%s", err, out)
		}
		if !Equal(n, back) {
			t.Fatalf("round trip differs:\n%v\n%v", n, back)
		}
	})
}

func BenchmarkUnmarshalImport(b *testing.B) {
	raw, err := os.ReadFile("testdata/fixtures/test_data__vectors__fips__kmip_operations__import_key__step1_import.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(raw); err != nil {
			b.Fatal(err)
		}
	}
}
