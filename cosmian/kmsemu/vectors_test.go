package kmsemu

import (
	"encoding/json"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// manifest is the part of Cosmian's vector manifest format (crate/test_kms_server/src/
// vector_runner.rs) that the two access-control scenarios use.
type manifest struct {
	Name  string
	Steps []struct {
		Operation           string            `toml:"operation"`
		Request             string            `toml:"request"`
		Identity            string            `toml:"identity"`
		AssertSuccess       bool              `toml:"assert_success"`
		AssertFields        map[string]string `toml:"assert_fields"`
		AssertErrorReason   string            `toml:"assert_error_reason"`
		AssertErrorContains string            `toml:"assert_error_contains"`
		Capture             map[string]string `toml:"capture"`
	} `toml:"steps"`
}

// wrapRequestMessage is what the runner's wrap_in_request_message does to a bare operation.
func wrapRequestMessage(t *testing.T, bare []byte) []byte {
	t.Helper()
	n, err := ttlv.Unmarshal(bare)
	if err != nil {
		t.Fatalf("fixture is not JSON TTLV: %v", err)
	}
	payload := n
	payload.Tag = "RequestPayload"
	msg := ttlv.Struct("RequestMessage",
		ttlv.Struct("RequestHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", 2), ttlv.Int("ProtocolVersionMinor", 1)),
			ttlv.Int("BatchCount", 1)),
		ttlv.Struct("BatchItem", ttlv.Enum("Operation", n.Tag), payload))
	b, err := ttlv.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// findField is the runner's find_field_in_json: the first node with the tag, depth first,
// rendered as the runner renders JSON values.
func findField(v any, tag string) (string, bool) {
	switch x := v.(type) {
	case map[string]any:
		if t, _ := x["tag"].(string); t == tag {
			switch val := x["value"].(type) {
			case string:
				return val, true
			case float64, bool:
				b, _ := json.Marshal(val)
				return string(b), true
			}
		}
		if children, ok := x["value"].([]any); ok {
			for _, c := range children {
				if s, ok := findField(c, tag); ok {
					return s, true
				}
			}
		}
	case []any:
		for _, c := range x {
			if s, ok := findField(c, tag); ok {
				return s, true
			}
		}
	}
	return "", false
}

