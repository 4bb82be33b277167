// Package deploy_test checks the deployment artefacts: metric names used by
// the alert rules and the dashboard, promtool, systemd-analyze, the
// Dockerfile and its reproducible build, Kubernetes manifests and examples.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/xksproxy/xksproxy/app"
	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/sigv4"
)

// liveRegistry assembles what `xksproxy serve` registers, on one registry: the proxy (self-signed
// TLS, one prefix, two backends at unused loopback URLs, health and the metrics listener off),
// the cutover controller wired by app.New (two Cosmian clients at unused URLs and an existing
// journal, so the check of the backends' cutover markers only warns that they are unreachable)
// and the certificate metrics. Nothing listens.
func liveRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	app.RegisterReloadMetrics(reg) // serve runs an app.Live, which exports them
	src, err := certs.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := src.TLSConfig()
	cred := sigv4.Credential{AccessKeyID: "AKIAXKSPROXYDEPLOY01", Secret: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="}
	pc := proxy.Config{
		TLS:           serverTLS,
		MetricsListen: proxy.MetricsDisabled,
		Prefixes:      []proxy.PrefixConfig{{Path: "/aws", Region: "us-east-1", Credentials: []sigv4.Credential{cred}}},
		Backends: []proxy.BackendConfig{
			{Name: "a", XKSURL: "http://127.0.0.1:1/aws", Region: "us-east-1", Credential: cred},
			{Name: "b", XKSURL: "http://127.0.0.1:2/aws", Region: "us-east-1", Credential: cred},
		},
		Route:    proxy.Route{Primary: "a"},
		Health:   proxy.HealthConfig{Disabled: true},
		Logger:   slog.New(slog.DiscardHandler),
		Registry: reg,
	}
	kmip := func(url string) *cosmian.Client {
		c, err := cosmian.NewClient(cosmian.ClientConfig{BaseURL: url, HTTP: &http.Client{Timeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	journal := filepath.Join(t.TempDir(), "cutover.json")
	if err := os.WriteFile(journal, []byte(`{"version":1,"epoch":1,"state":"serving","source":"a","target":"b","keys":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := app.New(app.Config{Proxy: pc, Logger: slog.New(slog.DiscardHandler), Cutover: &cutover.Config{
		Source:      cutover.Backend{Name: "a", KMIP: kmip("http://127.0.0.1:1")},
		Target:      cutover.Backend{Name: "b", KMIP: kmip("http://127.0.0.1:2")},
		JournalPath: journal,
		Logger:      slog.New(slog.DiscardHandler),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Cutover.Close() })
	// Fleet mode adds its own (xks_fleet_*): a controller built as a fleet member registers them
	// (New only builds; nothing reads the stub store).
	fc, err := cutover.New(cutover.Config{
		Source:      cutover.Backend{Name: "a", KMIP: kmip("http://127.0.0.1:1")},
		Target:      cutover.Backend{Name: "b", KMIP: kmip("http://127.0.0.1:2")},
		JournalPath: filepath.Join(t.TempDir(), "local.json"), Fleet: stubFleet{}, Registry: reg,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fc.Close() })
	certs.NewMetrics(reg)
	return reg
}

// stubFleet is a fleet store that is never called (the controller is only built).
type stubFleet struct{}

func (stubFleet) Load(context.Context) (*cutover.Snapshot, error)       { return nil, nil }
func (stubFleet) Save(context.Context, cutover.Change) error            { return nil }
func (stubFleet) Where() string                                         { return "stub" }
func (stubFleet) Member() string                                        { return "m1" }
func (stubFleet) Campaign(ctx context.Context) (context.Context, error) { return ctx, nil }
func (stubFleet) Watch(context.Context, func(cutover.WatchEvent))       {}
func (stubFleet) Publish(context.Context, cutover.MemberRecord) error   { return nil }
func (stubFleet) Members(context.Context) ([]cutover.MemberInfo, error) { return nil, nil }
func (stubFleet) Forget(context.Context, string) error                  { return nil }
func (stubFleet) Driver(context.Context) (string, string, error)        { return "", "", nil }

var fqNameRe = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// exportedMetricNames returns every metric family the running proxy can export. Vectors
// appear in Gather only once a label set exists, so the names come from the registry's
// descriptors (Registry.Describe reports every registered collector's Desc; a Desc exposes its
// name only through String), checked against what Gather already returns.
func exportedMetricNames(t *testing.T) []string {
	t.Helper()
	reg := liveRegistry(t)
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	names := map[string]bool{}
	for d := range ch {
		m := fqNameRe.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = true
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !names[mf.GetName()] {
			t.Errorf("gathered %s has no descriptor", mf.GetName())
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// labelValues are the values a label of a metric can take, where rules or panels select on
// them: the exported constants where the package has them, else the literals of the named file.
func labelValues(t *testing.T) map[string]map[string][]string {
	t.Helper()
	states := []string{}
	mfs, err := liveRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "xks_cutover_state" { // the controller sets every state's gauge at start
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "state" {
						states = append(states, l.GetValue())
					}
				}
			}
		}
	}
	if len(states) < 11 {
		t.Fatalf("xks_cutover_state has %d states at start: %v", len(states), states)
	}
	return map[string]map[string][]string{
		"xks_cutover_state": {"state": states},
		"xks_cutover_keys": {
			"phase":  {string(cutover.PhaseCopy), string(cutover.PhaseVerify)},
			"result": {cutover.ResultOK, cutover.ResultSkipped, cutover.ResultConflict, cutover.ResultError},
		},
		"xks_shadow_results_total":           {"result": {"match", "mismatch", "error", "dropped"}},     // cutover/shadow.go
		"xks_cutover_rollbacks_total":        {"reason": {"manual", "error_rate", "p99", "resumed"}},    // cutover/run.go
		"xks_tls_certificate_reloads_total":  {"result": {"success", "failure"}, "source": certSources}, // certs/metrics.go
		"xks_tls_certificate_expiry_seconds": {"source": certSources},
	}
}

var certSources = []string{"files", "acme", "self-signed"}

var (
	selectorRe = regexp.MustCompile(`\b(xks_[a-z0-9_]+)\{([^}]*)\}`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	plainRe    = regexp.MustCompile(`^[a-z0-9_-]*$`)
)

// badLabelValues returns the label values expr selects on that the metric never takes. Regex
// alternatives are checked one by one when they are plain words.
func badLabelValues(expr string, values map[string]map[string][]string) []string {
	var bad []string
	for _, sel := range selectorRe.FindAllStringSubmatch(expr, -1) {
		labels := values[sel[1]]
		for _, m := range matcherRe.FindAllStringSubmatch(sel[2], -1) {
			allowed, ok := labels[m[1]]
			if !ok {
				continue
			}
			alts := []string{m[3]}
			if m[2] == "=~" || m[2] == "!~" {
				alts = strings.Split(m[3], "|")
			}
			for _, v := range alts {
				if v != "" && plainRe.MatchString(v) && !slices.Contains(allowed, v) {
					bad = append(bad, sel[1]+"{"+m[1]+"=\""+v+"\"}")
				}
			}
		}
	}
	return bad
}

var (
	// xks_ families, and the runtime and process collectors' go_ and process_ ones.
	metricRe = regexp.MustCompile(`\b(?:xks|go|process)_[a-z0-9_]+`)
	quotedRe = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// metricNames returns the metric names an expression uses, with the
// histogram series suffixes folded onto their family.
func metricNames(expr string, known map[string]bool) []string {
	expr = quotedRe.ReplaceAllString(expr, `""`)
	var out []string
	for _, n := range metricRe.FindAllString(expr, -1) {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suf); ok && known[base] {
				n = base
			}
		}
		out = append(out, n)
	}
	return out
}

func TestMetricNamesAreExported(t *testing.T) {
	known := map[string]bool{}
	for _, n := range exportedMetricNames(t) {
		known[n] = true
	}
	exprs := map[string][]string{} // file -> expressions
	rules := readYAML(t, "prometheus/xksproxy-rules.yml")
	for _, g := range list(t, get(t, rules[0], "groups")) {
		for _, r := range list(t, get(t, g, "rules")) {
			exprs["rules"] = append(exprs["rules"], str(t, get(t, r, "expr")))
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, err := os.ReadFile("grafana/xksproxy-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs["dashboard:"+p.Title] = append(exprs["dashboard:"+p.Title], tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs["dashboard variables"] = append(exprs["dashboard variables"], v.Definition)
		}
	}
	if len(exprs["rules"]) < 8 {
		t.Fatalf("found %d rule expressions", len(exprs["rules"]))
	}
	values := labelValues(t)
	used := map[string]bool{}
	for where, es := range exprs {
		for _, e := range es {
			for _, b := range badLabelValues(e, values) {
				t.Errorf("%s: %s selects a label value the proxy never exports (expr: %s)", where, b, strings.TrimSpace(e))
			}
			names := metricNames(e, known)
			if len(names) == 0 {
				t.Errorf("%s: expression uses no proxy metric: %s", where, e)
			}
			for _, n := range names {
				used[n] = true
				if !known[n] {
					t.Errorf("%s: metric %q is not exported by the proxy (expr: %s)", where, n, strings.TrimSpace(e))
				}
			}
		}
	}
	// The coverage the deployment promises.
	for _, n := range []string{"xks_requests_total", "xks_request_duration_seconds", "xks_backend_up",
		"xks_tls_certificate_expiry_seconds", "xks_cutover_state", "xks_cutover_rollbacks_total",
		"xks_sigv4_failures_total", "xks_sigv4_credential_age_seconds", "xks_shadow_results_total", "xks_fallback_total",
		"go_goroutines", "go_gc_duration_seconds", "process_resident_memory_bytes", "process_open_fds",
		"xks_fleet_member_acked_epoch", "xks_fleet_store_up", "xks_fleet_driver_elections_total", "xks_fleet_members"} {
		if !used[n] {
			t.Errorf("no rule or panel uses %s", n)
		}
	}
}

func TestBadLabelValues(t *testing.T) {
	values := map[string]map[string][]string{"xks_cutover_keys": {"result": {"ok", "error"}}}
	tests := []struct {
		expr string
		want []string
	}{
		{`sum(xks_cutover_keys{result="error"})`, nil},
		{`sum(xks_cutover_keys{result="failed"})`, []string{`xks_cutover_keys{result="failed"}`}},
		{`sum(xks_cutover_keys{phase="copy", result=~"ok|failed"})`, []string{`xks_cutover_keys{result="failed"}`}},
		{`sum(xks_cutover_keys{result=~".+"})`, nil},
		{`sum(xks_requests_total{result="anything"})`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			if got := badLabelValues(tc.expr, values); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMetricNameExtraction(t *testing.T) {
	known := map[string]bool{"xks_request_duration_seconds": true}
	tests := []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.99, sum by (le) (rate(xks_request_duration_seconds_bucket[5m])))`, []string{"xks_request_duration_seconds"}},
		{`sum(rate(xks_requests_total{error!~"|xks_fake"}[5m]))`, []string{"xks_requests_total"}},
		{`xks_unknown_bucket`, []string{"xks_unknown_bucket"}},
		{`min_over_time(go_goroutines[1h]) > 2 * histogram_quantile(0.5, process_x)`, []string{"go_goroutines", "process_x"}},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			if got := metricNames(tc.expr, known); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// needTool returns the path of a CI-installed tool or fails the test.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %q (apt-get install -y %s); .ci/run installs it", name, pkg, pkg)
	}
	return p
}

func TestPromtool(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "xksproxy-rules.yml"},
		{"test", "rules", "xksproxy-rules_test.yml"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			cmd := exec.Command(promtool, args...)
			cmd.Dir = "prometheus"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// mainPackage is what the container build compiles; until cmd/xksproxy
// exists, a stand-in main with the same dependencies.
func mainPackage(t *testing.T) string {
	if _, err := os.Stat("../cmd/xksproxy"); err == nil {
		return "./cmd/xksproxy"
	}
	t.Log("../cmd/xksproxy does not exist yet; building ./deploy/testdata/reprocheck instead")
	return "./deploy/testdata/reprocheck"
}

func goBuild(t *testing.T, args []string, out string) {
	t.Helper()
	args = slices.Clone(args)
	for i, a := range args {
		if a == "/out/xksproxy" {
			args[i] = out
		}
	}
	cmd := exec.Command("go", args[1:]...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args[1:], " "), err, o)
	}
}

func TestSystemdUnit(t *testing.T) {
	analyze := needTool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("systemd/xksproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"User=xksproxy", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
		"ProtectKernelModules=yes", "RestrictAddressFamilies=", "MemoryDenyWriteExecute=yes",
		"LockPersonality=yes", "SystemCallFilter=@system-service", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "StateDirectory=xksproxy", "ConfigurationDirectory=xksproxy",
		// Readiness, and the main PID handed over by a binary upgrade (SIGUSR2).
		"Type=notify", "NotifyAccess=all",
	} {
		if !bytes.Contains(unit, []byte("\n"+want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "xksproxy")
	goBuild(t, []string{"go", "build", "-trimpath", "-o", "/out/xksproxy", mainPackage(t)}, bin)
	patched := strings.Replace(string(unit), "ExecStart=/usr/local/bin/xksproxy", "ExecStart="+bin, 1)
	if patched == string(unit) {
		t.Fatal("ExecStart=/usr/local/bin/xksproxy not found in the unit")
	}
	// The fleet-mode drop-in adds settings to the same sections: verified merged into the unit.
	dropIn, err := os.ReadFile("systemd/xksproxy-fleet.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"After=etcd.service", "Restart=always"} {
		if !bytes.Contains(dropIn, []byte("\n"+want)) {
			t.Errorf("fleet drop-in lacks %q", want)
		}
	}
	socket, err := os.ReadFile("systemd/xksproxy.socket")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ListenStream=", "Accept=no", "Service=xksproxy.service"} {
		if !bytes.Contains(socket, []byte("\n"+want)) {
			t.Errorf("socket unit lacks %q", want)
		}
	}
	for name, text := range map[string]string{"plain": patched, "fleet": patched + "\n" + string(dropIn), "socket": string(socket)} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			unitPath := filepath.Join(dir, "xksproxy.service")
			if err := os.WriteFile(unitPath, []byte(patched), 0o644); err != nil {
				t.Fatal(err)
			}
			if name == "socket" {
				unitPath = filepath.Join(dir, "xksproxy.socket")
			}
			if err := os.WriteFile(unitPath, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", unitPath).CombinedOutput()
			// verify also reports on unrelated units of the host; keep only ours.
			var ours []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "xksproxy") {
					ours = append(ours, l)
				}
			}
			if err != nil || len(ours) > 0 {
				t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
			}
		})
	}
}

