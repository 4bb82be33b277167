package kmsemu

import (
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// boolAttr returns the Boolean attribute tag of a GetAttributes reply; ok is false when absent.
func boolAttr(t *testing.T, e *env, uid, tag string) (v, ok bool) {
	t.Helper()
	resp := e.kmipOK("", ttlv.Struct("GetAttributes", uidNode(uid)))
	for _, a := range child(t, resp, "Attributes").Children {
		if a.Tag == tag {
			if a.Type != ttlv.Boolean {
				t.Fatalf("%s is a %v", tag, a.Type)
			}
			return a.Bool, true
		}
	}
	return false, false
}

func withExtractable(n ttlv.Node, ext, never *bool) ttlv.Node {
	for i := range n.Children {
		if n.Children[i].Tag == "Attributes" {
			if ext != nil {
				n.Children[i].Children = append(n.Children[i].Children, ttlv.Bool("Extractable", *ext))
			}
			if never != nil {
				n.Children[i].Children = append(n.Children[i].Children, ttlv.Bool("NeverExtractable", *never))
			}
		}
	}
	return n
}

func importReq(uid string, material []byte) ttlv.Node {
	return ttlv.Struct("Import",
		uidNode(uid),
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Struct("Attributes",
			ttlv.Enum("CryptographicAlgorithm", "AES"),
			ttlv.Int("CryptographicLength", int32(8*len(material))),
			ttlv.Int("CryptographicUsageMask", DefaultUsageMask),
			ttlv.Date("ActivationDate", time.Now().Add(-time.Hour)),
		),
		ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock",
			ttlv.Enum("KeyFormatType", "TransparentSymmetricKey"),
			ttlv.Struct("KeyValue", ttlv.Struct("KeyMaterial", ttlv.Bytes("Key", material))),
			ttlv.Enum("CryptographicAlgorithm", "AES"),
			ttlv.Int("CryptographicLength", int32(8*len(material))),
		)),
	)
}

// TestExtractable: every generation stores Extractable / NeverExtractable from Create, Import and
// seeding and returns them in GetAttributes; 5.28 fills them itself (Extractable defaults to
// true, NeverExtractable latches to !Extractable whatever the client sent) and refuses Get and
// Export of a key that is not extractable with 422 "Not_Extractable: DENIED", wrapped or not,
// Sensitive or not; older generations hand such a key out.
func TestExtractable(t *testing.T) {
	yes, no := true, false
	past := time.Now().Add(-time.Hour)
	material := []byte("0123456789abcdef0123456789abcdef")
	type keyCase struct {
		name      string
		make      func(e *env, uid string)
		wantExt   map[Generation]*bool // Extractable stored, per generation (nil: absent)
		wantNever map[Generation]*bool
	}
	all := func(b *bool) map[Generation]*bool {
		return map[Generation]*bool{Cosmian526: b, Cosmian527: b, Cosmian528: b}
	}
	cases := []keyCase{
		{"create extractable=false", func(e *env, uid string) {
			e.kmipOK("", withExtractable(createReq(uid, DefaultUsageMask, &past), &no, nil))
		}, all(&no), map[Generation]*bool{Cosmian526: nil, Cosmian527: nil, Cosmian528: &yes}},
		{"create neverExtractable=true", func(e *env, uid string) {
			e.kmipOK("", withExtractable(createReq(uid, DefaultUsageMask, &past), nil, &yes))
		}, map[Generation]*bool{Cosmian526: nil, Cosmian527: nil, Cosmian528: &yes},
			map[Generation]*bool{Cosmian526: &yes, Cosmian527: &yes, Cosmian528: &no}},
		{"create without", func(e *env, uid string) {
			e.kmipOK("", createReq(uid, DefaultUsageMask, &past))
		}, map[Generation]*bool{Cosmian528: &yes}, map[Generation]*bool{Cosmian528: &no}},
		{"import extractable=false", func(e *env, uid string) {
			e.kmipOK("", withExtractable(importReq(uid, material), &no, &yes))
		}, all(&no), all(&yes)},
		{"seeded not extractable", func(e *env, uid string) {
			if err := e.s.CreateKey("admin", uid, KeyOptions{Extractable: &no, Wrapped: true}); err != nil {
				t.Fatal(err)
			}
		}, all(&no), map[Generation]*bool{Cosmian528: &yes}},
		{"seeded sensitive and not extractable", func(e *env, uid string) {
			if err := e.s.CreateKey("admin", uid, KeyOptions{Extractable: &no, NeverExtractable: &yes, Sensitive: true}); err != nil {
				t.Fatal(err)
			}
		}, all(&no), all(&yes)},
	}
	for _, g := range Generations {
		for i, tc := range cases {
			t.Run(string(g)+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t, Config{CosmianVersion: g})
				uid := "k" + string(rune('a'+i))
				tc.make(e, uid)
				for _, w := range []struct {
					tag  string
					want *bool
				}{{"Extractable", tc.wantExt[g]}, {"NeverExtractable", tc.wantNever[g]}} {
					v, ok := boolAttr(t, e, uid, w.tag)
					if ok != (w.want != nil) || (ok && v != *w.want) {
						t.Fatalf("%s: got %v (present %v), want %v", w.tag, v, ok, w.want)
					}
				}
				info, _ := e.s.Object(uid)
				if (info.Extractable == nil) != (tc.wantExt[g] == nil) || (info.Extractable != nil && *info.Extractable != *tc.wantExt[g]) {
					t.Fatalf("ObjectInfo.Extractable %v", info.Extractable)
				}
				refused := g == Cosmian528 && (tc.wantExt[g] != nil && !*tc.wantExt[g] || tc.wantNever[g] != nil && *tc.wantNever[g])
				sensitive := strings.Contains(tc.name, "sensitive")
				for _, req := range []ttlv.Node{
					ttlv.Struct("Get", uidNode(uid)),
					ttlv.Struct("Export", uidNode(uid)),
					ttlv.Struct("Export", uidNode(uid), ttlv.Enum("KeyFormatType", "Raw"), ttlv.Enum("KeyWrapType", "NotWrapped")),
				} {
					switch {
					case refused:
						e.kmipFail("", req, 422, "Not_Extractable: DENIED")
					case sensitive:
						e.kmipFail("", req, 422, "Sensitive: DENIED")
					default:
						e.kmipOK("", req)
					}
				}
				// The key still works for what it is for.
				e.kmipOK("", encryptReq(uid, []byte("hello")))
			})
		}
	}
}

