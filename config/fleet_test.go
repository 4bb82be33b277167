package config

import (
	"encoding/base64"
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
advertise_admin = "https://10.0.0.5:9443"
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
	t.Run("advertise_admin as is", func(t *testing.T) {
		f, _, err := Parse("x.toml", []byte(minimal("[fleet]\netcd_endpoints = [\"https://e:2379\"]\nadvertise_admin = \"https://10.0.0.5:9443\"\n")))
		if err != nil || f.Fleet.Advertise != "https://10.0.0.5:9443" {
			t.Fatalf("%+v, %v", f.Fleet, err)
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

// adminTLSDoc is an [admin] listener on every address with the server's certificate, as the
// shipped fleet files have it.
const adminTLSDoc = "[admin]\nlisten = \"0.0.0.0:9465\"\nallow_remote = true\ntls = true\ntoken = \"0123456789abcdef0123456789abcdef\"\n"

func TestFleetSecret(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodFile := write("fleet-secret", good+"\n", 0o600)
	openFile := write("fleet-secret-open", good+"\n", 0o644)
	shortFile := write("fleet-secret-short", base64.StdEncoding.EncodeToString([]byte("too short"))+"\n", 0o600)
	textFile := write("fleet-secret-text", "REPLACE-WITH-openssl-rand-base64-32\n", 0o600)
	t.Setenv("XKS_TEST_FLEET_SECRET", good)
	fleetDoc := func(keys string) string {
		return minimal(adminTLSDoc + "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nadvertise_admin = \"https://10.0.0.5:9465\"\n" + keys)
	}
	for _, tc := range []struct {
		name, keys, err, warn string
	}{
		{"file", "secret_file = \"" + goodFile + "\"\n", "", ""},
		{"env", "secret_env = \"XKS_TEST_FLEET_SECRET\"\n", "", ""},
		{"group-readable file", "secret_file = \"" + openFile + "\"\n", "", "fleet.secret_file: " + openFile + " is readable by group or others"},
		{"none", "", "", "fleet.secret_file: no fleet secret"},
		{"both", "secret_file = \"" + goodFile + "\"\nsecret_env = \"XKS_TEST_FLEET_SECRET\"\n", "fleet.secret_file: give one of", ""},
		{"short", "secret_file = \"" + shortFile + "\"\n", "fleet.secret_file: 9 bytes once decoded, at least 32", ""},
		{"not base64", "secret_file = \"" + textFile + "\"\n", "fleet.secret_file: not base64", ""},
		{"missing file", "secret_file = \"" + filepath.Join(dir, "nope") + "\"\n", "fleet.secret_file: cannot read", ""},
		{"unset env", "secret_env = \"XKS_TEST_FLEET_SECRET_UNSET\"\n", "fleet.secret_env: environment variable XKS_TEST_FLEET_SECRET_UNSET is not set", ""},
		{"inline is not a key", "secret = \"" + good + "\"\n", "fleet.secret: unknown key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, warns, err := Parse("x.toml", []byte(fleetDoc(tc.keys)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "REPLACE") {
					t.Fatalf("the error quotes the file's content: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.keys != "" && string(f.Fleet.Secret) != "0123456789abcdef0123456789abcdef" {
				t.Fatalf("secret not decoded: %d bytes", len(f.Fleet.Secret))
			}
			if tc.warn != "" && !strings.Contains(strings.Join(warns, "\n"), tc.warn) {
				t.Fatalf("warnings %q lack %q", warns, tc.warn)
			}
			for _, w := range warns {
				if strings.Contains(w, good) {
					t.Fatalf("a warning quotes the secret: %s", w)
				}
			}
		})
	}
}

func TestAdvertiseAdmin(t *testing.T) {
	t.Setenv("XKS_TEST_POD_IP", "10.1.2.3")
	t.Setenv("XKS_TEST_POD_IP6", "fd00::12")
	t.Setenv("XKS_TEST_HOST", "xks-2.internal")
	t.Setenv("XKS_TEST_BAD", "10.1.2.3/evil@x")
	loopAdmin := "[admin]\nlisten = \"127.0.0.1:9465\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n"
	for _, tc := range []struct {
		name, admin, advertise, want, err string
	}{
		{"pod IP", adminTLSDoc, "https://${XKS_TEST_POD_IP}:9465", "https://10.1.2.3:9465", ""},
		{"IPv6 pod IP gets brackets", adminTLSDoc, "https://${XKS_TEST_POD_IP6}:9465", "https://[fd00::12]:9465", ""},
		{"IPv6 already bracketed", adminTLSDoc, "https://[${XKS_TEST_POD_IP6}]:9465", "https://[fd00::12]:9465", ""},
		{"host name", adminTLSDoc, "https://${XKS_TEST_HOST}:9465", "https://xks-2.internal:9465", ""},
		{"a dollar alone stays", adminTLSDoc, "https://h$x:9465", "https://h$x:9465", ""},
		{"unset variable", adminTLSDoc, "https://${XKS_TEST_UNSET}:9465", "", "environment variable XKS_TEST_UNSET is not set"},
		{"value not a host", adminTLSDoc, "https://${XKS_TEST_BAD}:9465", "", "XKS_TEST_BAD is not a host name or an IP address"},
		{"unclosed", adminTLSDoc, "https://${XKS_TEST_POD_IP:9465", "", "unclosed ${"},
		{"bad name", adminTLSDoc, "https://${1X}:9465", "", "not an environment variable name"},
		{"http with admin TLS", adminTLSDoc, "http://${XKS_TEST_POD_IP}:9465", "", "http:// while the admin listener has TLS"},
		{"loopback from a remote listener", adminTLSDoc, "https://127.0.0.1:9465", "", "127.0.0.1 names each replica's own host"},
		{"unspecified", adminTLSDoc, "https://0.0.0.0:9465", "", "0.0.0.0 names each replica's own host"},
		{"a path", adminTLSDoc, "https://10.1.2.3:9465/admin", "", "host:port only"},
		{"http loopback, single host", loopAdmin, "http://127.0.0.1:9465", "http://127.0.0.1:9465", ""},
		{"http beyond loopback", loopAdmin, "http://10.1.2.3:9465", "", "plain http beyond loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := minimal(tc.admin + "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nadvertise_admin = \"" + tc.advertise + "\"\n")
			f, _, err := Parse("x.toml", []byte(doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), "fleet.advertise_admin: ") || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Fleet.Advertise != tc.want {
				t.Fatalf("advertise_admin = %q, want %q", f.Fleet.Advertise, tc.want)
			}
		})
	}
	t.Run("unset on every address with a secret warns", func(t *testing.T) {
		t.Setenv("XKS_TEST_FLEET_SECRET", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
		_, warns, err := Parse("x.toml", []byte(minimal(adminTLSDoc+"[fleet]\netcd_endpoints = [\"https://e:2379\"]\nsecret_env = \"XKS_TEST_FLEET_SECRET\"\n")))
		if err != nil || !strings.Contains(strings.Join(warns, "\n"), "fleet.advertise_admin: not set, and admin.listen 0.0.0.0:9465 is on every address") {
			t.Fatalf("%v, %q", err, warns)
		}
	})
}

func TestAdminPeerVerification(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "admin-ca.crt")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := minimal(adminTLSDoc + "[fleet]\netcd_endpoints = [\"https://e:2379\"]\nadvertise_admin = \"https://10.1.2.3:9465\"\n")
	f, _, err := Parse(filepath.Join(dir, "x.toml"), []byte(base+"admin_ca_file = \"admin-ca.crt\"\nadmin_server_name = \"xks.example.com\"\n"))
	if err != nil || f.Fleet.AdminCAFile != ca || f.Fleet.AdminServerName != "xks.example.com" {
		t.Fatalf("%+v, %v", f.Fleet, err)
	}
	for _, tc := range []struct{ keys, err string }{
		{"admin_ca_file = \"missing.crt\"\n", "fleet.admin_ca_file: cannot read"},
		{"admin_server_name = \"https://xks.example.com\"\n", "fleet.admin_server_name: must be a DNS name"},
	} {
		if _, _, err := Parse(filepath.Join(dir, "x.toml"), []byte(base+tc.keys)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", strings.TrimSpace(tc.keys), err, tc.err)
		}
	}
}
