package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The laptop runbook: docs/operating.md, "Try the runbook on a laptop", runs two emulated Cosmian
// servers and the proxy on examples/local-a-to-b.toml, then migrates A → B, rolls back,
// migrates again and finalizes, all through the CLI. TestLaptopRunbook runs the documented
// lines as an operator would, each command its own process, with two changes only: its own
// build of the commands for bin/, and free ports for the documented ones, rewritten in copies
// of the configuration files, so that it never collides with another test or a running proxy.

const (
	operatingDoc   = "../docs/operating.md"
	laptopHeading  = "### Try the runbook on a laptop"
	laptopConfig   = "examples/local-a-to-b.toml"
	laptopDir      = "examples/local-a-to-b"
	laptopStepTime = 3 * time.Minute // bounds each documented command
)

// laptopPorts are the loopback ports the example documents: the XKS listener, metrics, admin,
// Cosmian A and Cosmian B.
var laptopPorts = []string{"8443", "9464", "9465", "9998", "9999"}

// docBlocks returns the sh code blocks that follow heading in the markdown doc, up to the next
// heading of the same or a higher level; each block is its lines with continuations joined and
// comments dropped.
func docBlocks(t *testing.T, doc, heading string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s: no section %q", operatingDoc, heading)
	}
	level := strings.Index(heading, " ")
	var blocks [][]string
	var cur []string
	in, pending := false, ""
	for _, l := range strings.Split(rest, "\n") {
		if !in && strings.HasPrefix(l, "#") && strings.Index(l, " ") <= level {
			break
		}
		switch {
		case !in && l == "```sh":
			in, cur = true, nil
		case in && l == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			line := strings.TrimSpace(l)
			if i := strings.Index(line, " #"); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
			if strings.HasPrefix(line, "#") {
				continue
			}
			if s, ok := strings.CutSuffix(line, "\\"); ok {
				pending += strings.TrimSpace(s) + " "
				continue
			}
			if line = pending + line; line != "" {
				cur = append(cur, line)
			}
			pending = ""
		}
	}
	return blocks
}

// shellWords splits a documented command line: words separated by spaces, "double" and
// 'single' quoted words kept whole. Nothing else of a shell is used in the runbook.
func shellWords(line string) ([]string, error) {
	var words []string
	var b strings.Builder
	quote, inWord := rune(0), false
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			b.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed quote in %q", line)
	}
	if inWord {
		words = append(words, b.String())
	}
	return words, nil
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

// laptop is the operator's environment: the copies of the example, the environment variables
// exported so far, the processes started in the background.
type laptop struct {
	t        *testing.T
	root     string            // where the example's copy lives, as the repository root
	rewrite  *strings.Replacer // documented address → this run's
	adminURL string
	env      map[string]string
	bg       []*bgProc
	outputs  []string // the output of each foreground command, in order
}

// bgProc is a process started with "&", its log, and done, closed once it has exited.
type bgProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (l *laptop) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "XKSPROXY_ADMIN" && k != "XKSPROXY_ADMIN_TOKEN" && k != "XKSPROXY_ADMIN_SERVER_NAME" {
			env = append(env, kv)
		}
	}
	for k, v := range l.env {
		env = append(env, k+"="+v)
	}
	return env
}