// dockerInstr is one Dockerfile instruction.
type dockerInstr struct {
	cmd, args string
	line      int
}

// parseDockerfile understands what our Dockerfile uses: comments, parser
// directives, line continuations and the standard instructions.
func parseDockerfile(b []byte) ([]dockerInstr, error) {
	known := map[string]bool{"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true,
		"ADD": true, "COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true, "WORKDIR": true, "ARG": true,
		"ONBUILD": true, "STOPSIGNAL": true, "HEALTHCHECK": true, "SHELL": true}
	var out []dockerInstr
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if c, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		if !known[strings.ToUpper(cmd)] {
			return nil, &parseError{start, "unknown instruction " + cmd}
		}
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args), start})
	}
	if cur.Len() > 0 {
		return nil, &parseError{start, "dangling line continuation"}
	}
	return out, nil
}

type parseError struct {
	line int
	msg  string
}

func (e *parseError) Error() string { return "line " + strconv.Itoa(e.line) + ": " + e.msg }

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	instrs, err := parseDockerfile(b)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	stages := map[string]bool{}
	var froms []string
	var goBuildLine, user string
	var expose []string
	args := map[string]bool{}
	for _, in := range instrs {
		switch in.cmd {
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = true
		case "FROM":
			f := strings.Fields(in.args)
			img := f[0]
			for _, m := range regexp.MustCompile(`\$\{?([A-Z_]+)\}?`).FindAllStringSubmatch(img, -1) {
				if !args[m[1]] {
					t.Errorf("line %d: FROM uses undeclared ARG %s", in.line, m[1])
				}
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			} else if len(f) != 1 {
				t.Errorf("line %d: malformed FROM %q", in.line, in.args)
			}
			froms = append(froms, img)
		case "COPY":
			for _, f := range strings.Fields(in.args) {
				if from, ok := strings.CutPrefix(f, "--from="); ok && !stages[from] {
					t.Errorf("line %d: COPY --from=%s names no earlier stage", in.line, from)
				}
			}
		case "RUN":
			if strings.HasPrefix(in.args, "go build ") {
				goBuildLine = in.args
			}
		case "USER":
			user = in.args
		case "EXPOSE":
			expose = append(expose, strings.Fields(in.args)...)
		case "ENV":
			if strings.Contains(in.args, "CGO_ENABLED") && !strings.Contains(in.args, "CGO_ENABLED=0") {
				t.Errorf("line %d: CGO must be disabled for a static binary", in.line)
			}
		}
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:") || froms[len(froms)-1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("stages %v: want golang build then distroless static nonroot", froms)
	}
	if !strings.HasPrefix(user, "nonroot") {
		t.Errorf("USER %q, want nonroot", user)
	}
	if !slices.Contains(expose, "8443") || !slices.Contains(expose, "9464") {
		t.Errorf("EXPOSE %v, want 8443 and 9464", expose)
	}
	if goBuildLine == "" {
		t.Fatal("no RUN go build in the Dockerfile")
	}

	t.Run("build stage is reproducible", func(t *testing.T) {
		// Run the Dockerfile's exact go build line (its ldflags quoted as
		// the shell would) twice and compare the binaries.
		argv := shellSplit(t, goBuildLine)
		for _, want := range []string{"-trimpath", "-s -w -buildid=", "/out/xksproxy", "./cmd/xksproxy"} {
			if !slices.Contains(argv, want) {
				t.Fatalf("go build line %q lacks %q", goBuildLine, want)
			}
		}
		pkg := mainPackage(t)
		argv[len(argv)-1] = pkg
		var sums [2][32]byte
		for i := range sums {
			out := filepath.Join(t.TempDir(), "xksproxy")
			goBuild(t, argv, out)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			sums[i] = sha256.Sum256(b)
		}
		if sums[0] != sums[1] {
			t.Fatalf("two builds differ: %x vs %x", sums[0], sums[1])
		}
	})
}

