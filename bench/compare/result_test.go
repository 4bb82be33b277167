package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/proxy"
)

func sample() []Result {
	return []Result{
		{Name: PathDirect, RPSMax: 16000, P50ms: 0.7, P99ms: 2.0, Rate: 1800, BackendCPUUsPerReq: 31, Requests: 100},
		{Name: PathNginx, RPSMax: 12000, CPUUsPerReq: ptr(30), P50ms: 0.8, P99ms: 2.2, RSSMB: ptr(16), Rate: 1800,
			CPUUsPerReqAtRate: ptr(45), CoresAtRate: ptr(0.08), RSSMBMax: ptr(17), Requests: 100},
		{Name: PathXKSProxy, RPSMax: 10000, CPUUsPerReq: ptr(60), P50ms: 0.9, P99ms: 3.5, RSSMB: ptr(70), Rate: 1800,
			CPUUsPerReqAtRate: ptr(50), CoresAtRate: ptr(0.09), RSSMBMax: ptr(75), Requests: 100, Failed: 2,
			Errors: map[string]int64{"network": 2}},
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := WriteJSON(&b, sample()); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d elements", len(got))
	}
	for _, el := range got {
		for _, k := range []string{"name", "rps_max", "cpu_us_per_req", "p50_ms", "p99_ms", "rss_mb"} {
			if _, ok := el[k]; !ok {
				t.Fatalf("%v lacks %q", el["name"], k)
			}
		}
	}
	tests := []struct {
		i    int
		key  string
		want any
	}{
		{0, "name", "direct"},
		{0, "cpu_us_per_req", nil}, // no middle process: null, not 0
		{0, "rss_mb", nil},
		{1, "cpu_us_per_req", 30.0},
		{2, "rss_mb", 70.0},
		{2, "p99_ms", 3.5},
		{2, "rps_max", 10000.0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if v := got[tt.i][tt.key]; v != tt.want {
				t.Fatalf("[%d].%s = %v, want %v", tt.i, tt.key, v, tt.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, l := range lines {
		if len(l) != len(lines[0]) {
			t.Fatalf("line %d width %d != %d:\n%s", i, len(l), len(lines[0]), b.String())
		}
	}
	tests := []struct {
		line int
		want []string
	}{
		{0, []string{"path", "rps_max", "p99_ms (@1800)"}},
		{2, []string{"direct", "16000", "n/a", "2.000", "31.0"}},
		{3, []string{"nginx", "30.0", "45.0", "16.0"}},
		{4, []string{"xksproxy", "3.500", "2/100"}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(lines[tt.line], w) {
				t.Errorf("line %d lacks %q: %s", tt.line, w, lines[tt.line])
			}
		}
	}
}

func TestAssess(t *testing.T) {
	cs := Assess(sample())
	if len(cs) != 5 {
		t.Fatalf("%d checks", len(cs))
	}
	want := []*bool{okp(false), okp(true), okp(true), okp(false), okp(false)} // 2.0×, 1.11×, 16 667/s, +1.5 ms, 70 MB
	for i, c := range cs {
		if (c.OK == nil) != (want[i] == nil) || (c.OK != nil && *c.OK != *want[i]) {
			t.Errorf("check %d (%s): ok %v, want %v; %s", i, c.Target, c.OK, *want[i], c.Measured)
		}
	}
	// Without nginx and direct, the relative checks are n/a rather than a verdict.
	cs = Assess(sample()[2:])
	if cs[0].OK != nil || cs[3].OK != nil || cs[4].OK == nil {
		t.Fatalf("without baselines: %+v", cs)
	}
	var b bytes.Buffer
	if err := WriteChecks(&b, cs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "[n/a ]") || !strings.Contains(b.String(), "[MISS]") {
		t.Fatalf("checks:\n%s", b.String())
	}
	if len(Assess(sample()[:2])) != 0 {
		t.Fatal("checks without xksproxy")
	}
}

// The generated xksproxy configuration and the credentials a run generates pass every check
// `xksproxy serve` makes before it listens: the file's (config), the mapping onto the
// components (app.FromFile) and the proxy's own (proxy.New, which wants a 43-64 character
// prefix secret).
func TestXKSProxyConfLoads(t *testing.T) {
	dir := t.TempDir()
	prx, emu := newCred("AKIABENCHPRX"), newCred("AKIABENCHEMU")
	t.Setenv("BENCH_PROXY_SECRET", prx.secret)
	t.Setenv("BENCH_BACKEND_SECRET", emu.secret)
	ckms := "[http_config]\nserver_url = \"https://127.0.0.1:9998\"\naccept_invalid_certs = true\n"
	if err := os.WriteFile(filepath.Join(dir, "ckms.toml"), []byte(ckms), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "xksproxy.toml")
	conf := XKSProxyConf(dir, "127.0.0.1:8443", "127.0.0.1:9998", "us-east-1", prx.id, emu.id)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Log.Level != "warn" || f.Server.Listen != "127.0.0.1:8443" || len(f.Backend) != 2 || f.Backend[0].XKSURL != "https://127.0.0.1:9998/aws" {
		t.Fatalf("loaded %+v", f)
	}
	ac, err := app.FromFile(context.Background(), f, "test", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.New(ac.Proxy); err != nil {
		t.Fatalf("the proxy refuses the generated configuration: %v", err)
	}
}

func TestNginxConf(t *testing.T) {
	c := NginxConf("/tmp/x", "127.0.0.1:8443", "127.0.0.1:9998", false)
	for _, want := range []string{
		"worker_processes 1;", "listen 127.0.0.1:8443 ssl;", "server 127.0.0.1:9998;", "keepalive 64;",
		"proxy_pass https://emulator;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`,
		"proxy_set_header Host $http_host;", "access_log off;", "pid /tmp/x/nginx.pid;",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if strings.Count(c, "{") != strings.Count(c, "}") {
		t.Fatal("unbalanced braces")
	}
	if c2 := NginxConf("/tmp/x", "127.0.0.1:8443", "127.0.0.1:9998", true); !strings.Contains(c2, "listen 127.0.0.1:8443 ssl http2;") ||
		!strings.Contains(c2, "proxy_http_version 1.1;") {
		t.Errorf("HTTP/2 nginx.conf: want h2 in front and HTTP/1.1 upstream:\n%s", c2)
	}
}

func TestWriteCert(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := writeCert(cert, key); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", st, err)
	}
	b, _ := os.ReadFile(cert)
	if !bytes.HasPrefix(b, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Fatal("no certificate PEM")
	}

}
