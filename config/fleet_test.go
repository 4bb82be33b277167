package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFleet(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "etcd.pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XKS_TEST_ETCD_PW", "from-env")
	t.Run("absent", func(t *testing.T) {
		f, _, err := Parse("x.toml", []byte(minimal("")))
		if err != nil || f.Fleet != nil {
			t.Fatalf("Fleet = %+v, %v", f.Fleet, err)
		}
	})
	t.Run("full", func(t *testing.T) {
		f, _, err := Parse("x.toml", []byte(minimal(`[fleet]
etcd_endpoints = ["https://etcd-0:2379", "https://etcd-1:2379"]
member = "xks-1"
key_prefix = "/xksproxy/prod/"
lease_ttl = "15s"
dial_timeout = "3s"
username = "xksproxy"
password_file = "`+pw+`"
advertise_admin = "http://10.0.0.5:9443"
`)))
		if err != nil {
			t.Fatal(err)
		}
		fl := f.Fleet
		if len(fl.EtcdEndpoints) != 2 || fl.Member != "xks-1" || fl.KeyPrefix != "/xksproxy/prod/" ||
			fl.LeaseTTL.D() != 15*time.Second || fl.DialTimeout.D() != 3*time.Second || fl.Password != "s3cret" {
			t.Fatalf("fleet = %+v", fl)
		}
	})
	t.Run("password from env", func(t *testing.T) {
		f, _, err := Parse("x.toml", []byte(minimal("[fleet]\netcd_endpoints = [\"https://e:2379\"]\nusername = \"u\"\npassword_env = \"XKS_TEST_ETCD_PW\"\n")))
		if err != nil || f.Fleet.Password != "from-env" {
			t.Fatalf("%+v, %v", f.Fleet, err)
		}
	})
	for _, tc := range []struct{ name, doc, want string }{
		{"no endpoints", "[fleet]\nmember = \"m\"\n", "x.toml:16: fleet.etcd_endpoints: required"},
		{"bad endpoint", "[fleet]\netcd_endpoints = [\"etcd-0\"]\n", "x.toml:17: fleet.etcd_endpoints[0]: must be"},
		{"bad member", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nmember = \"a b\"\n", "x.toml:18: fleet.member: "},
		{"bad prefix", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nkey_prefix = \"x\"\n", "x.toml:18: fleet.key_prefix: "},
		{"short lease", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nlease_ttl = \"1s\"\n", "x.toml:18: fleet.lease_ttl: "},
		{"missing ca", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nca_file = \"/nonexistent/ca.pem\"\n", "x.toml:18: fleet.ca_file: "},
		{"half pair", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\ncert_file = \"" + pw + "\"\n", "x.toml:16: fleet.key_file: "},
		{"two passwords", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nusername = \"u\"\npassword = \"p\"\npassword_env = \"X\"\n", "x.toml:19: fleet.password: give exactly one"},
		{"user without password", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nusername = \"u\"\n", "x.toml:16: fleet.password: required"},
		{"password without user", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\npassword = \"p\"\n", "x.toml:16: fleet.username: "},
		{"unknown key", "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nendpoints = []\n", "x.toml:18: fleet.endpoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("x.toml", []byte(minimal(tc.doc)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