// shellSplit splits a RUN line with double quotes (all our Dockerfile uses).
func shellSplit(t *testing.T, s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQ, have = !inQ, true
		case r == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQ {
		t.Fatalf("unbalanced quotes in %q", s)
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// manifests reads every document of the files matching glob, by "Kind/name".
func manifests(t *testing.T, glob string) map[string]map[string]any {
	t.Helper()
	docs := map[string]map[string]any{}
	files, _ := filepath.Glob(glob)
	if len(files) == 0 {
		t.Fatalf("no manifest matches %s", glob)
	}
	for _, f := range files {
		for _, d := range readYAML(t, f) {
			m := d.(map[string]any)
			for _, k := range []string{"apiVersion", "kind", "metadata"} {
				if m[k] == nil {
					t.Errorf("%s: missing %s", f, k)
				}
			}
			docs[str(t, m["kind"])+"/"+str(t, get(t, m, "metadata", "name"))] = m
		}
	}
	return docs
}

// TestKubernetesManifests checks both layouts: single/ (one replica, journal on a
// PersistentVolume) and fleet/ (three replicas coordinated through the 3-member etcd in the same
// directory), each with the shared Service and Secret of kubernetes/. No journal is ever on an
// emptyDir, readiness is /ready and liveness /ping.
func TestKubernetesManifests(t *testing.T) {
	shared := manifests(t, "kubernetes/*.yaml")
	port := list(t, get(t, shared["Service/xksproxy"], "spec", "ports"))[0]
	if get(t, port, "port") != "443" || get(t, port, "targetPort") != "xks" {
		t.Errorf("service port %v", port)
	}
	for _, tc := range []struct {
		dir      string
		replicas int
		fleet    bool
	}{
		{"kubernetes/single", 1, false},
		{"kubernetes/fleet", 3, true},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			docs := manifests(t, tc.dir+"/*.yaml")
			sts := docs["StatefulSet/xksproxy"]
			if sts == nil {
				t.Fatalf("no StatefulSet xksproxy (have %v)", slices.Sorted(maps.Keys(docs)))
			}
			if docs["Deployment/xksproxy"] != nil {
				t.Error("a Deployment: pods would get new names (new members) and the journal no volume of its own")
			}
			if r, _ := strconv.Atoi(str(t, get(t, sts, "spec", "replicas"))); r != tc.replicas {
				t.Errorf("replicas = %d, want %d", r, tc.replicas)
			}
			if hs := shared["Service/"+str(t, get(t, sts, "spec", "serviceName"))]; hs == nil || get(t, hs, "spec", "clusterIP") != "None" {
				t.Errorf("serviceName %v is not a headless Service of kubernetes/", get(t, sts, "spec", "serviceName"))
			}
			pod := get(t, sts, "spec", "template")
			ann := get(t, pod, "metadata", "annotations").(map[string]any)
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9464" {
				t.Errorf("scrape annotations: %v", ann)
			}
			if tc.replicas > 1 && get(t, pod, "spec", "affinity", "podAntiAffinity") == nil {
				t.Error("no pod anti-affinity")
			}
			if get(t, pod, "spec", "securityContext", "runAsNonRoot") != "true" {
				t.Error("runAsNonRoot not true")
			}
			c := list(t, get(t, pod, "spec", "containers"))[0]
			// A replica leaves the Service before SIGTERM, and has the time to drain after it.
			stopWait, _ := strconv.Atoi(str(t, get(t, c, "lifecycle", "preStop", "sleep", "seconds")))
			grace, _ := strconv.Atoi(str(t, get(t, pod, "spec", "terminationGracePeriodSeconds")))
			if stopWait < 5 || grace < stopWait+15 {
				t.Errorf("preStop sleep %ds and grace %ds: want a sleep of 5 s or more and 15 s to drain after it", stopWait, grace)
			}
			for probe, path := range map[string]string{"readinessProbe": "/ready", "livenessProbe": "/ping"} {
				if get(t, c, probe, "httpGet", "path") != path || get(t, c, probe, "httpGet", "scheme") != "HTTPS" {
					t.Errorf("%s is not HTTPS %s", probe, path)
				}
			}
			if get(t, c, "securityContext", "readOnlyRootFilesystem") != "true" || get(t, c, "securityContext", "allowPrivilegeEscalation") != "false" {
				t.Error("container securityContext not read-only / no privilege escalation")
			}
			if get(t, c, "resources", "requests") == nil {
				t.Error("no resource requests")
			}
			var cm, sec bool
			volumes := map[string]map[string]any{}
			for _, v := range list(t, get(t, pod, "spec", "volumes")) {
				vm := v.(map[string]any)
				volumes[str(t, vm["name"])] = vm
				if _, ok := vm["emptyDir"]; ok {
					t.Errorf("volume %v is an emptyDir", vm["name"])
				}
				if x, ok := vm["configMap"].(map[string]any); ok && x["name"] == get(t, docs["ConfigMap/xksproxy-config"], "metadata", "name") {
					cm = true
				}
				if x, ok := vm["secret"].(map[string]any); ok && shared["Secret/"+str(t, x["secretName"])] != nil {
					sec = true
				}
			}
			if !cm || !sec {
				t.Errorf("the StatefulSet mounts the ConfigMap: %v, the Secret: %v", cm, sec)
			}
			claims := map[string]bool{}
			for _, vc := range list(t, get(t, sts, "spec", "volumeClaimTemplates")) {
				claims[str(t, get(t, vc, "metadata", "name"))] = true
			}
			mounts := map[string]string{} // path → volume
			for _, m := range list(t, get(t, c, "volumeMounts")) {
				mounts[str(t, get(t, m, "mountPath"))] = str(t, get(t, m, "name"))
			}
			if v := mounts["/var/lib/xksproxy"]; !claims[v] || volumes[v] != nil {
				t.Errorf("/var/lib/xksproxy is on volume %q, not on a PersistentVolume of volumeClaimTemplates %v", v, claims)
			}
			doc := str(t, get(t, docs["ConfigMap/xksproxy-config"], "data", "xksproxy.toml"))
			setShippedEnv(t, doc, podEnv(t, sts))
			f := loadConfig(t, "xksproxy.toml", doc)
			if f.TLS.Mode != "files" {
				t.Errorf("tls mode %q: replicas need files (ACME needs shared storage)", f.TLS.Mode)
			}
			if len(f.Backend) != 2 || !strings.HasPrefix(f.Cutover.JournalPath, "/var/lib/xksproxy/") {
				t.Errorf("backends %d, journal %q", len(f.Backend), f.Cutover.JournalPath)
			}
			if !tc.fleet {
				if f.Fleet != nil {
					t.Error("the single replica has a [fleet] section")
				}
				return
			}
			if f.Fleet == nil {
				t.Fatal("no [fleet] section")
			}
			if f.Fleet.Member != "" {
				t.Errorf("member %q: one ConfigMap for every replica must leave the member to the host name", f.Fleet.Member)
			}
			checkEtcd(t, docs, f.Fleet.EtcdEndpoints)
			if get(t, docs["PodDisruptionBudget/xksproxy"], "spec", "minAvailable") != "2" {
				t.Error("PDB minAvailable != 2 of 3")
			}
		})
	}
}

