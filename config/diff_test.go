package config

import (
	"slices"
	"testing"
)

func TestChanges(t *testing.T) {
	base := func() *File {
		f, _, err := Parse("x.toml", []byte(minimal("")))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name string
		edit func(f *File)
		want []string
	}{
		{"none", func(f *File) {}, nil},
		{"scalar", func(f *File) { f.Server.Limits.Budget = Duration(1) }, []string{"server.limits.budget"}},
		{"in a list", func(f *File) { f.Backend[0].Timeout = Duration(1) }, []string{"backend[0].timeout"}},
		{"list length", func(f *File) { f.Backend = append(f.Backend, Backend{}) }, []string{"backend"}},
		{"secret, named not shown", func(f *File) { f.Prefix[0].Credential[0].SecretAccessKey = "other" }, []string{"prefix[0].credential[0].secret_access_key"}},
		{"pointer set", func(f *File) { f.Cutover.ShadowSampleRate = new(0.5) }, []string{"cutover.shadow_sample_rate"}},
		{"two", func(f *File) { f.Health.Disabled = true; f.Log.Level = "debug" }, []string{"health.disabled", "log.level"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base(), base()
			tc.edit(b)
			if got := Changes(a, b); !slices.Equal(got, tc.want) {
				t.Errorf("Changes = %q, want %q", got, tc.want)
			}
		})
	}
}
