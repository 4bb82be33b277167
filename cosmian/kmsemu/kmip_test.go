package kmsemu

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

func TestKMIPErrors(t *testing.T) {
	e := authEnv(t, Cosmian526)
	past := time.Now().Add(-time.Hour)
	e.kmipOK(ownerToken, createReq("k1", DefaultUsageMask, &past))
	tests := []struct {
		name   string
		token  string
		req    ttlv.Node
		raw    []byte
		status int
		text   string
	}{
		{"get unknown", ownerToken, ttlv.Struct("Get", uidNode("nope")), nil, 422, "Object_Not_Found: object not found for identifier nope"},
		{"get without grant hides existence", userToken, ttlv.Struct("Get", uidNode("k1")), nil, 422, "Object_Not_Found: object not found for identifier k1"},
		{"encrypt without grant", userToken, encryptReq("k1", []byte("x")), nil, 401, "Access denied: Encrypt: the user user.client@acme.com does not have permission to encrypt using the key: k1"},
		{"decrypt without grant", userToken, ttlv.Struct("Decrypt", uidNode("k1"), ttlv.Bytes("Data", []byte("x")), ttlv.Bytes("IVCounterNonce", make([]byte, 12))), nil, 401, "Access denied: Decrypt: the user user.client@acme.com does not have the permission to decrypt using the key: k1"},
		{"encrypt unknown", ownerToken, encryptReq("nope", []byte("x")), nil, 422, "Item not found: Encrypt: key id: nope, not found"},
		{"decrypt unknown", ownerToken, ttlv.Struct("Decrypt", uidNode("nope"), ttlv.Bytes("Data", []byte("x"))), nil, 422, "Item not found: Decrypt: failed to retrieve the key: nope"},
		{"decrypt bad tag", ownerToken, ttlv.Struct("Decrypt", uidNode("k1"), ttlv.Bytes("Data", []byte("x")), ttlv.Bytes("IVCounterNonce", make([]byte, 12)), ttlv.Bytes("AuthenticatedEncryptionTag", make([]byte, 16))), nil, 422, "Cryptographic_Failure: CRYPTO: error:"},
		{"decrypt missing iv", ownerToken, ttlv.Struct("Decrypt", uidNode("k1"), ttlv.Bytes("Data", []byte("x"))), nil, 422, "Invalid_Message: missing-iv"},
		{"encrypt without data", ownerToken, ttlv.Struct("Encrypt", uidNode("k1")), nil, 422, "Invalid Request: Encrypt: data to encrypt must be provided"},
		{"create duplicate", ownerToken, createReq("k1", 12, &past), nil, 422, "Database Error: Ext. store error: one or more objects already exist"},
		{"import [ uid", ownerToken, ttlv.Struct("Import", uidNode("[\"a\"]"), ttlv.Enum("ObjectType", "SymmetricKey"), ttlv.Struct("Attributes")), nil, 422, "Unexpected server error: Importing objects with unique identifiers starting with `[` is not supported"},
		{"destroy active", ownerToken, ttlv.Struct("Destroy", uidNode("k1")), nil, 422, "Wrong_Key_Lifecycle_State: DENIED"},
		{"destroy by non owner", userToken, ttlv.Struct("Destroy", uidNode("k1")), nil, 422, "Item_Not_Found: k1"},
		{"revoke by non owner", userToken, ttlv.Struct("Revoke", uidNode("k1"), ttlv.Struct("RevocationReason", ttlv.Enum("RevocationReasonCode", "Unspecified"))), nil, 422, "Item_Not_Found: k1"},
		{"revoke without reason", ownerToken, ttlv.Struct("Revoke", uidNode("k1")), nil, 422, "Codec_Error: missing field `RevocationReason`"},
		{"get without uid", ownerToken, ttlv.Struct("Get"), nil, 422, "This KMIP server does not yet support place holder id"},
		{"unknown operation", ownerToken, ttlv.Struct("Frobnicate"), nil, 404, "Route not supported: Operation: Frobnicate"},
		{"not JSON TTLV", ownerToken, ttlv.Node{}, []byte(`{"tag":`), 422, "Invalid Request: "},
		{"create non-symmetric", ownerToken, ttlv.Struct("Create", ttlv.Enum("ObjectType", "PrivateKey"), ttlv.Struct("Attributes")), nil, 422, "Not Supported: This server does not yet support creation of: PrivateKey"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.raw != nil {
				r := e.kmip(tc.token, tc.raw)
				if r.status != tc.status || !strings.HasPrefix(string(r.body), tc.text) {
					t.Fatalf("got %d %s", r.status, r.body)
				}
				return
			}
			e.kmipFail(tc.token, tc.req, tc.status, tc.text)
		})
	}
	t.Run("authentication", func(t *testing.T) {
		for _, tok := range []string{"", "wrong-token"} {
			r := e.kmip(tok, []byte(`{"tag":"Locate","value":[]}`))
			if r.status != 401 || string(r.body) != "No authentication provided." {
				t.Fatalf("token %q: %d %s", tok, r.status, r.body)
			}
		}
		r := e.do(http.MethodGet, "/me", userToken, "", nil)
		if r.status != 200 || string(r.body) != `{"user":"user.client@acme.com"}` {
			t.Fatalf("/me: %d %s", r.status, r.body)
		}
		for _, p := range []string{"/health", "/version"} {
			if r := e.do(http.MethodGet, p, "", "", nil); r.status != 200 || r.ctype != "application/json" {
				t.Fatalf("%s: %d %s", p, r.status, r.body)
			}
		}
	})
	t.Run("5xx body is generic", func(t *testing.T) {
		e.kmipFail(ownerToken, ttlv.Struct("Get", uidNode("[not json")), 500, "Internal server error")
	})
}

