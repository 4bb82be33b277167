package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/internal/testpki"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/sigv4"
)

// TestZeroDowntimeProcesses is the operator's whole story with real processes and real signals:
// one xksproxy process (built here, as are three emulated Cosmian servers) serves backend A
// under steady signed load (100 requests a second, Encrypt, Decrypt and CreateKey); it gets B by
// SIGHUP and migrates A → B (the CLI), gets C by SIGHUP and migrates B → C with
// `cutover start --source b --target c`; while B → C is switched (probation running) its binary
// is replaced on disk by another build and SIGUSR2 starts it on the same sockets; the new
// process resumes the journal and the CLI finalizes through it. A second client opens a new
// connection every 20 ms throughout. Nothing may fail: every request answered, no connection
// refused.
func TestZeroDowntimeProcesses(t *testing.T) {
	dir := t.TempDir()
	bin := buildBinaries(t, dir, "0.9.0-before", "./cmd/xksproxy", "./cmd/kmsemu")
	buildBinaries(t, filepath.Join(dir, "next"), "1.0.0-after", "./cmd/xksproxy")
	ports := freePorts(t, 6)
	xksPort, metricsPort, adminPort := ports[0], ports[1], ports[2]
	const region, token = "us-east-1", "zero-downtime-admin-token-0123456789"
	cred := sigv4.Credential{AccessKeyID: "AKIAZERODOWNTIME0001", Secret: "emVyby1kb3dudGltZS1zZWNyZXQtemVyby1kb3dudGltZS1zZWNy"}

	// Three emulated Cosmian servers: A holds the keys.
	var backends []emuBackend
	for i, name := range []string{"a", "b", "c"} {
		seed := 0
		if i == 0 {
			seed = 10
		}
		backends = append(backends, startEmu(t, bin, dir, name, ports[3+i], seed))
	}
	ca := testpki.NewCA(t, "zero-downtime CA", time.Now().Add(24*time.Hour))
	ca.WriteLeaf(t, filepath.Join(dir, "xks.crt"), filepath.Join(dir, "xks.key"), 0, time.Now().Add(24*time.Hour), "localhost", "127.0.0.1")
	cfgPath := filepath.Join(dir, "xksproxy.toml")
	writeConfig := func(n int, withCutover bool, metrics ...string) {
		t.Helper()
		if len(metrics) > 0 {
			metricsPort = metrics[0]
		}
		var b strings.Builder
		fmt.Fprintf(&b, `[server]
listen = "127.0.0.1:%s"
metrics_listen = "127.0.0.1:%s"
[tls]
mode = "files"
cert_file = "xks.crt"
key_file = "xks.key"
[[prefix]]
path = "/aws"
region = %q
[[prefix.credential]]
access_key_id = %q
secret_access_key = %q
[admin]
listen = "127.0.0.1:%s"
token = %q
[log]
format = "text"
`, xksPort, metricsPort, region, cred.AccessKeyID, cred.Secret, adminPort, token)
		for _, be := range backends[:n] {
			b.WriteString(be.toml)
		}
		if withCutover {
			b.WriteString(`[cutover]
journal_path = "cutover.journal"
source = "a"
target = "b"
probation_duration = "3s"
probation_min_requests = 0
probation_max_p99 = "2s"
`)
		}
		if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(1, false)

	px := startProxyProcess(t, bin, dir, cfgPath)
	endpoint := "https://127.0.0.1:" + xksPort
	clientTLS := &tls.Config{RootCAs: ca.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	waitReady(t, endpoint, clientTLS)

	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%06d", i+1)
	}
	lg, err := loadgen.New(loadgen.Config{
		Endpoint: endpoint, Prefix: "/aws", Region: region, Credential: cred, TLS: clientTLS,
		Keys: keys, Rate: 100, Workers: 32, Conns: 16, Timeout: 2 * time.Second,
		Mix: loadgen.Mix{Encrypt: 0.49, Decrypt: 0.49, CreateKey: 0.02}, CreateKeyPrefix: "zd-new-%d",
	})
	if err != nil {
		t.Fatal(err)
	}
	repc := make(chan *loadgen.Report, 1)
	go func() {
		rep, err := lg.Run(context.Background())
		if err != nil {
			t.Errorf("loadgen: %v", err)
		}
		repc <- rep
	}()
	probe := startConnProbe(endpoint, clientTLS)
	defer probe.stop()

	cli := func(args ...string) []byte {
		t.Helper()
		all := append(append([]string{"cutover"}, args...), "--admin", "http://127.0.0.1:"+adminPort)
		cmd := exec.Command(filepath.Join(bin, "xksproxy"), all...)
		cmd.Env = append(os.Environ(), "XKSPROXY_ADMIN_TOKEN="+token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("xksproxy %s: %v\n%s\nproxy log:\n%s", strings.Join(all, " "), err, out, px.tail())
		}
		return out
	}
	status := func() cutover.Status {
		var s cutover.Status
		if err := json.Unmarshal(cli("status", "--json"), &s); err != nil {
			t.Fatalf("status: %v", err)
		}
		return s
	}
	waitState := func(want cutover.State) cutover.Status {
		t.Helper()
		var s cutover.Status
		waitFor(t, waitLong, "state "+string(want), func() bool {
			s = status()
			return s.State == want
		})
		return s
	}
	hup := func(what string) {
		t.Helper()
		reloads := px.count("reload: applied")
		if err := syscall.Kill(px.pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, waitLong, what+" applied by SIGHUP", func() bool { return px.count("reload: applied") > reloads })
		if px.count("reload: refused") > 0 {
			t.Fatalf("a reload was refused:\n%s", px.tail())
		}
	}

	time.Sleep(time.Second)
	writeConfig(2, true)
	hup("backend b and [cutover]")
	if s := status(); s.State != cutover.StateServing || s.Primary != "a" {
		t.Fatalf("after the reload: %s, %s serves", s.State, s.Primary)
	}
	cli("start", "--no-shadow", "--auto-finalize")
	s := waitState(cutover.StateFinalized)
	if s.Primary != "b" {
		t.Fatalf("A → B finalized but %s serves", s.Primary)
	}

	writeConfig(3, true) // [cutover] still says a → b: the next pair is given on the command line
	hup("backend c")
	cli("plan", "--source", "b", "--target", "c")
	cli("start", "--source", "b", "--target", "c", "--no-shadow")
	s = waitState(cutover.StateSwitched)
	if s.Source != "b" || s.Target != "c" || s.Primary != "c" || s.Fallback != "b" {
		t.Fatalf("B → C switched: %s → %s, %s serves, fallback %q", s.Source, s.Target, s.Primary, s.Fallback)
	}
	epoch := s.Epoch

	// The binary on disk is replaced by another build, then SIGUSR2.
	if err := os.Rename(filepath.Join(dir, "next", "xksproxy"), filepath.Join(bin, "xksproxy")); err != nil {
		t.Fatal(err)
	}
	oldPID := px.pid()

	// First an upgrade that fails after the new process took the journal: its metrics address
	// is taken. The old process takes the journal back and goes on serving, and migrating.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goodMetrics := metricsPort
	writeConfig(3, true, strconv.Itoa(taken.Addr().(*net.TCPAddr).Port))
	if err := syscall.Kill(oldPID, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "the failed upgrade reported", func() bool { return px.count("upgrade failed; this process goes on serving") == 1 })
	taken.Close()
	if !strings.Contains(px.tail(), "upgrade: the journal is back with this process") {
		t.Fatalf("the journal was not taken back after the failed upgrade:\n%s", px.tail())
	}
	if s := status(); s.State != cutover.StateSwitched || s.Epoch != epoch {
		t.Fatalf("after the failed upgrade: %s epoch %d, want switched epoch %d", s.State, s.Epoch, epoch)
	}
	writeConfig(3, true, goodMetrics)
	if err := syscall.Kill(oldPID, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case <-px.exited:
	case <-time.After(waitLong):
		t.Fatalf("the old process did not exit after SIGUSR2:\n%s", px.tail())
	}
	if code := px.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the old process exited %d:\n%s", code, px.tail())
	}
	newPID := px.childPID(t)
	if newPID == oldPID {
		t.Fatal("no new process")
	}
	if !strings.Contains(px.tail(), `version=1.0.0-after`) {
		t.Fatalf("the new process is not the new build:\n%s", px.tail())
	}
	s = status() // the new process's controller resumed the journal
	if s.State != cutover.StateSwitched || s.Epoch != epoch || s.Source != "b" || s.Target != "c" {
		t.Fatalf("after the upgrade: %s epoch %d (%s → %s), want switched epoch %d b → c", s.State, s.Epoch, s.Source, s.Target, epoch)
	}
	waitFor(t, waitLong, "probation passed on the new process", func() bool { p := status().Probation; return p != nil && p.Passed })
	cli("finalize")
	s = waitState(cutover.StateFinalized)
	if s.Primary != "c" {
		t.Fatalf("B → C finalized but %s serves", s.Primary)
	}
	time.Sleep(time.Second)

	lg.Stop()
	rep := <-repc
	refused, probed, probeFailed := probe.stop()
	t.Logf("load: %d requests (%d succeeded, %d failed; by error %v), p99 %v, max %v; protocols %v",
		rep.Total, rep.Succeeded, rep.Failed, rep.ByError, rep.P99, rep.Max, rep.Protocols)
	t.Logf("new connections: %d opened, %d refused, %d failed otherwise", probed, refused, probeFailed)
	if want := int64(0.8 * 100 * rep.Ended.Sub(rep.Started).Seconds()); rep.Total < want {
		t.Errorf("only %d requests sent in %v at 100/s", rep.Total, rep.Ended.Sub(rep.Started))
	}
	if rep.Failed != 0 {
		t.Errorf("%d requests failed: %v\nproxy log:\n%s", rep.Failed, rep.ByError, px.tail())
	}
	if refused != 0 || probeFailed != 0 {
		first := ""
		if e := probe.firstErr.Load(); e != nil {
			first = *e
		}
		t.Errorf("%d connections refused, %d failed otherwise; the first: %s", refused, probeFailed, first)
	}
	if probed < 100 {
		t.Errorf("only %d connections probed", probed)
	}
	_ = syscall.Kill(newPID, syscall.SIGTERM)
}

