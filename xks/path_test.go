package xks

import (
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	long := "/" + strings.Repeat("p", 128-len(APIPathSuffix)-1)
	cases := []struct {
		path    string
		prefix  string
		op      Operation
		keyID   string
		ok      bool
		wantErr bool
	}{
		{"/kms/xks/v1/health", "", OpHealth, "", true, false},
		{"/aws/kms/xks/v1/health", "/aws", OpHealth, "", true, false},
		{"/aws/kms/xks/v1/keys/k1/encrypt", "/aws", OpEncrypt, "k1", true, false},
		{"/aws/kms/xks/v1/keys/k1/decrypt", "/aws", OpDecrypt, "k1", true, false},
		{"/kms/xks/v1/keys/a-B_9.z/metadata", "", OpMetadata, "a-B_9.z", true, false},
		{"/a/b-c/d_e/kms/xks/v1/keys/health/metadata", "/a/b-c/d_e", OpMetadata, "health", true, false},
		{"/x/kms/xks/v1/kms/xks/v1/health", "/x/kms/xks/v1", OpHealth, "", true, false},
		{long + "/kms/xks/v1/health", long, OpHealth, "", true, false},
		{"/kms/xks/v1/keys/" + strings.Repeat("k", 128) + "/encrypt", "", OpEncrypt, strings.Repeat("k", 128), true, false},
		// Right shape, bad key id: ValidationException.
		{"/kms/xks/v1/keys/" + strings.Repeat("k", 129) + "/encrypt", "", OpEncrypt, "", true, true},
		{"/kms/xks/v1/keys/k%2F1/encrypt", "", OpEncrypt, "", true, true},
		{"/kms/xks/v1/keys/[\"tag\"]/encrypt", "", OpEncrypt, "", true, true},
		{"/kms/xks/v1/keys/k:1/decrypt", "", OpDecrypt, "", true, true},
		// Not XKS paths.
		{"", "", 0, "", false, false},
		{"/", "", 0, "", false, false},
		{"/kms/xks/v1", "", 0, "", false, false},
		{"/kms/xks/v1/", "", 0, "", false, false},
		{"/kms/xks/v1/health/", "", 0, "", false, false},
		{"/kms/xks/v2/health", "", 0, "", false, false},
		{"/kms/xks/v1/keys//encrypt", "", 0, "", false, false},
		{"/kms/xks/v1/keys/k1/sign", "", 0, "", false, false},
		{"/kms/xks/v1/keys/k1", "", 0, "", false, false},
		{"/kms/xks/v1/keys/k1/encrypt/", "", 0, "", false, false},
		{"/kms/xks/v1/k1/encrypt", "", 0, "", false, false},
		{"/kms/xks/v1/keys/a/b/encrypt", "", 0, "", false, false},
		{"kms/xks/v1/health", "", 0, "", false, false},
		{"aws/kms/xks/v1/health", "", 0, "", false, false},
		{"//kms/xks/v1/health", "", 0, "", false, false},
		{"/a.b/kms/xks/v1/health", "", 0, "", false, false},
		{long + "p/kms/xks/v1/health", "", 0, "", false, false},
		{"/KMS/XKS/V1/health", "", 0, "", false, false},
		{"/kms/xks/v1/HEALTH", "", 0, "", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			prefix, op, keyID, ok, err := ParsePath(tc.path)
			if prefix != tc.prefix || op != tc.op || keyID != tc.keyID || ok != tc.ok || (err != nil) != tc.wantErr {
				t.Fatalf("ParsePath = %q %v %q %v %v", prefix, op, keyID, ok, err)
			}
			if err != nil && NameOf(err) != ValidationException {
				t.Fatalf("err name %s", NameOf(err))
			}
		})
	}
}

func TestValidPrefixAndKeyID(t *testing.T) {
	for _, p := range []string{"", "/a", "/aws", "/a/b/c", "/A-Z_0-9", "//"} {
		if err := ValidPrefix(p); err != nil {
			t.Errorf("ValidPrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "aws", "/a.b", "/a b", "/é", "/" + strings.Repeat("a", 117)} {
		if err := ValidPrefix(p); NameOf(err) != ValidationException {
			t.Errorf("ValidPrefix(%q) = %v", p, err)
		}
	}
	for _, id := range []string{"k", "a.b-c_D9", strings.Repeat("x", 128), "..k", "k."} {
		if err := ValidKeyID(id); err != nil {
			t.Errorf("ValidKeyID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("x", 129), "a/b", "a b", "a%20", "é", "[\"t\"]", ".", "..", "..."} {
		err := ValidKeyID(id)
		if NameOf(err) != ValidationException {
			t.Errorf("ValidKeyID(%q) = %v", id, err)
		}
		if id != "" && strings.Contains(err.Error(), id) {
			t.Errorf("message echoes the id: %v", err)
		}
	}
	for op, s := range map[Operation]string{OpHealth: "GetHealthStatus", OpMetadata: "GetKeyMetadata", OpEncrypt: "Encrypt", OpDecrypt: "Decrypt", 0: "Unknown"} {
		if op.String() != s {
			t.Errorf("%d.String() = %q", op, op.String())
		}
	}
}
