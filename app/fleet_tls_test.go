package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/internal/etcdtest"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

// replica is one real xksproxy process of a fleet, built from its configuration file.
type replica struct {
	name string
	app  *App
	logs *logBuf
	done chan error
}

// fleetFile is one replica's configuration: admin listener over TLS with its own certificate
// on loopback, the fleet secret from a file, the admin CA, no advertise_admin (the replica
// advertises its bound https:// address).
func fleetFile(t *testing.T, dir, member, etcd, etcdCA, secretB64 string, ca *testpki.CA, kmip [2]string) string {
	t.Helper()
	ca.WriteLeaf(t, filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"), 0, time.Now().Add(time.Hour), "localhost", "127.0.0.1")
	if err := os.WriteFile(filepath.Join(dir, "admin-ca.crt"), pemCert(ca.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fleet-secret"), []byte(secretB64+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"ckms-a.toml", "ckms-b.toml"} {
		ckms := "[http_config]\nserver_url = \"" + kmip[i] + "\"\n"
		if err := os.WriteFile(filepath.Join(dir, n), []byte(ckms), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
metrics_listen = "off"

[tls]
mode = "self-signed"
hosts = ["localhost"]

[[prefix]]
path = "/aws"
region = "us-east-1"
[[prefix.credential]]
access_key_id = "AKIAXKSPROXYOLDKEY01"
secret_access_key = %[1]q

[[backend]]
name = "a"
xks_url = %[2]q
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = %[1]q
ckms_config = "ckms-a.toml"

[[backend]]
name = "b"
xks_url = %[2]q
region = "us-east-1"
access_key_id = "AKIACOSMIANBACKENDB2"
secret_access_key = %[1]q
ckms_config = "ckms-b.toml"

[health]
disabled = true

[admin]
listen = "127.0.0.1:0"
token = %[3]q
cert_file = "admin.crt"
key_file = "admin.key"

[cutover]
journal_path = "cutover.json"
source = "a"
target = "b"

[fleet]
etcd_endpoints = [%[4]q]
ca_file = %[5]q
member = %[6]q
key_prefix = "/xksproxy/fleettls/"
lease_ttl = "2s"
secret_file = "fleet-secret"
admin_ca_file = "admin-ca.crt"
`, testSecret, unusedURL(t), fleetToken, etcd, etcdCA, member)
	p := filepath.Join(dir, "xksproxy.toml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemCert(c *x509.Certificate) []byte {
	return []byte("-----BEGIN CERTIFICATE-----\n" + base64.StdEncoding.EncodeToString(c.Raw) + "\n-----END CERTIFICATE-----\n")
}

func startReplica(t *testing.T, path, name string) *replica {
	t.Helper()
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, logs: &logBuf{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, err := FromFile(context.Background(), f, "test", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Fleet.MinLeaseTTL = time.Second
	if r.app, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- r.app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
	select {
	case <-r.app.Proxy.Ready():
	case err := <-r.done:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// TestForwardOverTLSBetweenReplicas: two real replicas (configuration files, etcd over TLS,
// admin listeners over TLS): an operator call on the one that does not drive is served by the
// driver, over TLS and signed; then, with the driver's address in etcd rewritten to a listener
// holding a certificate of the same CA (the worst case), the operator gets an error and that
// listener never sees the token.
func TestForwardOverTLSBetweenReplicas(t *testing.T) {
	etcd := etcdtest.Start(t)
	ca := testpki.NewCA(t, "admin CA", time.Now().Add(time.Hour))
	secret := base64.StdEncoding.EncodeToString([]byte("a fleet secret of more than 32 bytes, for this test"))
	// The keys' owner's view of both backends: a replica reads their markers before it starts.
	kmip := kmipBackends(t)
	reps := map[string]*replica{}
	for _, name := range []string{"r1", "r2"} {
		dir := t.TempDir()
		reps[name] = startReplica(t, fleetFile(t, dir, name, etcd.Endpoint, etcd.CAFile, secret, ca, kmip), name)
	}
	var driver, other *replica
	var driverAddr string
	deadline := time.Now().Add(30 * time.Second)
	for driver == nil || driverAddr == "" {
		if time.Now().After(deadline) {
			t.Fatal("no driver with an advertised address within 30s")
		}
		time.Sleep(100 * time.Millisecond)
		for _, r := range reps {
			if r.app.Cutover.IsDriver() {
				driver = r
			}
		}
		if driver != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, driverAddr, _ = driver.app.Cutover.Driver(ctx)
			cancel()
		}
	}
	for _, r := range reps {
		if r != driver {
			other = r
		}
	}
	if want := "https://" + driver.app.Proxy.AdminAddr().String(); driverAddr != want {
		t.Fatalf("the driver advertises %q, want its TLS listener %q", driverAddr, want)
	}
	op := &adminapi.Client{BaseURL: "https://" + other.app.Proxy.AdminAddr().String(), Token: fleetToken,
		HTTP: &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	st, err := op.Status(ctx)
	if err != nil {
		t.Fatalf("status through %s: %v", other.name, err)
	}
	if st.Fleet == nil || st.Fleet.Member != driver.name || !st.Fleet.Driving {
		t.Fatalf("status through %s is not the driver's: %+v", other.name, st.Fleet)
	}
	// A control call reaches the driver and its refusal (nothing to switch) comes back as is.
	_, err = op.Switch(ctx)
	var ae *adminapi.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || !errors.Is(err, cutover.ErrWrongState) {
		t.Fatalf("switch through %s: %v, want the driver's 409", other.name, err)
	}
	if strings.Contains(driver.logs.String(), "forwarded admin call refused") {
		t.Fatalf("the driver refused a genuine forward:\n%s", driver.logs.String())
	}

	// Someone who can write the prefix points the driver's registry entry at their listener.
	att := startAttacker(t, serverTLS(t, ca, "localhost", "127.0.0.1"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second,
		TLS: &tls.Config{RootCAs: loadPool(t, etcd.CAFile), MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rec, _ := json.Marshal(cutover.MemberRecord{Name: driver.name, Address: att.srv.URL})
	if _, err := cli.Put(ctx, "/xksproxy/fleettls/registry/"+driver.name, string(rec)); err != nil {
		t.Fatal(err)
	}
	_, err = op.Rollback(ctx, "forged")
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || !strings.Contains(ae.Message, "did not prove it is a member of this fleet") {
		t.Fatalf("rollback through %s with a forged address: %v, want 502", other.name, err)
	}
	seen, bodies := att.requests()
	if len(seen) != 1 {
		t.Fatalf("the forged address received %d calls, want the one signed call", len(seen))
	}
	if seen[0].Header.Get("Authorization") != "" || strings.Contains(fmt.Sprint(seen[0].Header), fleetToken) || strings.Contains(string(bodies[0]), fleetToken) {
		t.Fatal("the forged address received the operator's token")
	}
	for _, r := range reps {
		if l := r.logs.String(); strings.Contains(l, fleetToken) || strings.Contains(l, secret) {
			t.Fatalf("%s logged a secret:\n%s", r.name, l)
		}
	}
}

func loadPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p, err := loadRoots(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFleetKeysReachTheApp: the [fleet] keys of forwarding reach FleetAdmin and the fleet store.
func TestFleetKeysReachTheApp(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "admin CA", time.Now().Add(time.Hour))
	secret := base64.StdEncoding.EncodeToString([]byte("a fleet secret of more than 32 bytes, for this test"))
	path := fleetFile(t, dir, "r7", "https://127.0.0.1:1", filepath.Join(dir, "admin-ca.crt"), secret, ca, [2]string{"http://127.0.0.1:1", "http://127.0.0.1:1"})
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("XKS_TEST_POD_IP", "10.1.2.3")
	// The server's certificate on the admin listener (tls = true) instead of its own.
	s := strings.Replace(string(doc), "cert_file = \"admin.crt\"\nkey_file = \"admin.key\"\n", "tls = true\nallow_remote = true\n", 1)
	s = strings.Replace(s, "[admin]\nlisten = \"127.0.0.1:0\"", "[admin]\nlisten = \"0.0.0.0:0\"", 1)
	s = strings.Replace(s, "hosts = [\"localhost\"]", "hosts = [\"xks.example.com\", \"10.9.9.9\"]", 1)
	s += "advertise_admin = \"https://${XKS_TEST_POD_IP}:9465\"\nadmin_server_name = \"xks.example.com\"\n"
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := FromFile(context.Background(), f, "v", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fa := cfg.FleetAdmin
	for _, ck := range []struct {
		key string
		ok  bool
	}{
		{"fleet.secret_file", string(fa.Secret) == "a fleet secret of more than 32 bytes, for this test"},
		{"fleet.admin_ca_file", fa.RootCAs != nil && fa.RootCAs.Equal(ca.Pool)},
		{"fleet.admin_server_name", fa.ServerName == "xks.example.com"},
		{"fleet.advertise_admin", cfg.Fleet.Address == "https://10.1.2.3:9465"},
		{"admin.tls: the server certificate's names", len(fa.OwnNames) == 1 && fa.OwnNames[0] == "xks.example.com"},
	} {
		if !ck.ok {
			t.Errorf("%s: not what the app receives (%+v)", ck.key, fa)
		}
	}
}

// kmipBackends starts two emulated Cosmian servers (plain HTTP on loopback, no authentication:
// every caller is the keys' owner) and returns their URLs.
func kmipBackends(t *testing.T) [2]string {
	t.Helper()
	var out [2]string
	for i := range out {
		s, err := kmsemu.New(kmsemu.Config{})
		if err != nil {
			t.Fatal(err)
		}
		run, err := s.Start("127.0.0.1:0", false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = run.Close() })
		out[i] = run.URL
	}
	return out
}