// buildBinaries builds pkgs into dir with main.version set, and returns dir.
func buildBinaries(t *testing.T, dir, version string, pkgs ...string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"build", "-o", dir + "/", "-ldflags", "-X main.version=" + version}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// freePorts returns n distinct loopback ports nothing listens on right now.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// emuBackend is one emulated Cosmian server process and its [[backend]] entry.
type emuBackend struct {
	toml      string
	name      string
	ckms      string // the ckms.toml of its owner identity (KMIP access, as the proxy has)
	healthKey string // the proxy's health-check key id on it (never migrated)
}

// startEmu runs kmsemu as backend name on port, with seedKeys keys key-000001 … (0: none).
func startEmu(t *testing.T, bin, dir, name, port string, seedKeys int) emuBackend {
	t.Helper()
	keyID := "AKIABACKEND" + strings.ToUpper(name) + "00000001"
	secret := "YmFja2VuZC1zZWNyZXQtYmFja2VuZC1zZWNyZXQtYmFja2Vu" + name + name
	owner := "owner-token-" + name + "-0123456789abcdef"
	args := []string{"--listen", "127.0.0.1:" + port, "--tls-self-signed", "--cosmian-version", "5.28",
		"--xks-region", "us-east-1", "--xks-access-key-id", keyID, "--xks-secret-access-key", secret, "--token", "admin=" + owner}
	if seedKeys > 0 {
		args = append(args, "--seed-keys", strconv.Itoa(seedKeys))
	}
	cmd := exec.Command(filepath.Join(bin, "kmsemu"), args...)
	logf, err := os.Create(filepath.Join(dir, "kmsemu-"+name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait(); logf.Close() })
	ckms := filepath.Join(dir, "ckms-"+name+".toml")
	if err := os.WriteFile(ckms, []byte(fmt.Sprintf("[http_config]\nserver_url = \"https://127.0.0.1:%s\"\naccept_invalid_certs = true\naccess_token = %q\n", port, owner)), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "kmsemu "+name, func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	health := proxy.HealthKeyID(proxy.HealthConfig{}, proxy.BackendConfig{Name: name, Credential: sigv4.Credential{AccessKeyID: keyID, Secret: secret}})
	return emuBackend{name: name, ckms: ckms, healthKey: health, toml: fmt.Sprintf(`[[backend]]
name = %q
xks_url = "https://127.0.0.1:%s/aws"
region = "us-east-1"
access_key_id = %q
secret_access_key = %q
ckms_config = %q
`, name, port, keyID, secret, ckms)}
}

// proxyProcess is the xksproxy process (and, after an upgrade, the one that replaced it: same
// process group, same log).
type proxyProcess struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	cur    atomic.Int64
}

