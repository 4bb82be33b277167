package deploy_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/proxy"
)

// Sample values of what each layout's environment gives a replica.
const (
	samplePodIP = "10.244.1.7"
	sampleHost  = "xks-2.internal"
)

// podEnv is the environment the StatefulSet's container sets: name → a sample value.
func podEnv(t *testing.T, sts map[string]any) map[string]string {
	t.Helper()
	env := map[string]string{}
	c := list(t, get(t, sts, "spec", "template", "spec", "containers"))[0]
	if get(t, c, "env") == nil {
		return env
	}
	for _, e := range list(t, get(t, c, "env")) {
		v := "sample"
		if e.(map[string]any)["valueFrom"] != nil && get(t, e, "valueFrom", "fieldRef", "fieldPath") == "status.podIP" {
			v = samplePodIP
		}
		env[str(t, get(t, e, "name"))] = v
	}
	return env
}

// dropInEnv is the environment the systemd fleet drop-in sets: name → a sample value.
func dropInEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("systemd/xksproxy-fleet.conf")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if kv, ok := strings.CutPrefix(strings.TrimSpace(l), "Environment="); ok {
			k, v, _ := strings.Cut(kv, "=")
			if v == "%H" { // the host name
				v = sampleHost
			}
			env[k] = v
		}
	}
	return env
}

var envRefRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// setShippedEnv sets each ${NAME} doc uses from env, the environment its deployment gives it:
// a variable the deployment does not set would stop the replica at start. A ${NAME} in a comment
// is not used.
func setShippedEnv(t *testing.T, doc string, env map[string]string) {
	t.Helper()
	var used []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			used = append(used, l)
		}
	}
	for _, m := range envRefRe.FindAllStringSubmatch(strings.Join(used, "\n"), -1) {
		v, ok := env[m[1]]
		if !ok {
			t.Fatalf("the configuration uses ${%s}, which its deployment does not set (it sets %v)", m[1], env)
		}
		t.Setenv(m[1], v)
	}
}

// TestFleetForwarding: in the shipped fleet layouts (Kubernetes fleet/, and examples/fleet.toml
// with the systemd drop-in) a replica that does not drive can forward operator calls to the
// driver as shipped: the fleet secret is set, each replica advertises its own reachable
// address over https (not loopback), its admin listener is where that address leads, with TLS,
// and a peer built from the same file forwards there. The old layouts' advertised addresses
// (the loopback listener, http) are refused.
func TestFleetForwarding(t *testing.T) {
	k8s := manifests(t, "kubernetes/fleet/*.yaml")
	shared := manifests(t, "kubernetes/*.yaml")
	sts := k8s["StatefulSet/xksproxy"]
	example, err := os.ReadFile("examples/fleet.toml")
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, p := range list(t, get(t, list(t, get(t, sts, "spec", "template", "spec", "containers"))[0], "ports")) {
		ports = append(ports, str(t, get(t, p, "containerPort")))
	}
	for _, tc := range []struct {
		name, file, doc string
		env             map[string]string
		host            string   // the address the sample environment advertises
		ports           []string // the ports the layout opens (nil: a host's own)
	}{
		{"kubernetes/fleet", "xksproxy.toml", str(t, get(t, k8s["ConfigMap/xksproxy-config"], "data", "xksproxy.toml")), podEnv(t, sts), samplePodIP, ports},
		{"systemd fleet", "fleet.toml", string(example), dropInEnv(t), sampleHost, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.doc, "advertise_admin") {
				t.Fatal("no [fleet] advertise_admin: the replicas would advertise their admin listener's own address")
			}
			setShippedEnv(t, tc.doc, tc.env)
			f := loadConfig(t, tc.file, tc.doc)
			fl, adm := f.Fleet, f.Admin
			if len(fl.Secret) < 32 || filepath.Base(fl.SecretFile) != "fleet-secret" {
				t.Errorf("fleet secret: %d bytes from %q", len(fl.Secret), fl.SecretFile)
			}
			u, err := url.Parse(fl.Advertise)
			if err != nil {
				t.Fatal(err)
			}
			lhost, lport, err := net.SplitHostPort(adm.Listen)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "https" || u.Hostname() != tc.host || u.Port() != lport {
				t.Errorf("advertise_admin %q: want https://%s:%s (this replica's own address, the admin listener's port)", fl.Advertise, tc.host, lport)
			}
			if proxy.IsLoopback(lhost) || !adm.AllowRemote || !(adm.TLS || adm.CertFile != "") {
				t.Errorf("[admin] listen %q allow_remote %v tls %v: the other replicas cannot reach it over TLS", adm.Listen, adm.AllowRemote, adm.TLS)
			}
			if tc.ports != nil && !slices.Contains(tc.ports, lport) {
				t.Errorf("admin port %s is not a container port (%v)", lport, tc.ports)
			}
			if tc.ports != nil {
				stringData, _ := get(t, shared["Secret/xksproxy-secrets"], "stringData").(map[string]any)
				if _, ok := stringData["fleet-secret"]; !ok || !strings.HasPrefix(fl.SecretFile, filepath.Dir(f.Path)+"/secrets/") {
					t.Errorf("the Secret example has no fleet-secret, or secret_file %q is not in its mount", fl.SecretFile)
				}
			}

			cfg := appConfig(t, f)
			if len(cfg.FleetAdmin.Secret) < 32 || cfg.Fleet.Address != fl.Advertise || cfg.Proxy.Admin.TLS == nil {
				t.Fatalf("app configuration: secret %d bytes, address %q, admin TLS %v", len(cfg.FleetAdmin.Secret), cfg.Fleet.Address, cfg.Proxy.Admin.TLS != nil)
			}
			if !slices.Contains(cfg.FleetAdmin.OwnNames, "xks.example.com") {
				t.Errorf("the driver's certificate is not checked for the XKS name every replica serves: %v", cfg.FleetAdmin.OwnNames)
			}
			// The proxy takes the admin listener as configured (beyond loopback: TLS, token).
			if _, err := proxy.New(cfg.Proxy); err != nil {
				t.Fatalf("proxy.New: %v", err)
			}
			// A peer with the same file forwards to this replica's advertised address, and
			// never to what the old layouts advertised.
			if err := cfg.CheckForwardAddress(cfg.Fleet.Address); err != nil {
				t.Errorf("a peer refuses to forward to %s: %v", cfg.Fleet.Address, err)
			}
			for _, old := range []string{"http://127.0.0.1:" + lport, "https://127.0.0.1:" + lport, "http://" + net.JoinHostPort(tc.host, lport)} {
				if err := cfg.CheckForwardAddress(old); err == nil {
					t.Errorf("a peer forwards to %s", old)
				}
			}
		})
	}
}

// appConfig runs app.FromFile on a configuration loaded by loadConfig, after replacing the
// placeholder files it needs to parse with real ones: a certificate for xks.example.com at
// [tls]'s paths and ckms client files.
func appConfig(t *testing.T, f *config.File) app.Config {
	t.Helper()
	ca := testpki.NewCA(t, "deploy test CA", time.Now().Add(time.Hour))
	ca.WriteLeaf(t, f.TLS.CertFile, f.TLS.KeyFile, 0, time.Now().Add(time.Hour), "xks.example.com")
	for _, b := range f.Backend {
		if err := os.WriteFile(b.CKMSConfig, []byte("[http_config]\nserver_url = \"https://127.0.0.1:1\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := app.FromFile(context.Background(), f, "deploy test", nil, nil)
	if err != nil {
		t.Fatalf("app.FromFile: %v", err)
	}
	return cfg
}