// command builds the process for a documented command line's words (bin/NAME → the build).
func (l *laptop) command(ctx context.Context, words []string) *exec.Cmd {
	name := commandPath(l.t, strings.TrimPrefix(words[0], "bin/"))
	args := make([]string, len(words)-1)
	for i, w := range words[1:] {
		args[i] = l.rewrite.Replace(w)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = l.root
	cmd.Env = l.environ()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// background starts a documented "… &" line and keeps its output in a log file.
func (l *laptop) background(words []string) {
	l.t.Helper()
	cmd := l.command(context.Background(), words)
	log := filepath.Join(l.root, fmt.Sprintf("bg-%d-%s.log", len(l.bg), filepath.Base(words[0])))
	f, err := os.Create(log)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("%s: %v", strings.Join(words, " "), err)
	}
	f.Close()
	p := &bgProc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	l.bg = append(l.bg, p)
}

// stop ends every background process (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (l *laptop) stop() {
	for _, p := range l.bg {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// waitReady is what the documented "sleep" gives an operator: the processes started so far
// listen. Each background process's documented address is probed until it accepts a connection.
func (l *laptop) waitReady(addrs []string) {
	l.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			for _, p := range l.bg {
				select {
				case <-p.done:
					l.t.Fatalf("%s exited:\n%s", p.cmd.Path, tail(p.log))
				default:
				}
			}
			if time.Now().After(deadline) {
				l.t.Fatalf("nothing listens on %s after a minute", a)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// run runs a foreground documented command and returns its output; a failure fails the test.
func (l *laptop) run(words []string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), laptopStepTime)
	defer cancel()
	if len(words) > 2 && words[0] == "bin/xksproxy" && words[1] == "cutover" {
		// The documented default admin address, at this run's port.
		words = slices.Insert(slices.Clone(words), 3, "--admin", l.adminURL)
	}
	cmd := l.command(ctx, words)
	out, err := cmd.CombinedOutput()
	l.t.Logf("$ %s %s\n%s", words[0], strings.Join(cmd.Args[1:], " "), out)
	if err != nil {
		for _, p := range l.bg {
			l.t.Logf("%s:\n%s", filepath.Base(p.log), tail(p.log))
		}
		l.t.Fatalf("%s: %v", strings.Join(words, " "), err)
	}
	l.outputs = append(l.outputs, string(out))
	return string(out)
}

// status is `xksproxy cutover status --json`, decoded.
func (l *laptop) status() map[string]any {
	l.t.Helper()
	out := l.run([]string{"bin/xksproxy", "cutover", "status", "--json"})
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		l.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func TestLaptopRunbook(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the migration runbook end to end (about a minute)")
	}
	doc, err := os.ReadFile(operatingDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := docBlocks(t, string(doc), laptopHeading)
	if len(blocks) < 2 {
		t.Fatalf("%s, %q: want the runbook's block and the traffic block, found %d", operatingDoc, laptopHeading, len(blocks))
	}
	runbook, traffic := blocks[0], blocks[1]

	// The example, copied as the repository holds it (deploy/examples/…), with this run's ports.
	root := t.TempDir()
	ports := freePorts(t, len(laptopPorts))
	var pairs []string
	for i, p := range laptopPorts {
		pairs = append(pairs, "127.0.0.1:"+p, "127.0.0.1:"+ports[i])
	}
	l := &laptop{t: t, root: root, rewrite: strings.NewReplacer(pairs...), adminURL: "http://127.0.0.1:" + ports[2], env: map[string]string{}}
	t.Cleanup(l.stop)
	for _, f := range []string{laptopConfig, laptopDir + "/ckms-a.toml", laptopDir + "/ckms-b.toml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range laptopPorts {
			if f == laptopConfig && !bytes.Contains(b, []byte("127.0.0.1:"+p)) && p != "9465" {
				t.Fatalf("%s no longer uses the documented port %s", f, p)
			}
		}
		dst := filepath.Join(root, "deploy", filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, []byte(l.rewrite.Replace(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The documented lines, in order.
	var started []string // the documented addresses of the background processes, for "sleep"
	listenRe := regexp.MustCompile(`--listen (127\.0\.0\.1:\d+)`)
	checked := false
	for _, line := range runbook {
		bg := strings.HasSuffix(line, "&")
		words, err := shellWords(strings.TrimSpace(strings.TrimSuffix(line, "&")))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case words[0] == "go" && words[1] == "build":
			want := []string{"./cmd/kmsemu", "./cmd/xksproxy", "./bench/cmd/xksload"}
			if !slices.Equal(words[2:], append([]string{"-o", "bin/"}, want...)) {
				t.Fatalf("the runbook builds %q; this test builds %q: update both together", line, want)
			}
		case words[0] == "chmod":
			for _, f := range words[2:] {
				if err := os.Chmod(filepath.Join(root, f), 0o600); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
			}
		case words[0] == "sleep":
			l.waitReady(l.rewriteAll(started))
		case words[0] == "export":
			k, v, _ := strings.Cut(words[1], "=")
			l.env[k] = v
		case bg && words[0] == "bin/kmsemu":
			m := listenRe.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: no --listen address", line)
			}
			started = append(started, m[1])
			l.background(words)
		case bg && len(words) > 1 && words[0] == "bin/xksproxy" && words[1] == "serve":
			started = append(started, "127.0.0.1:9465") // the admin listener the CLI needs
			l.background(words)
		case !bg && len(words) > 1 && words[0] == "bin/xksproxy" && words[1] == "cutover":
			l.run(words)
		case words[0] == "kill":
			// Before the operator stops everything: where the runbook must have led, and the
			// keys served from B.
			l.checkFinalized(traffic)
			checked = true
			l.stop()
		case words[0] == "rm":
			for _, f := range words[1:] {
				if err := os.Remove(filepath.Join(root, f)); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
			}
		default:
			t.Fatalf("the runbook has a line this test does not know how to run: %q (teach laptop_test.go)", line)
		}
	}
	if !checked {
		t.Fatal("the runbook never stops its processes (kill), so the test never checked where it led")
	}

	// What the documented steps printed, in order.
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^state:\s+serving$`),                            // status
		regexp.MustCompile(`(?m)^\s+copy\s+300$`),                               // plan
		regexp.MustCompile(`migration a → b started`),                           // start
		regexp.MustCompile(`probation passed: finalize with`),                   // status --watch
		regexp.MustCompile(`rolled back: a serves again \(trying the rollback`), // rollback
		regexp.MustCompile(`migration a → b started`),                           // start again
		regexp.MustCompile(`probation passed: finalize with`),                   // status --watch
		regexp.MustCompile(`finalized: b serves alone`),                         // finalize
	}
	if len(l.outputs) < len(want) {
		t.Fatalf("%d commands printed, want at least %d", len(l.outputs), len(want))
	}
	for i, re := range want {
		if !re.MatchString(l.outputs[i]) {
			t.Errorf("step %d printed\n%s\nwant %s", i+1, l.outputs[i], re)
		}
	}
}

func (l *laptop) rewriteAll(addrs []string) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = l.rewrite.Replace(a)
	}
	return out
}

// checkFinalized: the migration is finalized with every key copied and verified, B serves, and
// the documented load (shortened) is served by B.
func (l *laptop) checkFinalized(traffic []string) {
	t := l.t
	t.Helper()
	st := l.status()
	keys, _ := st["keys"].(map[string]any)
	if st["state"] != "finalized" || st["primary"] != "b" || keys["total"] != 300.0 || keys["verified"] != 300.0 || keys["errors"] != 0.0 {
		t.Fatalf("after the runbook: state %v, serving %v, keys %v; want finalized, b, 300 verified", st["state"], st["primary"], keys)
	}
	var load []string
	for _, line := range traffic {
		if strings.HasPrefix(line, "bin/xksload ") {
			w, err := shellWords(line)
			if err != nil {
				t.Fatal(err)
			}
			load = w
		}
	}
	if load == nil {
		t.Fatal("the traffic block has no bin/xksload line")
	}
	// A few seconds of it, as JSON, instead of minutes.
	for i, w := range load {
		if w == "--duration" && i+1 < len(load) {
			load[i+1] = "3s"
		}
	}
	out := l.run(append(load, "--json"))
	var rep struct {
		Total     int `json:"total"`
		Succeeded int `json:"succeeded"`
	}
	start := strings.Index(out, "{")
	if start < 0 {
		t.Fatalf("xksload printed no JSON report:\n%s", out)
	}
	if err := json.NewDecoder(strings.NewReader(out[start:])).Decode(&rep); err != nil || rep.Succeeded == 0 {
		t.Fatalf("xksload: %v; report %+v\n%s", err, rep, out)
	}
	// The metrics listener says who answered.
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + l.rewrite.Replace("127.0.0.1:9464") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	servedByB := 0.0
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "xks_requests_total{") && strings.Contains(line, `backend="b"`) && strings.Contains(line, `error="none"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			servedByB += v
		}
	}
	if servedByB < float64(rep.Succeeded) {
		t.Errorf("xks_requests_total says b answered %v requests successfully; the load had %d succeed", servedByB, rep.Succeeded)
	}
}