// checkEtcd asserts that the etcd StatefulSet forms one 3-member cluster over TLS and that the
// proxy's endpoints are exactly its members' client URLs.
func checkEtcd(t *testing.T, docs map[string]map[string]any, endpoints []string) {
	t.Helper()
	sts := docs["StatefulSet/xksproxy-etcd"]
	if sts == nil {
		t.Fatal("no etcd StatefulSet")
	}
	n, _ := strconv.Atoi(str(t, get(t, sts, "spec", "replicas")))
	svc := str(t, get(t, sts, "spec", "serviceName"))
	if hs := docs["Service/"+svc]; hs == nil || get(t, hs, "spec", "clusterIP") != "None" || get(t, hs, "spec", "publishNotReadyAddresses") != "true" {
		t.Errorf("etcd serviceName %s: want a headless Service publishing not-ready addresses", svc)
	}
	ns := str(t, get(t, sts, "metadata", "namespace"))
	flags := map[string]string{}
	for _, a := range list(t, get(t, list(t, get(t, sts, "spec", "template", "spec", "containers"))[0], "args")) {
		k, v, _ := strings.Cut(str(t, a), "=")
		flags[k] = v
	}
	var members, clients []string
	for i := range n {
		host := fmt.Sprintf("xksproxy-etcd-%d.%s.%s.svc", i, svc, ns)
		members = append(members, fmt.Sprintf("xksproxy-etcd-%d=https://%s:2380", i, host))
		clients = append(clients, "https://"+host+":2379")
	}
	if n != 3 || flags["--initial-cluster"] != strings.Join(members, ",") {
		t.Errorf("%d members, --initial-cluster %q, want %q", n, flags["--initial-cluster"], strings.Join(members, ","))
	}
	for _, f := range []string{"--client-cert-auth", "--peer-client-cert-auth"} {
		if _, ok := flags[f]; !ok {
			t.Errorf("etcd without %s", f)
		}
	}
	if !slices.Equal(endpoints, clients) {
		t.Errorf("[fleet] etcd_endpoints %v, want the members %v", endpoints, clients)
	}
}