func TestRequestMessageShape(t *testing.T) {
	e := newEnv(t, Config{})
	past := time.Now().Add(-time.Hour)
	create := createReq("bk", DefaultUsageMask, &past)
	create.Tag = "RequestPayload"
	get := ttlv.Struct("RequestPayload", uidNode("missing"))
	msg := ttlv.Struct("RequestMessage",
		ttlv.Struct("RequestHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", 2), ttlv.Int("ProtocolVersionMinor", 1)),
			ttlv.Int("BatchCount", 2)),
		ttlv.Struct("BatchItem", ttlv.Enum("Operation", "Create"), ttlv.Bytes("UniqueBatchItemID", []byte{1, 2}), create),
		ttlv.Struct("BatchItem", ttlv.Enum("Operation", "Get"), get))
	resp := e.kmipOK("", msg)
	if resp.Tag != "ResponseMessage" || child(t, resp, "ResponseHeader", "BatchCount").Int != 2 ||
		child(t, resp, "ResponseHeader", "ProtocolVersion", "ProtocolVersionMajor").Int != 2 ||
		child(t, resp, "ResponseHeader", "TimeStamp").Type != ttlv.DateTime {
		t.Fatalf("header: %v", resp)
	}
	items := resp.All("BatchItem")
	if len(items) != 2 {
		t.Fatalf("items %d", len(items))
	}
	ok := items[0]
	if got := []string{ok.Children[0].Tag, ok.Children[1].Tag, ok.Children[2].Tag, ok.Children[3].Tag}; strings.Join(got, ",") != "Operation,UniqueBatchItemID,ResultStatus,ResponsePayload" {
		t.Fatalf("success item %v", got)
	}
	if child(t, ok, "ResultStatus").Str != "Success" || child(t, ok, "ResponsePayload", "UniqueIdentifier").Str != "bk" {
		t.Fatalf("success item %v", ok)
	}
	bad := items[1]
	if child(t, bad, "ResultStatus").Str != "OperationFailed" || child(t, bad, "ResultReason").Str != "Object_Not_Found" ||
		child(t, bad, "ResultMessage").Str != "object not found for identifier missing" {
		t.Fatalf("failed item %v", bad)
	}
	// An unparsable RequestMessage is answered 200 with an Invalid_Message item.
	r := e.kmip("", []byte(`{"tag":"RequestMessage","value":[]}`))
	n, err := ttlv.Unmarshal(r.body)
	if err != nil || r.status != 200 || child(t, n, "BatchItem", "ResultReason").Str != "Invalid_Message" {
		t.Fatalf("invalid message: %d %s", r.status, r.body)
	}
}

