package sigv4

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestCredentialValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     Credential
		field string // "" = valid
	}{
		{"aws format", credA, ""},
		{"min lengths", Credential{AccessKeyID: strings.Repeat("A", 16), Secret: "12345678"}, ""},
		{"max lengths", Credential{AccessKeyID: strings.Repeat("9", 128), Secret: strings.Repeat("~", 128)}, ""},
		{"akid short", Credential{AccessKeyID: "AKIDEXAMPLE", Secret: credA.Secret}, "access key id"},
		{"akid long", Credential{AccessKeyID: strings.Repeat("A", 129), Secret: credA.Secret}, "access key id"},
		{"akid lowercase", Credential{AccessKeyID: "akiaxksproxytestaaaa", Secret: credA.Secret}, "access key id"},
		{"secret short", Credential{AccessKeyID: credA.AccessKeyID, Secret: "1234567"}, "secret"},
		{"secret long", Credential{AccessKeyID: credA.AccessKeyID, Secret: strings.Repeat("s", 129)}, "secret"},
		{"secret space", Credential{AccessKeyID: credA.AccessKeyID, Secret: "secret secret"}, "secret"},
		{"secret control", Credential{AccessKeyID: credA.AccessKeyID, Secret: "secret\nsecret"}, "secret"},
		{"secret utf8", Credential{AccessKeyID: credA.AccessKeyID, Secret: "sécretsecret"}, "secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidCredential) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want one naming %q", err, tc.field)
			}
			if strings.Contains(err.Error(), tc.c.Secret) {
				t.Fatalf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestCredentialRedaction(t *testing.T) {
	c := credA
	type exported struct {
		Name string
		Cred Credential
		Ptr  *Credential
		List []Credential
	}
	outer := exported{"x", c, &c, []Credential{c, credB}}
	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%10.3v", "%-v"} {
		outs = append(outs, fmt.Sprintf(f, c), fmt.Sprintf(f, &c), fmt.Sprintf(f, outer), fmt.Sprintf(f, []Credential{c}))
	}
	outs = append(outs, fmt.Sprint(c), fmt.Sprintln(c, &c), c.String(), c.GoString(), fmt.Errorf("wrapped: %v", c).Error())
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, nil), slog.NewJSONHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("cred", "c", c, "p", &c, slog.Any("a", c), slog.Group("g", "c", c))
		l.With("c", c).Info("with")
		l.Info("outer", "o", outer)
	}
	outs = append(outs, buf.String())
	j, err := json.Marshal(outer)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	for _, o := range outs {
		for _, secret := range []string{credA.Secret, credB.Secret, credA.Secret[:12]} {
			if strings.Contains(o, secret) {
				t.Fatalf("secret leaked in %q", o)
			}
		}
	}
	// The access key id stays visible for operators.
	for _, o := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%#v", c), buf.String(), string(j)} {
		if !strings.Contains(o, c.AccessKeyID) {
			t.Fatalf("access key id missing from %q", o)
		}
	}
}
