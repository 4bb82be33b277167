package soak

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

// TestFleetConfig: a replica's generated configuration in fleet mode loads, with the fleet
// secret every replica shares, so that the migration driven through the first replica reaches
// the driver.
func TestFleetConfig(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "soak test CA", time.Now().Add(time.Hour))
	var backends []*backend
	for _, n := range []string{"a", "b"} {
		backends = append(backends, &backend{name: n, cred: newCredential("BE"), token: randHex(8),
			run: &kmsemu.Running{URL: "https://127.0.0.1:1", Cert: ca.Cert}})
	}
	f := replicaFiles{dir: dir, config: filepath.Join(dir, "xksproxy.toml"), cert: filepath.Join(dir, "cert.pem"),
		key: filepath.Join(dir, "key.pem"), admin: filepath.Join(dir, "admin-token"), journal: filepath.Join(dir, "cutover.json"),
		listen: "127.0.0.1:18443", metrics: "127.0.0.1:19464", adminListen: "127.0.0.1:19465",
		member: "r1", etcd: "http://127.0.0.1:12379"}
	secret := randBase64(32)
	o := Options{BackendTimeout: 200 * time.Millisecond, Probation: 30 * time.Second}
	if err := writeConfig(&f, prefixCreds{newCredential("LOAD")}, backends, randHex(24), secret, &o); err != nil {
		t.Fatal(err)
	}
	cf, _, err := config.Load(f.config)
	if err != nil {
		t.Fatalf("the generated configuration: %v", err)
	}
	if cf.Fleet == nil || len(cf.Fleet.Secret) != 32 || cf.Fleet.Advertise != "http://127.0.0.1:19465" {
		t.Fatalf("[fleet] %+v", cf.Fleet)
	}
}