func TestUsageMaskEnforcement(t *testing.T) {
	e := authEnv(t, Cosmian526)
	past := time.Now().Add(-time.Hour)
	for _, k := range []struct {
		uid  string
		mask int32
	}{{"enc-only", maskEncrypt}, {"dec-only", maskDecrypt}, {"none", maskWrapKey | maskUnwrapKey}, {"unrestricted", maskUnrestricted}} {
		e.kmipOK(ownerToken, createReq(k.uid, k.mask, &past))
	}
	// A decryptable ciphertext for each key id via a full-usage key with the same material is not
	// possible; encrypt with enc-only / unrestricted keys and check decrypt separately.
	enc := e.kmipOK(ownerToken, encryptReq("enc-only", []byte("hello")))
	decReq := func(uid string, n ttlv.Node) ttlv.Node {
		return ttlv.Struct("Decrypt", uidNode(uid), child(t, n, "Data"), child(t, n, "IVCounterNonce"), child(t, n, "AuthenticatedEncryptionTag"))
	}
	// A key without the Encrypt (Decrypt) bit is skipped by key selection: Cosmian then answers
	// "not found" (key_ops/crypto_op.rs select_unique_key + encrypt.rs map_selection_error).
	e.kmipFail(ownerToken, encryptReq("dec-only", []byte("x")), 422, "Item not found: Encrypt: key id: dec-only, not found")
	e.kmipFail(ownerToken, encryptReq("none", []byte("x")), 422, "Item not found: Encrypt: key id: none, not found")
	e.kmipFail(ownerToken, decReq("enc-only", enc), 422, "Item not found: Decrypt: failed to retrieve the key: enc-only")
	e.kmipFail(ownerToken, decReq("none", enc), 422, "Item not found: Decrypt: failed to retrieve the key: none")
	u := e.kmipOK(ownerToken, encryptReq("unrestricted", []byte("hello")))
	if d := e.kmipOK(ownerToken, decReq("unrestricted", u)); string(child(t, d, "Data").Bytes) != "hello" {
		t.Fatal("unrestricted round trip")
	}
}

