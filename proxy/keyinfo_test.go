package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/xks"
)

// emuReader answers GetAttributes from an emulator's store, as the keys' owner would see them.
type emuReader struct {
	s     *kmsemu.Server
	calls atomic.Int64
	fail  atomic.Bool
}

func (r *emuReader) GetAttributes(_ context.Context, uid string) (*cosmian.KeyAttributes, error) {
	r.calls.Add(1)
	if r.fail.Load() {
		return nil, errors.New("backend KMIP unreachable")
	}
	info, ok := r.s.Object(uid)
	if !ok {
		return nil, fmt.Errorf("GetAttributes %s: %w", uid, cosmian.ErrNotFound)
	}
	return &cosmian.KeyAttributes{UsageMask: info.UsageMask, State: info.State}, nil
}

func TestKeyUsageAndStatus(t *testing.T) {
	readers := map[string]*emuReader{}
	e := newEmuEnv(t, func(c *Config) {
		c.KeyInfo.Readers = map[string]KeyAttributeReader{}
		for _, n := range []string{"a", "b"} {
			readers[n] = &emuReader{}
			c.KeyInfo.Readers[n] = readers[n]
		}
	})
	readers["a"].s, readers["b"].s = e.ea, e.eb
	masks := map[string]int32{
		"u-enc": cosmian.UsageEncrypt, "u-dec": cosmian.UsageDecrypt, "u-none": cosmian.UsageWrapKey | cosmian.UsageUnwrapKey,
		"u-all": cosmian.UsageUnrestricted, "u-revoked": cosmian.UsageXKS,
	}
	for uid, mask := range masks {
		if err := e.ea.CreateKey("admin", uid, kmsemu.KeyOptions{Material: sharedKey, UsageMask: mask, Tags: []string{"aws-xks"}}); err != nil {
			t.Fatal(err)
		}
		if err := e.ea.GrantAccess("admin", uid, aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.ea.RevokeKey("u-revoked", cosmian.RevocationCessationOfOperation); err != nil {
		t.Fatal(err)
	}
	ct := e.encrypt(t, "k1", []byte("0123456789abcdef"), nil) // k1 has every usage; its material is shared
	for _, tc := range []struct {
		key       string
		op        xks.Operation
		status    int
		errName   string   // "" → success
		usage     []string // metadata
		keyStatus string
	}{
		{key: "u-enc", op: xks.OpEncrypt, status: 200},
		{key: "u-enc", op: xks.OpDecrypt, status: 400, errName: "InvalidKeyUsageException"},
		{key: "u-dec", op: xks.OpEncrypt, status: 400, errName: "InvalidKeyUsageException"},
		{key: "u-dec", op: xks.OpDecrypt, status: 200},
		{key: "u-none", op: xks.OpEncrypt, status: 400, errName: "InvalidKeyUsageException"},
		{key: "u-none", op: xks.OpDecrypt, status: 400, errName: "InvalidKeyUsageException"},
		{key: "u-all", op: xks.OpEncrypt, status: 200},
		{key: "absent", op: xks.OpEncrypt, status: 404, errName: "KeyNotFoundException"},
		{key: "u-enc", op: xks.OpMetadata, status: 200, usage: []string{"ENCRYPT"}, keyStatus: "ENABLED"},
		{key: "u-none", op: xks.OpMetadata, status: 200, usage: []string{"WRAP", "UNWRAP"}, keyStatus: "ENABLED"},
		{key: "u-all", op: xks.OpMetadata, status: 200, usage: []string{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}, keyStatus: "ENABLED"},
		{key: "u-revoked", op: xks.OpMetadata, status: 200, usage: []string{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}, keyStatus: "DISABLED"},
	} {
		t.Run(tc.key+"/"+tc.op.String(), func(t *testing.T) {
			var body []byte
			switch tc.op {
			case xks.OpEncrypt:
				body = encBody([]byte("hello"), nil)
			case xks.OpDecrypt:
				body = decBody(ct, nil)
			case xks.OpMetadata:
				body = []byte(`{"requestMetadata":` + meta("GetKeyMetadata") + `}`)
			}
			before := readers["a"].calls.Load()
			st, b := e.post(t, keysPath+tc.key+opSegment(tc.op), body)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, b)
			}
			if tc.errName != "" && errName(t, b) != tc.errName {
				t.Fatalf("%s, want %s", b, tc.errName)
			}
			if tc.op == xks.OpMetadata {
				var m xks.MetadataResponse
				if err := json.Unmarshal(b, &m); err != nil || !slices.Equal(m.KeyUsage, tc.usage) || m.KeyStatus != tc.keyStatus || m.KeySpec != "AES_256" {
					t.Fatalf("metadata %s, want usage %v status %s", b, tc.usage, tc.keyStatus)
				}
			} else if tc.errName == "" && readers["a"].calls.Load() != before {
				t.Fatal("a successful Encrypt/Decrypt asked the reader: the hot path must not")
			}
		})
	}
	t.Run("cached", func(t *testing.T) {
		before := readers["a"].calls.Load()
		for range 3 {
			if st, b := e.post(t, keysPath+"u-dec/encrypt", encBody([]byte("x"), nil)); st != 400 {
				t.Fatalf("%d %s", st, b)
			}
		}
		if n := readers["a"].calls.Load() - before; n != 0 {
			t.Fatalf("%d look-ups within the TTL, want 0", n)
		}
	})
	t.Run("reader failing keeps Cosmian's answer", func(t *testing.T) {
		readers["a"].fail.Store(true)
		defer readers["a"].fail.Store(false)
		if err := e.ea.CreateKey("admin", "u-fresh", kmsemu.KeyOptions{UsageMask: cosmian.UsageDecrypt}); err != nil {
			t.Fatal(err)
		}
		if err := e.ea.GrantAccess("admin", "u-fresh", aliceARN, "encrypt", "decrypt", "getattributes"); err != nil {
			t.Fatal(err)
		}
		if st, b := e.post(t, keysPath+"u-fresh/encrypt", encBody([]byte("x"), nil)); st != 404 || errName(t, b) != "KeyNotFoundException" {
			t.Fatalf("%d %s", st, b)
		}
	})
}

func TestKeyUsages(t *testing.T) {
	for _, tc := range []struct {
		mask int32
		want []string
	}{
		{0, []string{}},
		{cosmian.UsageEncrypt | cosmian.UsageUnwrapKey, []string{"ENCRYPT", "UNWRAP"}},
		{cosmian.UsageUnrestricted, []string{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}},
		{cosmian.UsageSign | cosmian.UsageDecrypt, []string{"DECRYPT"}},
	} {
		t.Run(fmt.Sprint(tc.mask), func(t *testing.T) {
			if got := KeyUsages(tc.mask); !slices.Equal(got, tc.want) {
				t.Fatalf("%v, want %v", got, tc.want)
			}
		})
	}
	for state, want := range map[string]string{cosmian.StateActive: "ENABLED", cosmian.StateDeactivated: "DISABLED", cosmian.StatePreActive: "DISABLED", cosmian.StateCompromised: "DISABLED"} {
		if got := KeyStatus(state); got != want {
			t.Errorf("KeyStatus(%s) = %s, want %s", state, got, want)
		}
	}
}
