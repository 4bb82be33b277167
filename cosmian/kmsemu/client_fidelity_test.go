package kmsemu_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
)

// The production KMIP/access client driven against the emulator over real TLS: every operation
// the migration uses, and every error class, as the client classifies Cosmian's replies.

const (
	ownerTok = "owner-token-owner-token-owner-token"
	userTok  = "user-token-user-token-user-token-xx"
)

func clients(t *testing.T) (*kmsemu.Server, *cosmian.Client, *cosmian.Client) {
	t.Helper()
	emu, err := kmsemu.New(kmsemu.Config{Tokens: map[string]string{ownerTok: "owner@acme.com", userTok: "user@acme.com"}})
	if err != nil {
		t.Fatal(err)
	}
	run, err := emu.Start("127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run.Close() })
	mk := func(tok string) *cosmian.Client {
		c, err := cosmian.NewClient(cosmian.ClientConfig{
			BaseURL: run.URL,
			HTTP:    &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: run.CertPool}}},
			Header:  http.Header{"Authorization": {"Bearer " + tok}},
			Timeout: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return emu, mk(ownerTok), mk(userTok)
}

func TestClientAgainstEmulator(t *testing.T) {
	emu, owner, user := clients(t)
	ctx := context.Background()
	act := time.Now().Add(-time.Hour).Truncate(time.Second)

	uid, err := owner.Create(ctx, cosmian.CreateRequest{UID: "c-1", UsageMask: cosmian.UsageXKS, ActivationDate: &act, Tags: []string{cosmian.XKSTag, "team-a"}})
	if err != nil || uid != "c-1" {
		t.Fatalf("create: %q %v", uid, err)
	}
	a, err := owner.GetAttributes(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != cosmian.StateActive || a.Length != 256 || a.UsageMask != cosmian.UsageXKS || !a.ActivationDate.Equal(act) ||
		!slices.Equal(a.UserTags(), []string{"aws-xks", "team-a"}) {
		t.Fatalf("attributes %+v", a)
	}

	// Export → Import under the same uid on the same server is refused (already exists); with
	// another uid it makes an identical key: what the migration does between two servers.
	k, err := owner.Export(ctx, uid, true)
	if err != nil || len(k.Material) != 32 {
		t.Fatalf("export: %v", err)
	}
	_, err = owner.Import(ctx, cosmian.ImportRequest{UID: uid, Material: k.Material, Attributes: k.Attributes})
	if !errors.Is(err, cosmian.ErrAlreadyExists) {
		t.Errorf("import over an existing uid: %v, want ErrAlreadyExists", err)
	}
	if _, err := owner.Import(ctx, cosmian.ImportRequest{UID: "c-1-copy", Material: k.Material, Attributes: k.Attributes}); err != nil {
		t.Fatalf("import: %v", err)
	}
	k.Wipe()
	if eq, err := emu.KeyMaterialEqual("c-1", emu); err != nil || !eq {
		t.Fatalf("self compare: %v %v", eq, err)
	}
	aad := []byte("context")
	ct, err := owner.Encrypt(ctx, "c-1", []byte("hello"), aad)
	if err != nil || len(ct.IV) != 12 || len(ct.Tag) != 16 {
		t.Fatalf("encrypt: %+v %v", ct, err)
	}
	pt, err := owner.Decrypt(ctx, "c-1-copy", ct.Ciphertext, ct.IV, ct.Tag, aad)
	if err != nil || !bytes.Equal(pt, []byte("hello")) {
		t.Fatalf("decrypt with the imported copy: %q %v", pt, err)
	}

	// Access rights: owner-only, wire names, inherited by the user.
	if err := owner.Grant(ctx, cosmian.Access{UID: uid, UserID: "user@acme.com", Operations: []string{cosmian.OpEncrypt, cosmian.OpGetAttributes}}); err != nil {
		t.Fatal(err)
	}
	list, err := owner.ListAccess(ctx, uid)
	if err != nil || len(list) != 1 || !slices.Equal(list[0].Operations, []string{"encrypt", "getattributes"}) {
		t.Fatalf("list access: %+v %v", list, err)
	}
	if _, err := user.ListAccess(ctx, uid); !errors.Is(err, cosmian.ErrAccessDenied) {
		t.Errorf("list access as non-owner: %v, want ErrAccessDenied", err)
	}
	if _, err := user.Encrypt(ctx, uid, []byte("x"), nil); err != nil {
		t.Errorf("granted encrypt: %v", err)
	}
	if _, err := user.Decrypt(ctx, uid, ct.Ciphertext, ct.IV, ct.Tag, aad); !errors.Is(err, cosmian.ErrAccessDenied) {
		t.Errorf("decrypt without grant: %v, want ErrAccessDenied", err)
	}
	if _, err := user.Export(ctx, uid, true); !errors.Is(err, cosmian.ErrNotFound) {
		t.Errorf("export by a non-owner: %v, want ErrNotFound (Cosmian does not reveal existence)", err)
	}
	obt, err := user.Obtained(ctx)
	if err != nil || len(obt) != 1 || obt[0].ObjectID != uid {
		t.Errorf("obtained: %+v %v", obt, err)
	}

	// Lifecycle: revoked keys decrypt and export but do not encrypt or Get.
	if err := owner.Revoke(ctx, uid, cosmian.RevocationCessationOfOperation, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Encrypt(ctx, uid, []byte("x"), nil); err == nil {
		t.Error("encrypt with a revoked key succeeded")
	}
	if _, err := owner.Decrypt(ctx, uid, ct.Ciphertext, ct.IV, ct.Tag, aad); err != nil {
		t.Errorf("decrypt with a revoked key: %v", err)
	}
	if _, err := owner.Get(ctx, uid); !errors.Is(err, cosmian.ErrWrongState) {
		t.Errorf("get of a revoked key: %v, want ErrWrongState", err)
	}
	if k, err := owner.Export(ctx, uid, true); err != nil {
		t.Errorf("export of a revoked key: %v", err)
	} else {
		k.Wipe()
	}

	// Sensitive keys cannot leave unwrapped; unknown ids are not found.
	if err := emu.CreateKey("owner@acme.com", "sensitive", kmsemu.KeyOptions{Sensitive: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Export(ctx, "sensitive", true); !errors.Is(err, cosmian.ErrSensitive) {
		t.Errorf("export of a sensitive key: %v, want ErrSensitive", err)
	}

	// Cosmian 5.28 (the emulator's default) refuses any export of a key that is not
	// extractable; the attributes tell before trying, and an extractable key says so too.
	no := false
	if err := emu.CreateKey("owner@acme.com", "pinned", kmsemu.KeyOptions{Extractable: &no}); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() (*cosmian.ExportedKey, error){
		"export unwrapped": func() (*cosmian.ExportedKey, error) { return owner.Export(ctx, "pinned", true) },
		"export as stored": func() (*cosmian.ExportedKey, error) { return owner.Export(ctx, "pinned", false) },
		"get":              func() (*cosmian.ExportedKey, error) { return owner.Get(ctx, "pinned") },
	} {
		if _, err := f(); !errors.Is(err, cosmian.ErrNotExtractable) || errors.Is(err, cosmian.ErrSensitive) {
			t.Errorf("%s of a non-extractable key: %v, want ErrNotExtractable", name, err)
		}
	}
	for id, want := range map[string]bool{"pinned": false, "c-1": true} {
		a, err := owner.GetAttributes(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.Extractable == nil || a.NeverExtractable == nil || *a.Extractable != want || *a.NeverExtractable == want || a.Exportable() != want {
			t.Errorf("%s: attributes say extractable %v, never %v, exportable %v; want exportable %v", id, a.Extractable, a.NeverExtractable, a.Exportable(), want)
		}
	}
	if _, err := owner.GetAttributes(ctx, "no-such-key"); !errors.Is(err, cosmian.ErrNotFound) {
		t.Errorf("attributes of an unknown key: %v, want ErrNotFound", err)
	}
	if v, err := owner.Version(ctx); err != nil || v == "" {
		t.Errorf("version: %q %v", v, err)
	}
}

// Cosmian ≤ 5.26 ignores OffsetItems: the client must say the listing is incomplete rather
// than return the first 1000 keys as if they were all.
func TestClientLocateCap(t *testing.T) {
	emu, owner, _ := clients(t)
	for i := range 1205 {
		if err := emu.CreateKey("owner@acme.com", fmt.Sprintf("bulk-%04d", i), kmsemu.KeyOptions{Tags: []string{"bulk"}}); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := owner.Locate(context.Background(), cosmian.LocateRequest{Tags: []string{"bulk"}})
	if !errors.Is(err, cosmian.ErrLocateIncomplete) || len(ids) != 1000 {
		t.Fatalf("locate over the cap: %d ids, %v; want 1000 and ErrLocateIncomplete", len(ids), err)
	}
	owned, err := owner.Owned(context.Background())
	if err != nil || len(owned) != 1205 {
		t.Fatalf("owned lists every key: %d %v", len(owned), err)
	}
}