func TestVectorScenarios(t *testing.T) {
	for _, scenario := range []string{"grant_access_aes", "revoke_access"} {
		for _, wrapped := range []bool{true, false} {
			name := scenario + "/bare"
			if wrapped {
				name = scenario + "/request_message"
			}
			t.Run(name, func(t *testing.T) {
				e := authEnv(t, Cosmian526)
				dir := path.Join("vectors/access_control", scenario)
				var m manifest
				if _, err := toml.Decode(string(readTestdata(t, path.Join(dir, "manifest.toml"))), &m); err != nil {
					t.Fatal(err)
				}
				if len(m.Steps) < 6 {
					t.Fatalf("manifest has %d steps", len(m.Steps))
				}
				captures := map[string]string{}
				for i, st := range m.Steps {
					body := string(readTestdata(t, path.Join(dir, st.Request)))
					for k, v := range captures {
						body = strings.ReplaceAll(body, "{{"+k+"}}", v)
					}
					if strings.Contains(body, "{{") {
						t.Fatalf("step %d: unresolved placeholder in %s", i, st.Request)
					}
					token := ownerToken
					if st.Identity == "user" {
						token = userToken
					}
					var r reply
					switch st.Operation {
					case "GrantAccess":
						r = e.do(http.MethodPost, "/access/grant", token, "application/json", []byte(body))
					case "RevokeAccess":
						r = e.do(http.MethodPost, "/access/revoke", token, "application/json", []byte(body))
					default:
						b := []byte(body)
						if wrapped {
							b = wrapRequestMessage(t, b)
						}
						r = e.kmip(token, b)
					}
					httpOK := r.status >= 200 && r.status < 300
					var resp any
					if httpOK {
						if err := json.Unmarshal(r.body, &resp); err != nil {
							t.Fatalf("step %d %s: reply is not JSON: %s", i, st.Operation, r.body)
						}
					}
					status, hasStatus := findField(resp, "ResultStatus")
					if st.AssertSuccess {
						if !httpOK || (hasStatus && status != "Success") {
							t.Fatalf("step %d %s: expected success, got %d %s", i, st.Operation, r.status, r.body)
						}
					} else {
						if httpOK && status == "Success" {
							t.Fatalf("step %d %s: expected failure, got success", i, st.Operation)
						}
						if wrapped {
							if got, _ := findField(resp, "ResultReason"); st.AssertErrorReason != "" && got != st.AssertErrorReason {
								t.Fatalf("step %d %s: ResultReason %q, want %q (%s)", i, st.Operation, got, st.AssertErrorReason, r.body)
							}
							if got, _ := findField(resp, "ResultMessage"); !strings.Contains(got, st.AssertErrorContains) {
								t.Fatalf("step %d %s: ResultMessage %q lacks %q", i, st.Operation, got, st.AssertErrorContains)
							}
						} else {
							// A bare operation fails with HTTP 422 and "<Reason>: <message>".
							want := st.AssertErrorReason + ": "
							if r.status != http.StatusUnprocessableEntity || !strings.HasPrefix(string(r.body), want) ||
								!strings.Contains(string(r.body), st.AssertErrorContains) {
								t.Fatalf("step %d %s: got %d %s", i, st.Operation, r.status, r.body)
							}
						}
						continue
					}
					for tag, want := range st.AssertFields {
						if got, _ := findField(resp, tag); got != want {
							t.Fatalf("step %d %s: field %s = %q, want %q", i, st.Operation, tag, got, want)
						}
					}
					for name, tag := range st.Capture {
						v, ok := findField(resp, tag)
						if !ok {
							t.Fatalf("step %d %s: cannot capture %s from %s", i, st.Operation, tag, r.body)
						}
						captures[name] = v
					}
				}
				// The scenario ends with the key destroyed but its UID still taken.
				info, ok := e.s.Object(captures["key_id"])
				if !ok || info.State != stateDestroyed || info.Owner != ownerUser {
					t.Fatalf("final object: %+v %v", info, ok)
				}
			})
		}
	}
}

