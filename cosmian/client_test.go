package cosmian

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// ---------------------------------------------------------------------------------------------
// Helpers

const testToken = "test-bearer-token"

func newTestClient(t *testing.T, h http.HandlerFunc) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	c, err := NewClient(ClientConfig{
		BaseURL: srv.URL + "/",
		HTTP:    srv.Client(),
		Header:  http.Header{"Authorization": {"Bearer " + testToken}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

// fixture loads a request fixture, fills placeholders and decodes it.
func fixture(t *testing.T, name string, fill map[string]string) ttlv.Node {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "kmip", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range fill {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if strings.Contains(s, "{{") {
		t.Fatalf("%s: unfilled placeholder", name)
	}
	n, err := ttlv.Unmarshal([]byte(s))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// canon sorts structure children by tag (stably, so KMIP arrays keep their order): Cosmian
// deserialises structures as serde maps, so field order does not matter on the wire.
func canon(n ttlv.Node) ttlv.Node {
	if n.Type != ttlv.Structure {
		return n
	}
	out := n
	out.Children = make([]ttlv.Node, len(n.Children))
	for i, c := range n.Children {
		out.Children[i] = canon(c)
	}
	slices.SortStableFunc(out.Children, func(a, b ttlv.Node) int { return strings.Compare(a.Tag, b.Tag) })
	return out
}

func equivalent(a, b ttlv.Node) bool { return ttlv.Equal(canon(a), canon(b)) }

// contains reports whether every node of want is present in got (got may carry more fields).
func contains(got, want ttlv.Node) bool {
	if got.Tag != want.Tag || got.Type != want.Type {
		return false
	}
	if want.Type != ttlv.Structure {
		return ttlv.Equal(got, want)
	}
	used := make([]bool, len(got.Children))
	for _, w := range want.Children {
		found := false
		for i, g := range got.Children {
			if !used[i] && contains(g, w) {
				used[i] = true
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func mustJSON(t *testing.T, n ttlv.Node) string {
	t.Helper()
	b, err := ttlv.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// kmipServer replies to /kmip/2_1 with reply(request) after checking the transport details.
func kmipServer(t *testing.T, reply func(req ttlv.Node) (int, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/kmip/2_1" {
			http.Error(w, "Route not supported: "+r.URL.Path, http.StatusNotFound)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if a := r.Header.Get("Authorization"); a != "Bearer "+testToken {
			t.Errorf("Authorization %q", a)
		}
		body, _ := io.ReadAll(r.Body)
		req, err := ttlv.Unmarshal(body)
		if err != nil {
			t.Errorf("request is not JSON TTLV: %v", err)
			http.Error(w, "Invalid Request: bad TTLV", http.StatusUnprocessableEntity)
			return
		}
		status, text := reply(req)
		if status != http.StatusOK {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, text)
	}
}

var (
	keyHex  = "21CDF5ABC3059E1457E94B44478B197D7498BBF86F8C2D0D721101ECF5B59F02"
	keyRaw  = func() []byte { b, _ := hex.DecodeString(keyHex); return b }()
	actDate = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

func tagsAttr(tags ...string) ttlv.Node {
	b, _ := json.Marshal(tags)
	return ttlv.Struct("Attribute",
		ttlv.Text("VendorIdentification", "cosmian"),
		ttlv.Text("AttributeName", "tag"),
		ttlv.Text("AttributeValue", string(b)))
}

func uidResponse(op, uid string, extra ...ttlv.Node) ttlv.Node {
	return ttlv.Struct(op+"Response", append(extra, ttlv.Text("UniqueIdentifier", uid))...)
}

func exportResponse(op, uid string, withAttrs bool) ttlv.Node {
	fields := []ttlv.Node{
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Text("UniqueIdentifier", uid),
	}
	if withAttrs {
		fields = append(fields, ttlv.Struct("Attributes",
			ttlv.Date("ActivationDate", actDate),
			ttlv.Enum("CryptographicAlgorithm", "AES"),
			ttlv.Int("CryptographicLength", 256),
			ttlv.Int("CryptographicUsageMask", UsageXKS),
			ttlv.Enum("KeyFormatType", "TransparentSymmetricKey"),
			ttlv.Enum("ObjectType", "SymmetricKey"),
			ttlv.Bool("Sensitive", false),
			ttlv.Enum("State", "Deactivated"),
			tagsAttr("aws-xks", "_kk"),
		))
	}
	fields = append(fields, ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock",
		ttlv.Enum("KeyFormatType", "Raw"),
		ttlv.Struct("KeyValue",
			ttlv.Bytes("KeyMaterial", keyRaw),
			ttlv.Struct("Attributes",
				ttlv.Enum("CryptographicAlgorithm", "AES"),
				ttlv.Int("CryptographicLength", 256),
				ttlv.Int("CryptographicUsageMask", 2108),
				ttlv.Enum("KeyFormatType", "Raw"),
				ttlv.Enum("ObjectType", "SymmetricKey"),
			)),
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", 256),
	)))
	return ttlv.Struct(op+"Response", fields...)
}

// ---------------------------------------------------------------------------------------------
// Request shapes against Cosmian's fixtures

func TestKMIPRequestShapes(t *testing.T) {
	ctx := context.Background()
	ct, _ := hex.DecodeString("0A0B0C")
	iv, _ := hex.DecodeString("000102030405060708090A0B")
	tag, _ := hex.DecodeString("F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF")
	impKey, _ := hex.DecodeString("AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899")

	cases := []struct {
		name    string
		fixture string
		fill    map[string]string
		exact   bool // equivalent trees; otherwise the fixture must be contained in the request
		reply   ttlv.Node
		call    func(t *testing.T, c *Client)
		check   func(t *testing.T, req ttlv.Node)
	}{
		{
			name: "Create", fixture: "test_data__vectors__access_control__grant_access_aes__step1_create_key.json", exact: true,
			reply: uidResponse("Create", "k-1", ttlv.Enum("ObjectType", "SymmetricKey")),
			call: func(t *testing.T, c *Client) {
				d := actDate
				uid, err := c.Create(ctx, CreateRequest{UsageMask: UsageEncrypt | UsageDecrypt, ActivationDate: &d})
				if err != nil || uid != "k-1" {
					t.Fatalf("Create = %q, %v", uid, err)
				}
			},
		},
		{
			name: "Create with tags and UID", fixture: "test_data__vectors__fips__kmip_operations__locate_by_tag__step1_create_tagged_key.json",
			reply: uidResponse("Create", "my-uid", ttlv.Enum("ObjectType", "SymmetricKey")),
			call: func(t *testing.T, c *Client) {
				uid, err := c.Create(ctx, CreateRequest{UID: "my-uid", UsageMask: 12, Tags: []string{"vector-locate-tag", "_kk"}})
				if err != nil || uid != "my-uid" {
					t.Fatalf("Create = %q, %v", uid, err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				if u, _ := req.Path("Attributes", "UniqueIdentifier"); u.Str != "my-uid" {
					t.Errorf("Attributes.UniqueIdentifier = %q", u.Str)
				}
			},
		},
		{
			name: "Import", fixture: "test_data__vectors__fips__kmip_operations__import_key__step1_import.json", exact: true,
			reply: uidResponse("Import", "test-import-aes-key-001"),
			call: func(t *testing.T, c *Client) {
				uid, err := c.Import(ctx, ImportRequest{
					UID: "test-import-aes-key-001", Material: impKey,
					Attributes: KeyAttributes{UsageMask: 12, ActivationDate: actDate, Tags: []string{"_kk"}},
				})
				if err != nil || uid != "test-import-aes-key-001" {
					t.Fatalf("Import = %q, %v", uid, err)
				}
				if !bytes.Equal(impKey[:2], []byte{0xAA, 0xBB}) {
					t.Error("Import modified the caller's material")
				}
			},
		},
		{
			name: "Export as registered", fixture: "test_data__vectors__fips__kmip_operations__register_export__step3_export.json", exact: true,
			fill:  map[string]string{"key_id": "k-1"},
			reply: exportResponse("Export", "k-1", true),
			call: func(t *testing.T, c *Client) {
				k, err := c.Export(ctx, "k-1", false)
				if err != nil {
					t.Fatal(err)
				}
				defer k.Wipe()
				if !bytes.Equal(k.Material, keyRaw) || k.Wrapped || k.UID != "k-1" {
					t.Errorf("Export = %x wrapped=%t uid=%s", k.Material, k.Wrapped, k.UID)
				}
				a := k.Attributes
				if a.State != StateDeactivated || a.UsageMask != UsageXKS || a.Length != 256 || a.Algorithm != "AES" ||
					!a.ActivationDate.Equal(actDate) || !slices.Equal(a.Tags, []string{"_kk", "aws-xks"}) ||
					!slices.Equal(a.UserTags(), []string{"aws-xks"}) || a.KeyFormatType != "Raw" {
					t.Errorf("attributes %+v", a)
				}
			},
		},
		{
			name: "Export unwrapped", fixture: "test_data__vectors__fips__kmip_operations__register_export__step3_export.json",
			fill:  map[string]string{"key_id": "k-1"},
			reply: exportResponse("Export", "k-1", false),
			call: func(t *testing.T, c *Client) {
				k, err := c.Export(ctx, "k-1", true)
				if err != nil || !bytes.Equal(k.Material, keyRaw) || k.Attributes.UsageMask != 2108 {
					t.Fatalf("Export = %+v, %v", k, err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				f, _ := req.Child("KeyFormatType")
				w, _ := req.Child("KeyWrapType")
				if f.Str != "Raw" || w.Str != "NotWrapped" {
					t.Errorf("KeyFormatType %q KeyWrapType %q", f.Str, w.Str)
				}
			},
		},
		{
			name: "Get", fixture: "test_data__vectors__access_control__grant_access_aes__step3_user_get.json", exact: true,
			fill:  map[string]string{"key_id": "k-1"},
			reply: exportResponse("Get", "k-1", false),
			call: func(t *testing.T, c *Client) {
				k, err := c.Get(ctx, "k-1")
				if err != nil || !bytes.Equal(k.Material, keyRaw) {
					t.Fatalf("Get = %+v, %v", k, err)
				}
				k.Wipe()
				if !bytes.Equal(k.Material, make([]byte, 32)) {
					t.Error("Wipe left material")
				}
			},
		},
		{
			name: "GetAttributes", fixture: "test_data__vectors__fips__kmip_operations__get_attributes__step2_get_attributes.json",
			fill: map[string]string{"key_id": "k-1"},
			reply: uidResponse("GetAttributes", "k-1", ttlv.Struct("Attributes",
				ttlv.Enum("CryptographicAlgorithm", "AES"),
				ttlv.Int("CryptographicLength", 256),
				ttlv.Int("CryptographicUsageMask", 60),
				ttlv.Enum("KeyFormatType", "Raw"),
				ttlv.Enum("ObjectType", "SymmetricKey"),
				ttlv.Enum("State", "Active"),
				ttlv.Date("ActivationDate", actDate),
				ttlv.Bool("Sensitive", false),
				tagsAttr("aws-xks", "_kk", "team-a"),
			)),
			call: func(t *testing.T, c *Client) {
				a, err := c.GetAttributes(ctx, "k-1")
				if err != nil {
					t.Fatal(err)
				}
				if a.State != StateActive || a.UsageMask != 60 || a.ObjectType != "SymmetricKey" ||
					!slices.Equal(a.Tags, []string{"_kk", "aws-xks", "team-a"}) || !a.DeactivationDate.IsZero() {
					t.Errorf("attributes %+v", a)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				refs := req.All("AttributeReference")
				var vendor bool
				var std []string
				for _, r := range refs {
					if r.Type == ttlv.Structure {
						vendor = contains(r, ttlv.Struct("AttributeReference",
							ttlv.Text("VendorIdentification", "cosmian"), ttlv.Text("AttributeName", "tag")))
					} else if r.Type == ttlv.Enumeration {
						std = append(std, r.Str)
					}
				}
				if !vendor {
					t.Error("no vendor tag reference")
				}
				for _, want := range []string{"State", "CryptographicUsageMask", "ActivationDate", "DeactivationDate", "Sensitive"} {
					if !slices.Contains(std, want) {
						t.Errorf("no %s reference", want)
					}
				}
			},
		},
		{
			name: "Locate by tag", fixture: "test_data__vectors__fips__kmip_operations__locate_by_tag__step2_locate_by_tag.json",
			reply: ttlv.Struct("LocateResponse", ttlv.Int("LocatedItems", 2), ttlv.Text("UniqueIdentifier", "a"), ttlv.Text("UniqueIdentifier", "b")),
			call: func(t *testing.T, c *Client) {
				ids, err := c.Locate(ctx, LocateRequest{Tags: []string{"vector-locate-tag"}})
				if err != nil || !slices.Equal(ids, []string{"a", "b"}) {
					t.Fatalf("Locate = %v, %v", ids, err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				if m, _ := req.Child("MaximumItems"); m.Int != 1000 {
					t.Errorf("MaximumItems = %d", m.Int)
				}
			},
		},
		{
			name: "Encrypt", fixture: "test_data__vectors__access_control__grant_access_aes__step4_user_encrypt.json", exact: true,
			fill: map[string]string{"key_id": "k-1"},
			reply: uidResponse("Encrypt", "k-1", ttlv.Bytes("Data", ct), ttlv.Bytes("IVCounterNonce", iv),
				ttlv.Bytes("AuthenticatedEncryptionTag", tag)),
			call: func(t *testing.T, c *Client) {
				r, err := c.Encrypt(ctx, "k-1", []byte("Hello access control"), nil)
				if err != nil || !bytes.Equal(r.Ciphertext, ct) || !bytes.Equal(r.IV, iv) || !bytes.Equal(r.Tag, tag) {
					t.Fatalf("Encrypt = %+v, %v", r, err)
				}
			},
		},
		{
			name: "Decrypt", fixture: "test_data__vectors__access_control__grant_access_aes__step5_user_decrypt.json", exact: true,
			fill:  map[string]string{"key_id": "k-1", "ciphertext": "0A0B0C", "nonce": hex.EncodeToString(iv), "auth_tag": hex.EncodeToString(tag)},
			reply: uidResponse("Decrypt", "k-1", ttlv.Bytes("Data", []byte("Hello access control"))),
			call: func(t *testing.T, c *Client) {
				pt, err := c.Decrypt(ctx, "k-1", ct, iv, tag, nil)
				if err != nil || string(pt) != "Hello access control" {
					t.Fatalf("Decrypt = %q, %v", pt, err)
				}
			},
		},
		{
			name: "Decrypt with AAD", fixture: "test_data__vectors__access_control__grant_access_aes__step5_user_decrypt.json",
			fill:  map[string]string{"key_id": "k-1", "ciphertext": "0A0B0C", "nonce": hex.EncodeToString(iv), "auth_tag": hex.EncodeToString(tag)},
			reply: uidResponse("Decrypt", "k-1", ttlv.Bytes("Data", []byte("x"))),
			call: func(t *testing.T, c *Client) {
				if _, err := c.Decrypt(ctx, "k-1", ct, iv, tag, []byte("aad")); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				if a, _ := req.Child("AuthenticatedEncryptionAdditionalData"); string(a.Bytes) != "aad" {
					t.Errorf("AAD = %q", a.Bytes)
				}
			},
		},
		{
			name: "Revoke", fixture: "test_data__vectors__access_control__grant_access_aes__owner_revoke_key.json", exact: true,
			fill:  map[string]string{"key_id": "k-1"},
			reply: uidResponse("Revoke", "k-1"),
			call: func(t *testing.T, c *Client) {
				if err := c.Revoke(ctx, "k-1", RevocationCessationOfOperation, ""); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Revoke with message", fixture: "test_data__vectors__fips__kmip_operations__destroy__step2_revoke.json",
			fill:  map[string]string{"key_id": "k-1"},
			reply: uidResponse("Revoke", "k-1"),
			call: func(t *testing.T, c *Client) {
				if err := c.Revoke(ctx, "k-1", RevocationCessationOfOperation, "migrated"); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				if m, _ := req.Path("RevocationReason", "RevocationMessage"); m.Str != "migrated" {
					t.Errorf("RevocationMessage %q", m.Str)
				}
			},
		},
		{
			name: "Destroy", fixture: "test_data__vectors__access_control__grant_access_aes__step6_owner_destroy.json", exact: true,
			fill:  map[string]string{"key_id": "k-1"},
			reply: uidResponse("Destroy", "k-1"),
			call: func(t *testing.T, c *Client) {
				if err := c.Destroy(ctx, "k-1", false); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Destroy and remove", fixture: "test_data__vectors__access_control__grant_access_aes__step6_owner_destroy.json",
			fill:  map[string]string{"key_id": "k-1"},
			reply: uidResponse("Destroy", "k-1"),
			call: func(t *testing.T, c *Client) {
				if err := c.Destroy(ctx, "k-1", true); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, req ttlv.Node) {
				if r, ok := req.Child("Remove"); !ok || r.Type != ttlv.Boolean || !r.Bool {
					t.Error("no Remove=true")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := fixture(t, tc.fixture, tc.fill)
			var calls atomic.Int32
			c, _ := newTestClient(t, kmipServer(t, func(req ttlv.Node) (int, string) {
				calls.Add(1)
				if tc.exact && !equivalent(req, want) {
					t.Errorf("request differs from fixture\n got: %s\nwant: %s", mustJSON(t, req), mustJSON(t, want))
				}
				if !tc.exact && !contains(req, want) {
					t.Errorf("request does not contain the fixture\n got: %s\nwant: %s", mustJSON(t, req), mustJSON(t, want))
				}
				if tc.check != nil {
					tc.check(t, req)
				}
				return http.StatusOK, mustJSON(t, tc.reply)
			}))
			tc.call(t, c)
			if calls.Load() != 1 {
				t.Errorf("%d calls", calls.Load())
			}
		})
	}
}

// The comparison helpers must be able to fail.
func TestEquivalenceHelpers(t *testing.T) {
	a := ttlv.Struct("X", ttlv.Text("A", "1"), ttlv.Int("B", 2))
	b := ttlv.Struct("X", ttlv.Int("B", 2), ttlv.Text("A", "1"))
	c := ttlv.Struct("X", ttlv.Int("B", 3), ttlv.Text("A", "1"))
	if !equivalent(a, b) || equivalent(a, c) {
		t.Error("equivalent")
	}
	if !contains(ttlv.Struct("X", ttlv.Text("A", "1"), ttlv.Int("B", 2), ttlv.Bool("C", true)), a) || contains(a, ttlv.Struct("X", ttlv.Bool("C", true))) {
		t.Error("contains")
	}
}

// ---------------------------------------------------------------------------------------------
// Replies

func TestExportWrapped(t *testing.T) {
	wrapped := ttlv.Struct("ExportResponse",
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Text("UniqueIdentifier", "k-w"),
		ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock",
			ttlv.Enum("KeyFormatType", "Raw"),
			ttlv.Bytes("KeyValue", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40}),
			ttlv.Enum("CryptographicAlgorithm", "AES"),
			ttlv.Int("CryptographicLength", 256),
			ttlv.Struct("KeyWrappingData",
				ttlv.Enum("WrappingMethod", "Encrypt"),
				ttlv.Struct("EncryptionKeyInformation", ttlv.Text("UniqueIdentifier", "kek"))),
		)))
	c, _ := newTestClient(t, kmipServer(t, func(ttlv.Node) (int, string) { return 200, mustJSON(t, wrapped) }))
	t.Run("as registered", func(t *testing.T) {
		k, err := c.Export(context.Background(), "k-w", false)
		if err != nil || !k.Wrapped || len(k.Material) != 40 {
			t.Fatalf("Export = %+v, %v", k, err)
		}
	})
	t.Run("unwrap requested", func(t *testing.T) {
		k, err := c.Export(context.Background(), "k-w", true)
		if !errors.Is(err, ErrWrapped) || k != nil {
			t.Fatalf("Export = %+v, %v", k, err)
		}
	})
}

func TestBadResponses(t *testing.T) {
	cases := []struct{ name, reply string }{
		{"wrong tag", `{"tag":"ImportResponse","value":[{"tag":"UniqueIdentifier","type":"TextString","value":"k"}]}`},
		{"not TTLV", `{"hello":1}`},
		{"no uid", `{"tag":"DestroyResponse","value":[]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClient(t, kmipServer(t, func(ttlv.Node) (int, string) { return 200, tc.reply }))
			err := c.Destroy(context.Background(), "k", false)
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestResponseMessageForm(t *testing.T) {
	ok := `{"tag":"ResponseMessage","value":[{"tag":"ResponseHeader","value":[]},{"tag":"BatchItem","value":[` +
		`{"tag":"Operation","type":"Enumeration","value":"Destroy"},{"tag":"ResultStatus","type":"Enumeration","value":"Success"},` +
		`{"tag":"ResponsePayload","value":[{"tag":"UniqueIdentifier","type":"TextString","value":"k"}]}]}]}`
	failed := `{"tag":"ResponseMessage","value":[{"tag":"ResponseHeader","value":[]},{"tag":"BatchItem","value":[` +
		`{"tag":"Operation","type":"Enumeration","value":"Destroy"},{"tag":"ResultStatus","type":"Enumeration","value":"OperationFailed"},` +
		`{"tag":"ResultReason","type":"Enumeration","value":"Wrong_Key_Lifecycle_State"},` +
		`{"tag":"ResultMessage","type":"TextString","value":"the key is active"}]}]}`
	for _, tc := range []struct {
		name, reply string
		want        error
	}{{"success", ok, nil}, {"failed", failed, ErrWrongState}} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClient(t, kmipServer(t, func(ttlv.Node) (int, string) { return 200, tc.reply }))
			err := c.Destroy(context.Background(), "k", false)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Locate paging

// locateServer holds n ids and caps pages at 1000 like Cosmian ≥ 5.24; honourOffset selects
// KMIP behaviour (true) or Cosmian ≤ 5.26's (OffsetItems ignored).
func locateServer(t *testing.T, n int, honourOffset bool, calls *atomic.Int32) http.HandlerFunc {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("key-%05d", i)
	}
	return kmipServer(t, func(req ttlv.Node) (int, string) {
		calls.Add(1)
		if req.Tag != "Locate" {
			return 422, "Invalid Request: not a Locate"
		}
		if ot, _ := req.Path("Attributes", "ObjectType"); ot.Str != "SymmetricKey" {
			t.Errorf("ObjectType %q", ot.Str)
		}
		max := MaxLocatePage
		if m, ok := req.Child("MaximumItems"); ok && int(m.Int) < max {
			max = int(m.Int)
		}
		off := 0
		if o, ok := req.Child("OffsetItems"); ok && honourOffset {
			off = int(o.Int)
		}
		page := ids[min(off, len(ids)):min(off+max, len(ids))]
		resp := []ttlv.Node{ttlv.Int("LocatedItems", int32(len(page)))}
		for _, id := range page {
			resp = append(resp, ttlv.Text("UniqueIdentifier", id))
		}
		return 200, mustJSON(t, ttlv.Struct("LocateResponse", resp...))
	})
}

func TestLocatePaging(t *testing.T) {
	cases := []struct {
		name      string
		n         int
		pageSize  int
		honour    bool
		wantIDs   int
		wantCalls int32
		wantErr   error
	}{
		{"2500 ids, cap 1000", 2500, 0, true, 2500, 3, nil},
		{"2500 ids, asked 5000", 2500, 5000, true, 2500, 3, nil},
		{"exactly 2000", 2000, 0, true, 2000, 3, nil},
		{"page size 300", 1000, 300, true, 1000, 4, nil},
		{"none", 0, 0, true, 0, 1, nil},
		{"server ignores OffsetItems", 2500, 0, false, 1000, 2, ErrLocateIncomplete},
		{"server ignores OffsetItems, short", 999, 0, false, 999, 1, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			c, _ := newTestClient(t, locateServer(t, tc.n, tc.honour, &calls))
			ids, err := c.Locate(context.Background(), LocateRequest{Tags: []string{XKSTag}, PageSize: tc.pageSize})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if len(ids) != tc.wantIDs || calls.Load() != tc.wantCalls {
				t.Fatalf("%d ids in %d calls, want %d in %d", len(ids), calls.Load(), tc.wantIDs, tc.wantCalls)
			}
			for i, id := range ids {
				if id != fmt.Sprintf("key-%05d", i) {
					t.Fatalf("ids[%d] = %s", i, id)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Errors

func TestErrorClasses(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"object not found", 422, "Object_Not_Found: object not found for identifier x", ErrNotFound},
		{"item not found", 422, "Item not found: x", ErrNotFound},
		{"access denied", 401, "Access denied: Object with uid x is not owned by owner bob", ErrAccessDenied},
		{"no permission", 401, "Access denied: bob does not have permission to Encrypt x", ErrAccessDenied},
		{"auth failure", 401, "", ErrAccessDenied},
		{"already exists", 422, "Database Error: one or more objects already exist", ErrAlreadyExists},
		{"wrong state", 422, "Wrong_Key_Lifecycle_State: DENIED", ErrWrongState},
		{"destroyed", 422, "Object_Destroyed: DENIED", ErrWrongState},
		{"sensitive", 422, "Sensitive: DENIED", ErrSensitive},
		{"not extractable", 422, "Not_Extractable: DENIED", ErrNotExtractable},
		{"invalid request", 422, "Invalid Request: bad attribute", ErrInvalidRequest},
		{"other 422", 422, "Not Supported: thing", ErrInvalidRequest},
		{"internal", 500, "Internal server error", ErrServer},
		{"unavailable", 503, "", ErrServer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestClient(t, kmipServer(t, func(ttlv.Node) (int, string) { return tc.status, tc.body }))
			_, err := c.Export(context.Background(), "x", true)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var ke *KMSError
			if !errors.As(err, &ke) || ke.HTTPStatus != tc.status || ke.Message != tc.body || ke.Op != "Export" {
				t.Fatalf("KMSError = %+v", ke)
			}
			for _, other := range []error{ErrNotFound, ErrAlreadyExists, ErrAccessDenied, ErrWrongState, ErrSensitive, ErrNotExtractable, ErrInvalidRequest, ErrServer} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("also %v", other)
				}
			}
		})
	}
}

func TestErrorMessageBoundedAndNoRequestData(t *testing.T) {
	long := strings.Repeat("é", 2000) + "\x00\n"
	c, _ := newTestClient(t, kmipServer(t, func(ttlv.Node) (int, string) { return 422, long }))
	secret := bytes.Repeat([]byte{0x5A}, 32)
	_, err := c.Import(context.Background(), ImportRequest{UID: "k", Material: secret})
	var ke *KMSError
	if !errors.As(err, &ke) {
		t.Fatal(err)
	}
	if len(ke.Message) > maxErrorMessage+len("…") {
		t.Errorf("message %d bytes", len(ke.Message))
	}
	if strings.Contains(err.Error(), "5A5A5A5A") || strings.Contains(strings.ToLower(err.Error()), "5a5a5a5a") {
		t.Error("key material in error")
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c, err := NewClient(ClientConfig{BaseURL: srv.URL, HTTP: srv.Client(), Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kmip", "version"} {
		t.Run(name, func(t *testing.T) {
			var err error
			if name == "kmip" {
				err = c.Destroy(context.Background(), "k", false)
			} else {
				_, err = c.Version(context.Background())
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestOversizedReply(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body := `"` + strings.Repeat("x", 4096) + `"`
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				}
				io.WriteString(w, body[:100])
				if chunked {
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, body[100:])
			}))
			t.Cleanup(srv.Close)
			c, err := NewClient(ClientConfig{BaseURL: srv.URL, HTTP: srv.Client(), MaxResponseBytes: 1024})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Version(context.Background()); !errors.Is(err, ErrResponseTooLarge) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestReadBounded(t *testing.T) {
	for _, tc := range []struct {
		n, max, hint int
		ok           bool
	}{{0, 10, -1, true}, {10, 10, -1, true}, {11, 10, -1, false}, {10, 10, 10, true}, {5000, 10000, -1, true}, {5000, 10000, 3, true}, {20000, 10000, 20000, false}} {
		t.Run(fmt.Sprint(tc), func(t *testing.T) {
			in := bytes.Repeat([]byte{'a'}, tc.n)
			got, err := readBounded(iotest{bytes.NewReader(in)}, int64(tc.max), int64(tc.hint))
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if tc.ok && !bytes.Equal(got, in) {
				t.Fatal("content differs")
			}
		})
	}
}

// iotest returns short reads to exercise regrowth.
type iotest struct{ r io.Reader }

func (r iotest) Read(p []byte) (int, error) {
	if len(p) > 7 {
		p = p[:7]
	}
	return r.r.Read(p)
}

// The encoded request (which carries the key in hex) is wiped once do returns, whatever the
// outcome.
func TestRequestBodyWiped(t *testing.T) {
	for _, status := range []int{200, 422} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if !bytes.Contains(b, []byte("SECRET")) {
					t.Error("body not received intact")
				}
				w.WriteHeader(status)
				io.WriteString(w, `{}`)
			})
			body := []byte(`{"x":"SECRET"}`)
			_, _ = c.do(context.Background(), "test", http.MethodPost, "/kmip/2_1", body, "application/json")
			if !bytes.Equal(body, make([]byte, len(body))) {
				t.Fatalf("body not wiped: %q", body)
			}
		})
	}
}

func TestNewClientValidation(t *testing.T) {
	hc := http.DefaultClient
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		ok   bool
	}{
		{"ok", ClientConfig{BaseURL: "https://kms:9998/", HTTP: hc}, true},
		{"no url", ClientConfig{HTTP: hc}, false},
		{"ftp", ClientConfig{BaseURL: "ftp://kms", HTTP: hc}, false},
		{"no http", ClientConfig{BaseURL: "https://kms"}, false},
		{"query", ClientConfig{BaseURL: "https://kms?a=b", HTTP: hc}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if c != nil && (c.BaseURL() != "https://kms:9998" || c.cfg.Timeout != DefaultTimeout || c.cfg.MaxResponseBytes != DefaultMaxResponseBytes || c.cfg.VendorID != "cosmian") {
				t.Errorf("defaults: %+v", c.cfg)
			}
		})
	}
}

func TestClientSideValidation(t *testing.T) {
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { t.Error("no call expected") })
	ctx := context.Background()
	for name, f := range map[string]func() error{
		"import empty": func() error { _, err := c.Import(ctx, ImportRequest{UID: "k"}); return err },
		"import length": func() error {
			_, err := c.Import(ctx, ImportRequest{Material: make([]byte, 16), Attributes: KeyAttributes{Length: 256}})
			return err
		},
		"import tag uid": func() error {
			_, err := c.Import(ctx, ImportRequest{UID: `["a"]`, Material: make([]byte, 16)})
			return err
		},
		"create length":    func() error { _, err := c.Create(ctx, CreateRequest{Length: 100}); return err },
		"revoke reason":    func() error { return c.Revoke(ctx, "k", "Bored", "") },
		"export empty uid": func() error { _, err := c.Export(ctx, "", true); return err },
		"decrypt no iv":    func() error { _, err := c.Decrypt(ctx, "k", []byte{1}, nil, []byte{1}, nil); return err },
		"grant no user":    func() error { return c.Grant(ctx, Access{UID: "k", Operations: []string{OpGet}}) },
		"grant bad op": func() error {
			return c.Grant(ctx, Access{UID: "k", UserID: "u", Operations: []string{"get_attributes"}})
		},
		"grant no uid":       func() error { return c.Grant(ctx, Access{UserID: "u", Operations: []string{OpEncrypt}}) },
		"list access no uid": func() error { _, err := c.ListAccess(ctx, ""); return err },
	} {
		t.Run(name, func(t *testing.T) {
			if f() == nil {
				t.Fatal("no error")
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Access rights and the plain endpoints

func TestAccessRights(t *testing.T) {
	grantFixture, err := os.ReadFile("testdata/kmip/test_data__vectors__access_control__grant_access_aes__step2_grant_access.json")
	if err != nil {
		t.Fatal(err)
	}
	revokeFixture, err := os.ReadFile("testdata/kmip/test_data__vectors__access_control__revoke_access__step4_revoke_get.json")
	if err != nil {
		t.Fatal(err)
	}
	fill := func(b []byte) any {
		var v any
		if err := json.Unmarshal(bytes.ReplaceAll(b, []byte("{{key_id}}"), []byte("k-1")), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	mux := http.NewServeMux()
	checkBody := func(w http.ResponseWriter, r *http.Request, want any, user string, verb string) {
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "Bearer "+testToken {
			t.Errorf("headers %v", r.Header)
		}
		b, _ := io.ReadAll(r.Body)
		var got any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("body %s", b)
		}
		wb, _ := json.Marshal(want)
		gb, _ := json.Marshal(got)
		if !bytes.Equal(wb, gb) {
			t.Errorf("body %s, want %s", gb, wb)
		}
		fmt.Fprintf(w, `{"success":"Access for %s successfully %s"}`, user, verb)
	}
	mux.HandleFunc("POST /access/grant", func(w http.ResponseWriter, r *http.Request) {
		checkBody(w, r, fill(grantFixture), "user.client@acme.com", "added")
	})
	mux.HandleFunc("POST /access/revoke", func(w http.ResponseWriter, r *http.Request) {
		checkBody(w, r, fill(revokeFixture), "user.client@acme.com", "deleted")
	})
	mux.HandleFunc("GET /access/list/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.EscapedPath() {
		case "/access/list/k-1":
			io.WriteString(w, `[{"user_id":"arn:aws:iam::123456789012:user/Alice","operations":["decrypt","encrypt","getattributes"]},{"user_id":"[aws-xks-service]","operations":["decrypt","encrypt","getattributes"]}]`)
		case "/access/list/a%2Fb%20c":
			io.WriteString(w, `[]`)
		case "/access/list/not-mine":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(401)
			io.WriteString(w, "Access denied: Object with uid not-mine is not owned by owner admin")
		default:
			t.Errorf("path %s", r.URL.EscapedPath())
		}
	})
	mux.HandleFunc("GET /access/owned", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"object_id":"k-1","state":"Active","attributes":{"CryptographicAlgorithm":"AES","CryptographicLength":256,"ObjectType":"SymmetricKey"}}]`)
	})
	mux.HandleFunc("GET /access/obtained", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"object_id":"k-2","owner_id":"bob","state":"Deactivated","operations":["encrypt","get"]}]`)
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `"5.26.0 (OpenSSL 3.6.2 7 Apr 2026-non-FIPS)"`)
	})
	var down atomic.Bool
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if down.Load() {
			w.WriteHeader(503)
			io.WriteString(w, `{"status":"DOWN","latency_ms":3,"dependencies":{"database":{"name":"sqlite","status":"DOWN","message":"db locked"}}}`)
			return
		}
		io.WriteString(w, `{"status":"UP","latency_ms":1,"dependencies":{"database":{"name":"sqlite","status":"UP"}}}`)
	})
	c, _ := newTestClient(t, mux.ServeHTTP)
	ctx := context.Background()

	t.Run("grant", func(t *testing.T) {
		if err := c.Grant(ctx, Access{UID: "k-1", UserID: "user.client@acme.com", Operations: []string{OpGet, OpEncrypt, OpDecrypt}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		if err := c.RevokeAccess(ctx, Access{UID: "k-1", UserID: "user.client@acme.com", Operations: []string{OpGet}}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("list", func(t *testing.T) {
		l, err := c.ListAccess(ctx, "k-1")
		if err != nil || len(l) != 2 || l[1].UserID != XKSServiceUser || !slices.Equal(l[0].Operations, []string{OpDecrypt, OpEncrypt, OpGetAttributes}) {
			t.Fatalf("ListAccess = %+v, %v", l, err)
		}
	})
	t.Run("list escapes uid", func(t *testing.T) {
		if l, err := c.ListAccess(ctx, "a/b c"); err != nil || len(l) != 0 {
			t.Fatalf("ListAccess = %+v, %v", l, err)
		}
	})
	t.Run("list not owner", func(t *testing.T) {
		if _, err := c.ListAccess(ctx, "not-mine"); !errors.Is(err, ErrAccessDenied) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("owned", func(t *testing.T) {
		o, err := c.Owned(ctx)
		if err != nil || len(o) != 1 || o[0].ObjectID != "k-1" || o[0].State != StateActive {
			t.Fatalf("Owned = %+v, %v", o, err)
		}
	})
	t.Run("obtained", func(t *testing.T) {
		o, err := c.Obtained(ctx)
		if err != nil || len(o) != 1 || o[0].OwnerID != "bob" || o[0].State != StateDeactivated || !slices.Equal(o[0].Operations, []string{"encrypt", "get"}) {
			t.Fatalf("Obtained = %+v, %v", o, err)
		}
	})
	t.Run("version", func(t *testing.T) {
		v, err := c.Version(ctx)
		if err != nil || !strings.HasPrefix(v, "5.26.0 ") {
			t.Fatalf("Version = %q, %v", v, err)
		}
	})
	t.Run("health", func(t *testing.T) {
		if err := c.Health(ctx); err != nil {
			t.Fatal(err)
		}
		down.Store(true)
		defer down.Store(false)
		if err := c.Health(ctx); !errors.Is(err, ErrServer) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestAccessJSONShape(t *testing.T) {
	b, _ := json.Marshal(Access{UserID: "u", Operations: []string{OpCreate}})
	if string(b) != `{"user_id":"u","operation_types":["create"]}` {
		t.Errorf("create grant %s", b)
	}
	b, _ = json.Marshal(Access{UID: "k", UserID: XKSServiceUser, Operations: XKSServiceOperations})
	if string(b) != `{"unique_identifier":"k","user_id":"[aws-xks-service]","operation_types":["encrypt","decrypt","getattributes"]}` {
		t.Errorf("xks grant %s", b)
	}
}

func BenchmarkEncryptRoundTrip(b *testing.B) {
	iv := make([]byte, 12)
	tag := make([]byte, 16)
	reply, _ := ttlv.Marshal(uidResponse("Encrypt", "k", ttlv.Bytes("Data", make([]byte, 4096)), ttlv.Bytes("IVCounterNonce", iv), ttlv.Bytes("AuthenticatedEncryptionTag", tag)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(reply)
	}))
	defer srv.Close()
	c, _ := NewClient(ClientConfig{BaseURL: srv.URL, HTTP: srv.Client()})
	pt := make([]byte, 4096)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Encrypt(context.Background(), "k", pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}