func startProxyProcess(t *testing.T, bin, dir, cfg string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{log: filepath.Join(dir, "xksproxy.log"), exited: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(bin, "xksproxy"), "serve", "--config", cfg)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cur.Store(int64(p.cmd.Process.Pid))
	pgid := p.cmd.Process.Pid
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
		logf.Close()
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.tail())
		}
	})
	return p
}

func (p *proxyProcess) pid() int { return int(p.cur.Load()) }

// childPID is the PID the new process logged at its start.
func (p *proxyProcess) childPID(t *testing.T) int {
	t.Helper()
	re := regexp.MustCompile(`xksproxy starting.*pid=(\d+) upgraded=true`)
	var pid int
	waitFor(t, waitLong, "the new process's start line", func() bool {
		m := re.FindStringSubmatch(p.tail())
		if m == nil {
			return false
		}
		pid, _ = strconv.Atoi(m[1])
		return true
	})
	p.cur.Store(int64(pid))
	return pid
}

// tail is the log without the line of every request.
func (p *proxyProcess) tail() string {
	b, _ := os.ReadFile(p.log)
	return withoutRequests(b)
}

// withoutRequests drops the line of every request from a proxy log.
func withoutRequests(b []byte) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `msg="xks request"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func (p *proxyProcess) count(s string) int { return strings.Count(p.tail(), s) }

func waitReady(t *testing.T, endpoint string, tc *tls.Config) {
	t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	defer c.CloseIdleConnections()
	waitFor(t, waitLong, "the proxy ready", func() bool {
		resp, err := c.Get(endpoint + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// connProbe opens a new connection every 20 ms (TLS handshake and GET /ping) and counts those
// refused and those that failed otherwise.
type connProbe struct {
	stopc                  chan struct{}
	wg                     sync.WaitGroup
	refused, failed, total atomic.Int64
	once                   sync.Once
	firstErr               atomic.Pointer[string]
}

func startConnProbe(endpoint string, tc *tls.Config) *connProbe {
	p := &connProbe{stopc: make(chan struct{})}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	p.wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stopc:
				return
			case <-t.C:
			}
			p.total.Add(1)
			resp, err := c.Get(endpoint + "/ping")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				msg := err.Error()
				p.firstErr.CompareAndSwap(nil, &msg)
				if errors.Is(err, syscall.ECONNREFUSED) {
					p.refused.Add(1)
				} else {
					p.failed.Add(1)
				}
			}
		}
	})
	return p
}

func (p *connProbe) stop() (refused, total, failed int64) {
	p.once.Do(func() { close(p.stopc) })
	p.wg.Wait()
	return p.refused.Load(), p.total.Load(), p.failed.Load()
}
