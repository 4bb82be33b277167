package app

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
)

// TestEveryKeyReachesItsComponent writes every documented key of [server], [server.limits],
// [[backend]], [route], [health], [admin] and [cutover] with a value that is not the default
// (zeros included where a zero means something) and checks that the component configuration
// FromFile builds carries it: no key is parsed and then dropped.
func TestEveryKeyReachesItsComponent(t *testing.T) {
	dir := t.TempDir()
	ckms := "[http_config]\nserver_url = \"http://127.0.0.1:1\"\n"
	for _, n := range []string{"ckms-a.toml", "ckms-b.toml"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(ckms), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc := `
[server]
listen = "127.0.0.1:18443"
metrics_listen = "off"
version_label = "edge 7"
prefer_http1 = true

[server.limits]
max_body_bytes = 40000
max_header_bytes = 5000
max_header_count = 9
read_header_timeout = "1s"
read_timeout = "2s"
write_timeout = "3s"
idle_timeout = "4s"
budget = "230ms"
max_in_flight = 7
max_payload_bytes = 5000
max_aad_bytes = 9000

[tls]
mode = "self-signed"

[[prefix]]
path = "/x"
region = "eu-west-1"
service = "svc"
[[prefix.credential]]
access_key_id = "AKIAXKSPROXYOLDKEY01"
secret_access_key = "` + testSecret + `"
created = "2026-01-15"

[[backend]]
name = "a"
xks_url = "http://127.0.0.1:1/aws"
region = "eu-west-2"
service = "svc-a"
access_key_id = "AKIACOSMIANBACKENDA1"
secret_access_key = "` + testSecret + `"
ckms_config = "ckms-a.toml"
timeout = "150ms"
max_idle_conns = 3
model = "Cosmian KMS 5.26"

[[backend]]
name = "b"
xks_url = "http://127.0.0.1:1/aws"
region = "eu-west-2"
access_key_id = "AKIACOSMIANBACKENDB2"
secret_access_key = "` + testSecret + `"
ckms_config = "ckms-b.toml"

[route]
primary = "b"
fallback = "a"

[health]
interval = "20s"
test_key_id = "hk"
principal_arn = "arn:aws:iam::1:role/h"
degraded_latency = "90ms"
disabled = true

[admin]
listen = "127.0.0.1:19465"
token = "0123456789abcdef0123456789abcdef"

[cutover]
journal_path = "j.json"
source = "b"
target = "a"
select = "list"
tag = "t1"
keys = ["k1", "k2"]
pace = 120.0
min_concurrency = 2
max_concurrency = 3
rights_sync_rate = 40.0
target_acl = "arn"
shadow_duration = "10m"
shadow_sample_rate = 0.25
probation_duration = "7m"
probation_max_error_rate = 0.0
probation_max_p99 = "80ms"
probation_min_requests = 0
revoke_source_grants_on_finalize = true
grant_everyone_for_service_keys = true

[log]
level = "debug"
format = "text"
`
	path := filepath.Join(dir, "xksproxy.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := FromFile(context.Background(), f, "v", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, c := ac.Proxy, ac.Cutover
	if c == nil {
		t.Fatal("no cutover configuration")
	}
	l, h, b := p.Limits, p.Health, p.Backends[0]
	pr := c.Probation
	checks := []struct {
		key string
		ok  bool
	}{
		{"server.listen", p.Listen == "127.0.0.1:18443"},
		{"server.metrics_listen", p.MetricsListen == "off"},
		{"server.version_label", p.Version == "edge 7"},
		{"server.prefer_http1", p.PreferHTTP1},
		{"server.limits.max_body_bytes", l.MaxBodyBytes == 40000},
		{"server.limits.max_header_bytes", l.MaxHeaderBytes == 5000},
		{"server.limits.max_header_count", l.MaxHeaderCount == 9},
		{"server.limits.read_header_timeout", l.ReadHeaderTimeout == time.Second},
		{"server.limits.read_timeout", l.ReadTimeout == 2*time.Second},
		{"server.limits.write_timeout", l.WriteTimeout == 3*time.Second},
		{"server.limits.idle_timeout", l.IdleTimeout == 4*time.Second},
		{"server.limits.budget", l.Budget == 230*time.Millisecond},
		{"server.limits.max_in_flight", l.MaxInFlight == 7},
		{"server.limits.max_payload_bytes", l.XKS.MaxPayload == 5000},
		{"server.limits.max_aad_bytes", l.XKS.MaxAAD == 9000},
		{"prefix.path", p.Prefixes[0].Path == "/x"},
		{"prefix.region", p.Prefixes[0].Region == "eu-west-1"},
		{"prefix.service", p.Prefixes[0].Service == "svc"},
		{"prefix.credential", len(p.Prefixes[0].Credentials) == 1 && p.Prefixes[0].Credentials[0].AccessKeyID == "AKIAXKSPROXYOLDKEY01"},
		{"backend.name", b.Name == "a"},
		{"backend.xks_url", b.XKSURL == "http://127.0.0.1:1/aws"},
		{"backend.region", b.Region == "eu-west-2"},
		{"backend.service", b.Service == "svc-a"},
		{"backend.access_key_id", b.Credential.AccessKeyID == "AKIACOSMIANBACKENDA1"},
		{"backend.timeout", b.Timeout == 150*time.Millisecond},
		{"backend.max_idle_conns", b.MaxIdleConns == 3},
		{"backend.model", b.Model == "Cosmian KMS 5.26"},
		{"route.primary", p.Route.Primary == "b"},
		{"route.fallback", p.Route.Fallback == "a"},
		{"health.interval", h.Interval == 20*time.Second},
		{"health.test_key_id", h.TestKeyID == "hk"},
		{"health.principal_arn", h.PrincipalARN == "arn:aws:iam::1:role/h"},
		{"health.degraded_latency", h.DegradedLatency == 90*time.Millisecond},
		{"health.disabled", h.Disabled},
		{"admin.listen", p.Admin.Listen == "127.0.0.1:19465"},
		{"admin.token", p.Admin.Token == "0123456789abcdef0123456789abcdef"},
		{"cutover.journal_path", c.JournalPath == filepath.Join(dir, "j.json")},
		{"cutover.source", c.Source.Name == "b"},
		{"cutover.target", c.Target.Name == "a"},
		{"cutover.select", c.Select.Mode == cutover.SelectList},
		{"cutover.tag", c.Select.Tag == "t1"},
		{"cutover.keys", len(c.Select.Keys) == 2 && c.Select.Keys[1] == "k2"},
		{"cutover.pace", c.Pace.Rate == 120},
		{"cutover.min_concurrency", c.Pace.MinConcurrency == 2},
		{"cutover.max_concurrency", c.Pace.MaxConcurrency == 3},
		{"cutover.rights_sync_rate", c.RightsSync.Rate == 40},
		{"cutover.target_acl", c.Target.ACL == cutover.ACLARN},
		{"cutover.shadow_duration", c.Shadow.Duration == 10*time.Minute},
		{"cutover.shadow_sample_rate", c.Shadow.SampleRate != nil && *c.Shadow.SampleRate == 0.25},
		{"cutover.probation_duration", pr.Duration == 7*time.Minute},
		{"cutover.probation_max_error_rate = 0.0", pr.MaxErrorRate != nil && *pr.MaxErrorRate == 0},
		{"cutover.probation_max_p99", pr.MaxP99 == 80*time.Millisecond},
		{"cutover.probation_min_requests = 0", pr.MinRequests != nil && *pr.MinRequests == 0},
		{"cutover.revoke_source_grants_on_finalize", c.RevokeSourceGrantsOnFinalize},
		{"cutover.grant_everyone_for_service_keys", c.GrantEveryoneForServiceKeys},
		{"log.level", f.Log.Level == "debug"},
		{"log.format", f.Log.Format == "text"},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("%s: not what the component receives", ck.key)
		}
	}
	// The zeros survive the controller's defaults too.
	if err := c.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if *c.Probation.MaxErrorRate != 0 || *c.Probation.MinRequests != 0 {
		t.Errorf("controller replaced written zeros: rate %v, min %v", *c.Probation.MaxErrorRate, *c.Probation.MinRequests)
	}
}

// TestControllerDefaults: unset [cutover] keys take the controller's defaults, which the
// README's configuration reference documents.
func TestControllerDefaults(t *testing.T) {
	var c cutover.Config
	c.Source.Name, c.Target.Name = "a", "b"
	c.JournalPath = "j"
	c.Source.KMIP, c.Target.KMIP = mustClient(t), mustClient(t)
	if err := c.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	p, s := c.Probation, c.Shadow
	if p.Duration != 10*time.Minute || *p.MaxErrorRate != 0.01 || p.MaxP99 != 100*time.Millisecond || *p.MinRequests != 100 ||
		*s.SampleRate != 1 || s.Duration != 0 || c.Pace != (cutover.PaceConfig{MinConcurrency: 1, MaxConcurrency: 8, RequestBudget: 250 * time.Millisecond}) || c.Select.Mode != cutover.SelectTag || c.Target.ACL != cutover.ACLBoth {
		t.Errorf("defaults: probation %+v shadow %+v pace %+v select %+v", p, s, c.Pace, c.Select)
	}
}

func mustClient(t *testing.T) *cosmian.Client {
	t.Helper()
	c, err := cosmian.NewClient(cosmian.ClientConfig{BaseURL: "http://127.0.0.1:1", HTTP: &http.Client{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