// TestFixtureRequestsAccepted sends every other fixture request and checks the documented
// response shape.
func TestFixtureRequestsAccepted(t *testing.T) {
	e := newEnv(t, Config{})
	sub := func(rel, key string) []byte {
		return []byte(strings.ReplaceAll(string(readTestdata(t, rel)), "{{key_id}}", key))
	}
	post := func(b []byte) ttlv.Node {
		t.Helper()
		r := e.kmip("", b)
		if r.status != http.StatusOK || r.ctype != "application/json" {
			t.Fatalf("status %d %q: %s", r.status, r.ctype, r.body)
		}
		n, err := ttlv.Unmarshal(r.body)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	const fips = "vectors/fips/kmip_operations/"

	t.Run("import_key", func(t *testing.T) {
		n := post(readTestdata(t, fips+"import_key/step1_import.json"))
		if n.Tag != "ImportResponse" || child(t, n, "UniqueIdentifier").Str != "test-import-aes-key-001" {
			t.Fatalf("got %v", n)
		}
		info, _ := e.s.Object("test-import-aes-key-001")
		if info.State != stateActive || info.UsageMask != 12 || info.Owner != "admin" {
			t.Fatalf("imported object %+v", info)
		}
		// Re-import of the same UID is refused.
		r := e.kmip("", readTestdata(t, fips+"import_key/step1_import.json"))
		if r.status != 422 || !strings.Contains(string(r.body), "one or more objects already exist") {
			t.Fatalf("duplicate import: %d %s", r.status, r.body)
		}
	})
	t.Run("register_export", func(t *testing.T) {
		n := post(sub(fips+"register_export/step3_export.json", "test-import-aes-key-001"))
		if n.Tag != "ExportResponse" {
			t.Fatalf("got %v", n.Tag)
		}
		var tags []string
		if got := []string{n.Children[0].Tag, n.Children[1].Tag, n.Children[2].Tag, n.Children[3].Tag}; strings.Join(got, ",") != "ObjectType,UniqueIdentifier,Attributes,SymmetricKey" {
			t.Fatalf("ExportResponse fields %v", got)
		}
		if kf := child(t, n, "SymmetricKey", "KeyBlock", "KeyFormatType").Str; kf != "Raw" {
			t.Fatalf("default export format %s", kf)
		}
		km := child(t, n, "SymmetricKey", "KeyBlock", "KeyValue", "KeyMaterial")
		if km.Type != ttlv.ByteString || len(km.Bytes) != 32 || km.Bytes[0] != 0xAA {
			t.Fatalf("key material %v", km)
		}
		for _, a := range child(t, n, "Attributes").All("Attribute") {
			if v, _ := a.Child("AttributeValue"); v.Type == ttlv.TextString {
				_ = json.Unmarshal([]byte(v.Str), &tags)
			}
		}
		if strings.Join(tags, ",") != "_kk" {
			t.Fatalf("tags %v", tags)
		}
	})
	t.Run("get_attributes", func(t *testing.T) {
		n := post(sub(fips+"get_attributes/step2_get_attributes.json", "test-import-aes-key-001"))
		attrs := child(t, n, "Attributes")
		if n.Tag != "GetAttributesResponse" || child(t, attrs, "State").Str != "Active" ||
			child(t, attrs, "KeyFormatType").Str != "Raw" || child(t, attrs, "CryptographicLength").Int != 256 {
			t.Fatalf("got %v", n)
		}
		if _, ok := attrs.Child("Attribute"); ok {
			t.Fatal("tags must not be returned without a vendor attribute reference")
		}
	})
	t.Run("locate_by_tag", func(t *testing.T) {
		c := post(readTestdata(t, fips+"locate_by_tag/step1_create_tagged_key.json"))
		uid := child(t, c, "UniqueIdentifier").Str
		if c.Tag != "CreateResponse" || len(uid) != 36 {
			t.Fatalf("create: %v", c)
		}
		n := post(readTestdata(t, fips+"locate_by_tag/step2_locate_by_tag.json"))
		ids := n.All("UniqueIdentifier")
		if n.Tag != "LocateResponse" || child(t, n, "LocatedItems").Int != 1 || len(ids) != 1 || ids[0].Str != uid {
			t.Fatalf("locate: %v", n)
		}
		// A key created without ActivationDate is PreActive (create.rs setup_lifecycle).
		if info, _ := e.s.Object(uid); info.State != statePreActive {
			t.Fatalf("state %s", info.State)
		}
	})
	t.Run("destroy_revoke", func(t *testing.T) {
		n := post(sub(fips+"destroy/step2_revoke.json", "test-import-aes-key-001"))
		if n.Tag != "RevokeResponse" {
			t.Fatalf("got %v", n)
		}
		if info, _ := e.s.Object("test-import-aes-key-001"); info.State != stateDeactivated {
			t.Fatalf("state %s", info.State)
		}
	})
	t.Run("ckms_export_file_imports", func(t *testing.T) {
		// The root node of a ckms export file is the object; wrap it in an Import.
		obj, err := ttlv.Unmarshal(readTestdata(t, "kms/original_kms_cse_key.demo.key.json"))
		if err != nil {
			t.Fatal(err)
		}
		imp := ttlv.Struct("Import", uidNode("cse-demo"), ttlv.Enum("ObjectType", "SymmetricKey"),
			ttlv.Struct("Attributes"), obj)
		e.kmipOK("", imp)
		info, _ := e.s.Object("cse-demo")
		// Mask from the key's own attributes; no ActivationDate → PreActive.
		if info.UsageMask != 2108 || info.State != statePreActive {
			t.Fatalf("imported %+v", info)
		}
	})
}
