// Package deploy_test checks the deployment artefacts: metric names used by
// the alert rules and the dashboard, promtool, systemd-analyze, the
// Dockerfile and its reproducible build, Kubernetes manifests and examples.
package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// exportedMetricNames returns every metric name the proxy exports.
//
// TODO(lead): replace this list with the live registries once proxy, cutover
// and certs are wired: build a prometheus.Registry, register
// proxy.NewMetrics / cutover metrics / certs.NewMetrics on it, touch each
// vector once, and return the names from reg.Gather().
func exportedMetricNames(t *testing.T) []string {
	t.Helper()
	return []string{
		// proxy
		"xks_requests_total",
		"xks_request_duration_seconds",
		"xks_backend_request_duration_seconds",
		"xks_in_flight_requests",
		"xks_sigv4_failures_total",
		"xks_fallback_total",
		"xks_backend_up",
		"xks_route_epoch",
		"xks_route_info",
		"xks_build_info",
		// cutover
		"xks_cutover_epoch",
		"xks_cutover_state",
		"xks_cutover_keys",
		"xks_shadow_results_total",
		"xks_cutover_rollbacks_total",
		"xks_cutover_fallbacks_total",
		// certs
		"xks_tls_certificate_expiry_days",
		"xks_tls_certificate_reloads_total",
		"xks_sigv4_credential_age_days",
	}
}

var (
	metricRe = regexp.MustCompile(`\bxks_[a-z0-9_]+`)
	quotedRe = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// metricNames returns the xks_ metric names an expression uses, with the
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
	used := map[string]bool{}
	for where, es := range exprs {
		for _, e := range es {
			names := metricNames(e, known)
			if len(names) == 0 {
				t.Errorf("%s: expression uses no xks_ metric: %s", where, e)
			}
			for _, n := range names {
				used[n] = true
				if !known[n] {
					t.Errorf("%s: metric %q is not exported by the proxy (expr: %s)", where, n, strings.TrimSpace(e))
				}
			}
		}
	}
	// The required coverage.
	for _, n := range []string{"xks_requests_total", "xks_request_duration_seconds", "xks_backend_up",
		"xks_tls_certificate_expiry_days", "xks_cutover_state", "xks_cutover_rollbacks_total",
		"xks_sigv4_failures_total", "xks_sigv4_credential_age_days", "xks_shadow_results_total", "xks_fallback_total"} {
		if !used[n] {
			t.Errorf("no rule or panel uses %s", n)
		}
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
	unitPath := filepath.Join(dir, "xksproxy.service")
	if err := os.WriteFile(unitPath, []byte(patched), 0o644); err != nil {
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

func TestKubernetesManifests(t *testing.T) {
	docs := map[string]map[string]any{}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) < 5 {
		t.Fatalf("found %d manifests", len(files))
	}
	for _, f := range files {
		for _, d := range readYAML(t, f) {
			m := d.(map[string]any)
			for _, k := range []string{"apiVersion", "kind", "metadata"} {
				if m[k] == nil {
					t.Errorf("%s: missing %s", f, k)
				}
			}
			docs[str(t, m["kind"])] = m
		}
	}
	dep := docs["Deployment"]
	if r, _ := strconv.Atoi(str(t, get(t, dep, "spec", "replicas"))); r < 2 {
		t.Errorf("replicas = %d, want >= 2", r)
	}
	pod := get(t, dep, "spec", "template")
	ann := get(t, pod, "metadata", "annotations").(map[string]any)
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9464" {
		t.Errorf("scrape annotations: %v", ann)
	}
	if get(t, pod, "spec", "affinity", "podAntiAffinity") == nil {
		t.Error("no pod anti-affinity")
	}
	if get(t, pod, "spec", "securityContext", "runAsNonRoot") != "true" {
		t.Error("runAsNonRoot not true")
	}
	c := list(t, get(t, pod, "spec", "containers"))[0]
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if get(t, c, probe, "httpGet", "path") != "/ping" || get(t, c, probe, "httpGet", "scheme") != "HTTPS" {
			t.Errorf("%s is not HTTPS /ping", probe)
		}
	}
	if get(t, c, "securityContext", "readOnlyRootFilesystem") != "true" || get(t, c, "securityContext", "allowPrivilegeEscalation") != "false" {
		t.Error("container securityContext not read-only / no privilege escalation")
	}
	if get(t, c, "resources", "requests") == nil {
		t.Error("no resource requests")
	}
	var cm, sec bool
	for _, v := range list(t, get(t, pod, "spec", "volumes")) {
		vm := v.(map[string]any)
		if x, ok := vm["configMap"].(map[string]any); ok && x["name"] == get(t, docs["ConfigMap"], "metadata", "name") {
			cm = true
		}
		if x, ok := vm["secret"].(map[string]any); ok && x["secretName"] == get(t, docs["Secret"], "metadata", "name") {
			sec = true
		}
	}
	if !cm || !sec {
		t.Errorf("deployment mounts the ConfigMap: %v, the Secret: %v", cm, sec)
	}
	if get(t, docs["PodDisruptionBudget"], "spec", "minAvailable") != "1" {
		t.Error("PDB minAvailable != 1")
	}
	port := list(t, get(t, docs["Service"], "spec", "ports"))[0]
	if get(t, port, "port") != "443" || get(t, port, "targetPort") != "xks" {
		t.Errorf("service port %v", port)
	}
	// The embedded proxy configuration is valid TOML.
	var conf map[string]any
	if _, err := toml.Decode(str(t, get(t, docs["ConfigMap"], "data", "xksproxy.toml")), &conf); err != nil {
		t.Errorf("configmap xksproxy.toml: %v", err)
	}
}

func TestExamples(t *testing.T) {
	tests := []struct {
		file     string
		backends int
		tlsMode  string
	}{
		{"examples/single-backend.toml", 1, "acme"},
		{"examples/migration-a-to-b.toml", 2, "files"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			var conf struct {
				Server  map[string]any   `toml:"server"`
				TLS     map[string]any   `toml:"tls"`
				Prefix  []map[string]any `toml:"prefix"`
				Backend []map[string]any `toml:"backend"`
				Route   map[string]any   `toml:"route"`
			}
			md, err := toml.DecodeFile(tc.file, &conf)
			if err != nil {
				t.Fatal(err)
			}
			_ = md
			if len(conf.Backend) != tc.backends || conf.TLS["mode"] != tc.tlsMode || len(conf.Prefix) == 0 {
				t.Errorf("backends %d, tls mode %v, prefixes %d", len(conf.Backend), conf.TLS["mode"], len(conf.Prefix))
			}
			if !strings.HasSuffix(conf.Server["listen"].(string), ":443") {
				t.Errorf("listen %v: AWS connects to 443 only", conf.Server["listen"])
			}
			for _, b := range conf.Backend {
				if _, inline := b["secret_access_key"]; inline {
					t.Errorf("backend %v: examples keep secrets in files", b["name"])
				}
			}
		})
	}
}