func TestLifecycle(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	clock := now
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	e := newEnv(t, Config{Now: func() time.Time { <-mu; defer func() { mu <- struct{}{} }(); return clock }})
	setClock := func(t time.Time) { <-mu; clock = t; mu <- struct{}{} }
	future := now.Add(time.Hour)
	past := now.Add(-time.Hour)

	t.Run("preactive until the activation date", func(t *testing.T) {
		e.kmipOK("", createReq("fut", DefaultUsageMask, &future))
		e.kmipFail("", encryptReq("fut", []byte("x")), 422, "Permission_Denied: Encrypt: key fut is in state PreActive but operation requires one of [Active]")
		setClock(future.Add(time.Second))
		defer setClock(now)
		e.kmipOK("", encryptReq("fut", []byte("x")))
	})
	t.Run("revoked: encrypt refused, decrypt ok, get refused, export ok", func(t *testing.T) {
		e.kmipOK("", createReq("rev", DefaultUsageMask, &past))
		ct := e.kmipOK("", encryptReq("rev", []byte("secret")))
		e.kmipOK("", ttlv.Struct("Revoke", uidNode("rev"), ttlv.Struct("RevocationReason", ttlv.Enum("RevocationReasonCode", "CessationOfOperation"))))
		e.kmipFail("", encryptReq("rev", []byte("x")), 422, "Permission_Denied: Encrypt: key rev is in state Deactivated")
		d := e.kmipOK("", ttlv.Struct("Decrypt", uidNode("rev"), child(t, ct, "Data"), child(t, ct, "IVCounterNonce"), child(t, ct, "AuthenticatedEncryptionTag")))
		if string(child(t, d, "Data").Bytes) != "secret" {
			t.Fatal("decrypt after revoke")
		}
		e.kmipFail("", ttlv.Struct("Get", uidNode("rev")), 422, "Wrong_Key_Lifecycle_State: DENIED")
		x := e.kmipOK("", ttlv.Struct("Export", uidNode("rev"), ttlv.Enum("KeyWrapType", "NotWrapped")))
		if child(t, x, "Attributes", "State").Str != stateDeactivated {
			t.Fatalf("export attrs %v", x)
		}
		// Revoking again with a compromise reason moves to Compromised; decrypt still works.
		e.kmipOK("", ttlv.Struct("Revoke", uidNode("rev"), ttlv.Struct("RevocationReason", ttlv.Enum("RevocationReasonCode", "KeyCompromise"))))
		if info, _ := e.s.Object("rev"); info.State != stateCompromised {
			t.Fatalf("state %s", info.State)
		}
		e.kmipOK("", ttlv.Struct("Decrypt", uidNode("rev"), child(t, ct, "Data"), child(t, ct, "IVCounterNonce"), child(t, ct, "AuthenticatedEncryptionTag")))
	})
	t.Run("destroy keeps the uid taken", func(t *testing.T) {
		e.kmipOK("", ttlv.Struct("Destroy", uidNode("rev")))
		if info, _ := e.s.Object("rev"); info.State != stateDestroyedCompromised {
			t.Fatalf("state %s", info.State)
		}
		e.kmipFail("", ttlv.Struct("Get", uidNode("rev")), 422, "Object_Destroyed: DENIED")
		// Export does not even see destroyed objects (retrieve_object_for_operation).
		e.kmipFail("", ttlv.Struct("Export", uidNode("rev")), 422, "Object_Not_Found: object not found for identifier rev")
		e.kmipFail("", createReq("rev", 12, &past), 422, "one or more objects already exist")
		imp := ttlv.Struct("Import", uidNode("rev"), ttlv.Enum("ObjectType", "SymmetricKey"), ttlv.Struct("Attributes"),
			ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock", ttlv.Enum("KeyFormatType", "Raw"),
				ttlv.Struct("KeyValue", ttlv.Bytes("KeyMaterial", make([]byte, 32))))))
		e.kmipFail("", imp, 422, "Database Error: Ext. store error: Database Error: one or more objects already exist")
		loc := e.kmipOK("", ttlv.Struct("Locate", ttlv.Struct("Attributes")))
		for _, id := range loc.All("UniqueIdentifier") {
			if id.Str == "rev" {
				t.Fatal("destroyed object located")
			}
		}
		e.kmipFail("", ttlv.Struct("Destroy", uidNode("rev")), 422, "Item_Not_Found: rev")
	})
	t.Run("destroy with remove frees the uid", func(t *testing.T) {
		e.kmipOK("", createReq("gone", DefaultUsageMask, nil)) // PreActive, no activation date
		e.kmipOK("", ttlv.Struct("Destroy", uidNode("gone"), ttlv.Bool("Remove", true)))
		if _, ok := e.s.Object("gone"); ok {
			t.Fatal("removed object still there")
		}
		e.kmipOK("", createReq("gone", DefaultUsageMask, nil))
	})
}