// TestNotExtractableBatchItem: in a RequestMessage the refusal is a failed item with
// ResultReason Not_Extractable.
func TestNotExtractableBatchItem(t *testing.T) {
	e := newEnv(t, Config{CosmianVersion: Cosmian528})
	no := false
	if err := e.s.CreateKey("admin", "nx", KeyOptions{Extractable: &no}); err != nil {
		t.Fatal(err)
	}
	msg := ttlv.Struct("RequestMessage",
		ttlv.Struct("RequestHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", 2), ttlv.Int("ProtocolVersionMinor", 1)),
			ttlv.Int("BatchCount", 1)),
		ttlv.Struct("BatchItem", ttlv.Enum("Operation", "Export"), ttlv.Struct("RequestPayload", uidNode("nx"))))
	item := child(t, e.kmipOK("", msg), "BatchItem")
	if child(t, item, "ResultStatus").Str != "OperationFailed" || child(t, item, "ResultReason").Str != "Not_Extractable" ||
		child(t, item, "ResultMessage").Str != "DENIED" {
		t.Fatalf("item %v", item)
	}
}

// TestVersionByGeneration: /version and the XKS health model name the emulated release.
func TestVersionByGeneration(t *testing.T) {
	for g, want := range map[Generation]string{Cosmian526: "5.26.0", Cosmian527: "5.27.1", Cosmian528: "5.28.0"} {
		t.Run(string(g), func(t *testing.T) {
			e := authEnv(t, g)
			r := e.do("GET", "/version", "", "", nil)
			if r.status != 200 || !strings.HasPrefix(string(r.body), `"`+want+" (") {
				t.Fatalf("/version %d %s", r.status, r.body)
			}
			h := e.xks("/aws/kms/xks/v1/health", map[string]any{"requestMetadata": map[string]any{"kmsRequestId": "1", "kmsOperation": "KmsHealthCheck"}})
			if h.status != 200 || !strings.Contains(string(h.body), `"Cosmian KMS `+want+`"`) {
				t.Fatalf("health %d %s", h.status, h.body)
			}
		})
	}
}

// TestParseGeneration: releases by name, the old name as an alias of 5.27, 5.28 by default.
func TestParseGeneration(t *testing.T) {
	for in, want := range map[string]Generation{"": Cosmian528, "5.26": Cosmian526, "5.27": Cosmian527, "5.28": Cosmian528, "xks-service": Cosmian527} {
		if g, err := ParseGeneration(in); err != nil || g != want {
			t.Errorf("%q: %v %v, want %v", in, g, err, want)
		}
	}
	if _, err := ParseGeneration("5.29"); err == nil || !strings.Contains(err.Error(), "5.26, 5.27, 5.28") {
		t.Errorf("5.29: %v", err)
	}
	if CosmianXKSService != Cosmian527 || NewestGeneration != Cosmian528 {
		t.Error("aliases")
	}
}
