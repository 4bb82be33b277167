package devstack

import (
	"testing"

	"github.com/xksproxy/xksproxy/internal/cli"
)

// xksproxy checks --dev-key with cli.SplitKey before it starts the dev tool: every usage that
// rule accepts must be one this package can create, and ParseKey must agree with it.
func TestParseKeyUsages(t *testing.T) {
	for _, u := range cli.KeyUsages {
		if _, err := Usage(u).Mask(); err != nil {
			t.Errorf("usage %q accepted by xksproxy has no KMIP mask: %v", u, err)
		}
	}
	for _, tc := range []struct {
		in    string
		id    string
		usage Usage
		ok    bool
	}{
		{"k1", "k1", UsageEncryptDecrypt, true},
		{"k1:encrypt", "k1", UsageEncrypt, true},
		{"k1:decrypt", "k1", UsageDecrypt, true},
		{"k1:none", "k1", UsageNone, true},
		{"k1:sign", "", "", false},
		{":encrypt", "", "", false},
	} {
		k, err := ParseKey(tc.in)
		if (err == nil) != tc.ok || k.ID != tc.id || k.Usage != tc.usage {
			t.Errorf("ParseKey(%q) = %+v, %v", tc.in, k, err)
		}
	}
}