// fileKeyRe finds the files a configuration reads at load time (secrets, the admin token, the
// fleet secret, the ckms client files).
var fileKeyRe = regexp.MustCompile(`(?m)^\s*(secret_access_key_file|token_file|password_file|secret_file|ca_file|cert_file|key_file|ckms_config)\s*=\s*"(/etc/xksproxy/[^"]+)"`)

// loadConfig runs config.Load on doc as if installed: /etc/xksproxy/ becomes a temporary
// directory holding the secret files it names (mode 0600, valid test secrets).
func loadConfig(t *testing.T, name, doc string) *config.File {
	t.Helper()
	dir := t.TempDir()
	for _, m := range fileKeyRe.FindAllStringSubmatch(doc, -1) {
		p := filepath.Join(dir, strings.TrimPrefix(m[2], "/etc/xksproxy/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		// Valid as a SigV4 secret, as an admin token (≥ 32 characters) and as a fleet secret
		// (base64 of ≥ 32 bytes).
		if err := os.WriteFile(p, []byte("ZGVwbG95LXRlc3Qtc2VjcmV0LWRlcGxveS10ZXN0LXNlY3JldA==\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	doc = strings.ReplaceAll(doc, "/etc/xksproxy/", dir+"/")
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f, warnings, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	for _, w := range warnings {
		t.Logf("%s: warning: %s", name, w)
	}
	return f
}

// inlineSecretRe finds a secret written into a configuration file (not commented out).
var inlineSecretRe = regexp.MustCompile(`(?m)^\s*(secret_access_key|token|password)\s*=\s*"[^"]`)

func TestExamples(t *testing.T) {
	tests := []struct {
		file     string
		backends int
		tlsMode  string
	}{
		{"examples/single-backend.toml", 1, "acme"},
		{"examples/migration-a-to-b.toml", 2, "files"},
		{"examples/fleet.toml", 2, "files"},
		{"examples/xksproxy.toml", 2, "files"}, // the reference (reference_test.go checks the rest)
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			setShippedEnv(t, string(b), dropInEnv(t))
			f := loadConfig(t, filepath.Base(tc.file), string(b))
			if len(f.Backend) != tc.backends || f.TLS.Mode != tc.tlsMode || len(f.Prefix) == 0 {
				t.Errorf("backends %d, tls mode %v, prefixes %d", len(f.Backend), f.TLS.Mode, len(f.Prefix))
			}
			if !strings.HasSuffix(f.Server.Listen, ":443") {
				t.Errorf("listen %v: AWS connects to 443 only", f.Server.Listen)
			}
			if fleet := strings.Contains(tc.file, "fleet"); fleet != (f.Fleet != nil) || fleet && len(f.Fleet.EtcdEndpoints) != 3 {
				t.Errorf("[fleet] section %+v", f.Fleet)
			}
			if inlineSecretRe.Match(b) { // a commented-out line shows the key, it sets nothing
				t.Errorf("examples keep secrets in files")
			}
			for _, p := range f.Prefix {
				for _, c := range p.Credential {
					if c.Created.IsZero() {
						t.Errorf("prefix %s credential %s: no created date (the age metric needs one)", p.Path, c.AccessKeyID)
					}
				}
			}
		})
	}
}

// The certificate and credential gauges pass `promtool check metrics` (Prometheus's naming
// lint: base units, seconds rather than days), with a series of each.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	reg := prometheus.NewRegistry()
	m := certs.NewMetrics(reg)
	src, err := certs.SelfSigned("xks.test")
	if err != nil {
		t.Fatal(err)
	}
	src.SetMetrics(m)
	if err := m.SetCredentialAges("/aws", []certs.CredentialAge{{AccessKeyID: "AKIAXKSPROXYDEPLOY01", Created: time.Now().Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) < 2 {
		t.Fatalf("gathered %d families, want the expiry and the age gauges", len(mfs))
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &text
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
