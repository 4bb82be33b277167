package cli

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
	"time"
)

// Args hands xksproxy-dev exactly the flags xksproxy parsed: parsing its output again gives
// the same values.
func TestArgsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"none", nil},
		{"demo", []string{"--keys", "7", "--rps", "12.5", "--shadow", "1m30s", "--no-shadow", "--json", "--log-level", "warn"}},
		{"repeated and spaces", []string{"--dev-key", "a:encrypt", "--dev-key", "b", "--listen", "127.0.0.1:0", "--dev-prefix", "/a b,c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parse := func(args []string) (*flag.FlagSet, DemoFlags, DevFlags) {
				fs := flag.NewFlagSet("x", flag.ContinueOnError)
				fs.SetOutput(io.Discard)
				var d DemoFlags
				var v DevFlags
				d.Register(fs)
				// The demo's and --dev's log-level would clash in one set: --dev's is left out.
				v.registerWithout(fs, "log-level")
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				return fs, d, v
			}
			fs, d1, v1 := parse(tc.args)
			_, d2, v2 := parse(Args(fs))
			if d1 != d2 || !slices.Equal(v1.Keys, v2.Keys) || v1.Listen != v2.Listen || v1.Prefix != v2.Prefix {
				t.Errorf("after Args(%q) = %q:\n%+v\n%+v\n%+v\n%+v", tc.args, Args(fs), d1, d2, v1, v2)
			}
		})
	}
}

// registerWithout registers the --dev flags except one (for TestArgsRoundTrip).
func (d *DevFlags) registerWithout(fs *flag.FlagSet, name string) {
	all := flag.NewFlagSet("", flag.ContinueOnError)
	d.Register(all)
	all.VisitAll(func(f *flag.Flag) {
		if f.Name != name {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    DevFlags
		ok   bool
	}{
		{"defaults", DevFlags{LogLevel: "info"}, true},
		{"bad level", DevFlags{LogLevel: "loud"}, false},
		{"bad usage", DevFlags{LogLevel: "info", Keys: Repeated{"k1:sign"}}, false},
		{"empty id", DevFlags{LogLevel: "info", Keys: Repeated{":encrypt"}}, false},
		{"half a credential", DevFlags{LogLevel: "info", AccessKeyID: "AKIAEXAMPLEEXAMPLE12"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.d.Check()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrUsage)) {
				t.Errorf("Check() = %v", err)
			}
		})
	}
	if err := (&DemoFlags{LogLevel: "loud"}).Check(); !errors.Is(err, ErrUsage) {
		t.Errorf("demo Check() = %v", err)
	}
}

func TestDurationRefusesNegative(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var d time.Duration
	DurationVar(fs, &d, "d", time.Second, "")
	if err := fs.Parse([]string{"--d", "-1s"}); err == nil {
		t.Fatal("a negative duration was accepted")
	}
	if err := fs.Parse([]string{"--d", "90s"}); err != nil || d != 90*time.Second {
		t.Fatalf("%v %v", d, err)
	}
}