func TestLocatePaging(t *testing.T) {
	e := authEnv(t, Cosmian526)
	for i := 0; i < 1205; i++ {
		if err := e.s.CreateKey(ownerUser, fmt.Sprintf("key-%04d", i), KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.CreateKey(userUser, "other-user-key", KeyOptions{Tags: []string{"aws-xks"}}); err != nil {
		t.Fatal(err)
	}
	locate := func(token string, extra ...ttlv.Node) []string {
		attrs := ttlv.Struct("Attributes", ttlv.Enum("ObjectType", "SymmetricKey"),
			ttlv.Struct("Attribute", ttlv.Text("VendorIdentification", "cosmian"), ttlv.Text("AttributeName", "tag"), ttlv.Text("AttributeValue", `["aws-xks"]`)))
		n := e.kmipOK(token, ttlv.Struct("Locate", append(extra, attrs)...))
		var ids []string
		for _, c := range n.All("UniqueIdentifier") {
			ids = append(ids, c.Str)
		}
		if got := child(t, n, "LocatedItems").Int; int(got) != len(ids) {
			t.Fatalf("LocatedItems %d for %d ids", got, len(ids))
		}
		return ids
	}
	tests := []struct {
		name      string
		extra     []ttlv.Node
		wantN     int
		wantFirst string
	}{
		{"server cap 1000", nil, 1000, "key-0000"},
		{"MaximumItems 10", []ttlv.Node{ttlv.Int("MaximumItems", 10)}, 10, "key-0000"},
		{"MaximumItems above cap", []ttlv.Node{ttlv.Int("MaximumItems", 5000)}, 1000, "key-0000"},
		{"MaximumItems 0 returns nothing", []ttlv.Node{ttlv.Int("MaximumItems", 0)}, 0, ""},
		// Cosmian 5.26 ignores OffsetItems: the second page repeats the first.
		{"OffsetItems ignored", []ttlv.Node{ttlv.Int("MaximumItems", 1000), ttlv.Int("OffsetItems", 1000)}, 1000, "key-0000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids := locate(ownerToken, tc.extra...)
			if len(ids) != tc.wantN || (tc.wantN > 0 && ids[0] != tc.wantFirst) {
				t.Fatalf("got %d ids starting %v", len(ids), ids[:min(1, len(ids))])
			}
		})
	}
	t.Run("only owned or explicitly granted", func(t *testing.T) {
		if ids := locate(userToken); len(ids) != 1 || ids[0] != "other-user-key" {
			t.Fatalf("user sees %v", ids)
		}
		if err := e.s.GrantAccess(ownerUser, "key-0007", "*", "get"); err != nil {
			t.Fatal(err)
		}
		if ids := locate(userToken); len(ids) != 1 {
			t.Fatalf("a * grant must not make Locate return the key: %v", ids)
		}
		if err := e.s.GrantAccess(ownerUser, "key-0007", userUser, "getattributes"); err != nil {
			t.Fatal(err)
		}
		if ids := locate(userToken); len(ids) != 2 || ids[0] != "key-0007" {
			t.Fatalf("explicit grant: %v", ids)
		}
	})
}

func TestTagsAsIdentifier(t *testing.T) {
	e := newEnv(t, Config{})
	for _, k := range []struct{ id, tag string }{{"t1", "solo"}, {"t2", "pair"}, {"t3", "pair"}} {
		if err := e.s.CreateKey("admin", k.id, KeyOptions{Tags: []string{k.tag}}); err != nil {
			t.Fatal(err)
		}
	}
	enc := e.kmipOK("", encryptReq(`["solo"]`, []byte("x")))
	if child(t, enc, "UniqueIdentifier").Str != "t1" || len(child(t, enc, "IVCounterNonce").Bytes) != 12 || len(child(t, enc, "AuthenticatedEncryptionTag").Bytes) != 16 {
		t.Fatalf("encrypt by tag: %v", enc)
	}
	e.kmipFail("", encryptReq(`["pair"]`, []byte("x")), 422, `Invalid Request: Encrypt: identifier '["pair"]' resolves to 2 valid keys ["t2", "t3"]; use a unique identifier`)
	ga := e.kmipOK("", ttlv.Struct("GetAttributes", uidNode("t1"),
		ttlv.Struct("AttributeReference", ttlv.Text("VendorIdentification", "cosmian"), ttlv.Text("AttributeName", "tag")),
		ttlv.Enum("AttributeReference", "ActivationDate")))
	attrs := child(t, ga, "Attributes")
	if len(attrs.Children) != 2 || attrs.Children[0].Tag != "ActivationDate" || child(t, attrs, "Attribute", "AttributeValue").Str != `["_kk","solo"]` {
		t.Fatalf("GetAttributes with references: %v", attrs)
	}
}

func TestExportFormats(t *testing.T) {
	e := newEnv(t, Config{})
	material := bytes.Repeat([]byte{0x42}, 32)
	if err := e.s.CreateKey("admin", "plain", KeyOptions{Material: material}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.CreateKey("admin", "wrapped", KeyOptions{Material: material, Wrapped: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.s.CreateKey("admin", "sensitive", KeyOptions{Sensitive: true}); err != nil {
		t.Fatal(err)
	}
	t.Run("transparent", func(t *testing.T) {
		n := e.kmipOK("", ttlv.Struct("Get", uidNode("plain"), ttlv.Enum("KeyFormatType", "TransparentSymmetricKey")))
		k := child(t, n, "SymmetricKey", "KeyBlock", "KeyValue", "KeyMaterial", "Key")
		if !bytes.Equal(k.Bytes, material) || child(t, n, "SymmetricKey", "KeyBlock", "KeyFormatType").Str != "TransparentSymmetricKey" {
			t.Fatalf("got %v", n)
		}
	})
	t.Run("wrapped at rest comes back wrapped", func(t *testing.T) {
		n := e.kmipOK("", ttlv.Struct("Export", uidNode("wrapped")))
		kb := child(t, n, "SymmetricKey", "KeyBlock")
		if child(t, kb, "KeyValue").Type != ttlv.ByteString || child(t, kb, "KeyWrappingData", "EncryptionKeyInformation", "UniqueIdentifier").Str != kekUID {
			t.Fatalf("got %v", kb)
		}
		n = e.kmipOK("", ttlv.Struct("Export", uidNode("wrapped"), ttlv.Enum("KeyWrapType", "NotWrapped")))
		if !bytes.Equal(child(t, n, "SymmetricKey", "KeyBlock", "KeyValue", "KeyMaterial").Bytes, material) {
			t.Fatal("NotWrapped must unwrap")
		}
		if eq, err := e.s.KeyMaterialEqual("wrapped", e.s); err != nil || !eq {
			t.Fatalf("KeyMaterialEqual %v %v", eq, err)
		}
		// Encrypt works on a key wrapped at rest.
		e.kmipOK("", encryptReq("wrapped", []byte("x")))
	})
	t.Run("sensitive", func(t *testing.T) {
		e.kmipFail("", ttlv.Struct("Export", uidNode("sensitive"), ttlv.Enum("KeyWrapType", "NotWrapped")), 422, "Sensitive: DENIED")
		e.kmipFail("", ttlv.Struct("Get", uidNode("sensitive")), 422, "Sensitive: DENIED")
	})
	t.Run("copy A to B", func(t *testing.T) {
		b := newEnv(t, Config{})
		x := e.kmipOK("", ttlv.Struct("Export", uidNode("plain"), ttlv.Enum("KeyWrapType", "NotWrapped")))
		imp := ttlv.Struct("Import", uidNode("plain"), ttlv.Enum("ObjectType", "SymmetricKey"),
			ttlv.Struct("Attributes", ttlv.Date("ActivationDate", time.Now().Add(-time.Hour)), ttlv.Int("CryptographicUsageMask", DefaultUsageMask)),
			child(t, x, "SymmetricKey"))
		b.kmipOK("", imp)
		if eq, err := e.s.KeyMaterialEqual("plain", b.s); err != nil || !eq {
			t.Fatalf("material differs: %v %v", eq, err)
		}
		if eq, _ := e.s.KeyMaterialEqual("wrapped", e.s); !eq {
			t.Fatal("self compare")
		}
		if eq, _ := e.s.KeyMaterialEqual("sensitive", e.s); !eq {
			t.Fatal("self compare")
		}
		ct := e.kmipOK("", encryptReq("plain", []byte("cross")))
		d := b.kmipOK("", ttlv.Struct("Decrypt", uidNode("plain"), child(t, ct, "Data"), child(t, ct, "IVCounterNonce"), child(t, ct, "AuthenticatedEncryptionTag")))
		if string(child(t, d, "Data").Bytes) != "cross" {
			t.Fatal("B cannot decrypt A's ciphertext")
		}
	})
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, Config{MaxBody: 1024})
	r := e.kmip("", bytes.Repeat([]byte(" "), 2048))
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %d %s", r.status, r.body)
	}
}
