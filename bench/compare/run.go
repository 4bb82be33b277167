package compare

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

// Options configures Run. Zero values take the defaults named on each field.
type Options struct {
	RepoDir  string        // module root; found upwards from the working directory when empty
	Duration time.Duration // each measured run [10s]
	Rate     float64       // the fixed open-loop rate [1800]
	Keys     int           // keys seeded in the emulator and used by the client [100]
	Workers  int           // closed-loop concurrency and connections for rps_max [32]
	Conns    int           // keep-alive connections at the fixed rate [16]
	Region   string        // SigV4 region ["us-east-1"]
	Rounds   int           // every path is measured this many times, interleaved; the medians are reported [1]
	HTTP2    bool          // the client offers HTTP/2 (ALPN h2, http/1.1); nginx and xksproxy accept it, the emulator speaks HTTP/1.1

	PerfDir string // profiling: `perf record -g` the middle process in each phase into this directory

	SkipNginx bool          // debugging only
	SkipDemo  bool          // skip the cutover-under-load scenario
	DemoKeys  int           // [1000]
	DemoRPS   float64       // [1800]
	DemoLimit time.Duration // bound on the demo run [5m]

	Log io.Writer // progress; io.Discard when nil
}

func (o *Options) setDefaults() error {
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rate == 0 {
		o.Rate = 1800
	}
	if o.Keys == 0 {
		o.Keys = 100
	}
	if o.Workers == 0 {
		o.Workers = 32
	}
	if o.Conns == 0 {
		o.Conns = 16
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.DemoKeys == 0 {
		o.DemoKeys = 1000
	}
	if o.DemoRPS == 0 {
		o.DemoRPS = 1800
	}
	if o.DemoLimit == 0 {
		o.DemoLimit = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Duration < 500*time.Millisecond || o.Duration > time.Hour || o.Rate < 1 || o.Rate > 1e5 ||
		o.Keys < 1 || o.Keys > 10000 || o.Workers < 1 || o.Workers > 4096 || o.Conns < 1 || o.Conns > 4096 ||
		o.DemoKeys < 1 || o.DemoRPS <= 0 || o.Rounds < 1 || o.Rounds > 100 {
		return errors.New("compare: options out of range (duration 0.5s..1h, rate 1..1e5, keys 1..10000, workers/conns 1..4096, rounds 1..100)")
	}
	if o.RepoDir == "" {
		dir, err := findModuleRoot()
		if err != nil {
			return err
		}
		o.RepoDir = dir
	}
	return nil
}

func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/xksproxy/xksproxy\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("compare: run from inside the xksproxy module (go.mod not found)")
		}
		dir = parent
	}
}

// Outcome is everything one Run measured.
type Outcome struct {
	Machine  Machine         `json:"machine"`
	Paths    []Result        `json:"paths"`          // per path; with Rounds > 1, the medians of its runs
	Runs     []Result        `json:"runs,omitempty"` // with Rounds > 1: every run, in the order run
	Checks   []Check         `json:"checks"`
	Demo     json.RawMessage `json:"demo,omitempty"`
	DemoNote string          `json:"demo_note,omitempty"`
}

// nobody is the unprivileged identity servers run as when the benchmark runs as root.
const nobody = 65534

type run struct {
	o       Options
	dir     string // temporary directory, removed at the end
	bin     string
	asUser  bool // drop to nobody
	cpuLoad string
	cpuMid  string
	procs   procSet
	proc    ProcFS
	emuCred cred
	prxCred cred
	keys    []string
	variant *Variant // RunAB: the xksproxy build and environment being measured
}

type cred struct{ id, secret string }

func newCred(prefix string) cred {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	id := prefix + strings.ToUpper(hex.EncodeToString(b[:6]))
	return cred{id: id, secret: base64.RawURLEncoding.EncodeToString(b)}
}

// Run measures the three paths (direct, nginx, xksproxy) and then the cutover demo. Every
// process it starts is stopped before it returns, also when ctx is cancelled.
func Run(ctx context.Context, opts Options) (*Outcome, error) {
	r, cleanup, err := newRun(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	o := r.o
	out := &Outcome{Machine: r.machine()}
	paths := []string{PathDirect, PathNginx, PathXKSProxy}
	if o.SkipNginx {
		paths = []string{PathDirect, PathXKSProxy}
	}
	byPath := map[string][]Result{}
	for round := range o.Rounds {
		if o.Rounds > 1 {
			fmt.Fprintf(o.Log, "compare: round %d/%d\n", round+1, o.Rounds)
		}
		// The order rotates each round, so no path always runs first (or right after a build).
		for i := range paths {
			p := paths[(i+round)%len(paths)]
			res, err := r.measure(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if o.Rounds > 1 {
				res.Round = round + 1
				out.Runs = append(out.Runs, res)
			}
			byPath[p] = append(byPath[p], res)
		}
	}
	for _, p := range paths {
		out.Paths = append(out.Paths, MedianResult(byPath[p]))
	}
	out.Checks = Assess(out.Paths)
	if !o.SkipDemo {
		out.Demo, out.DemoNote = r.demo(ctx)
	}
	return out, nil
}

// newRun fills o's defaults, makes the temporary directory and builds the binaries; cleanup
// stops every process the run started and removes the directory.
func newRun(ctx context.Context, o Options) (*run, func(), error) {
	if err := o.setDefaults(); err != nil {
		return nil, nil, err
	}
	r := &run{o: o, emuCred: newCred("AKIABENCHEMU"), prxCred: newCred("AKIABENCHPRX")}
	dir, err := os.MkdirTemp("", "xksproxy-compare-")
	if err != nil {
		return nil, nil, err
	}
	r.dir = dir
	cleanup := func() {
		r.procs.stopAll()
		os.RemoveAll(dir)
	}
	r.asUser = os.Geteuid() == 0
	if r.asUser {
		if err := os.Chmod(dir, 0o755); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	fmt.Fprintf(o.Log, "compare: building binaries in %s\n", dir)
	if err := r.build(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	for i := 0; i < o.Keys; i++ {
		r.keys = append(r.keys, fmt.Sprintf("bench-key-%04d", i))
	}
	return r, cleanup, nil
}

func (r *run) machine() Machine {
	m := Machine{Date: time.Now().UTC().Format(time.RFC3339), NProc: runtime.NumCPU(), GoVersion: runtime.Version(),
		ClientProtocol: "HTTP/1.1 on every path"}
	if r.o.HTTP2 {
		m.ClientProtocol = "HTTP/2 offered (h2, http/1.1): nginx and xksproxy take h2; the emulator (direct) speaks HTTP/1.1; backend legs HTTP/1.1"
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("nginx", "-v").CombinedOutput(); err == nil {
		m.Nginx = strings.TrimSpace(strings.TrimPrefix(string(out), "nginx version: "))
	}
	cpus := allowedCPUs()
	_, tsErr := exec.LookPath("taskset")
	switch {
	case len(cpus) < 2 || tsErr != nil:
		m.Pinning = "none (needs taskset and 2 CPUs): all processes share the CPUs"
	default:
		r.cpuLoad, r.cpuMid = strconv.Itoa(cpus[0]), strconv.Itoa(cpus[1])
		m.Pinning = fmt.Sprintf("middle process (nginx, 1 worker / xksproxy, GOMAXPROCS=1) on CPU %s; load generator and emulator share CPU %s", r.cpuMid, r.cpuLoad)
	}
	return m
}

// allowedCPUs reads Cpus_allowed_list of this process.
func allowedCPUs() []int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			cpus, _ := ParseCPUList(strings.TrimSpace(v))
			return cpus
		}
	}
	return nil
}

// ParseCPUList parses a Linux CPU list such as "0-3,8,10-11".
func ParseCPUList(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%w: cpu list %q", ErrProcFormat, s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 4096 {
				return nil, fmt.Errorf("%w: cpu list %q", ErrProcFormat, s)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
		if len(out) > 4096 {
			return nil, fmt.Errorf("%w: cpu list too long", ErrProcFormat)
		}
	}
	return out, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // exec reports that it is not on PATH
}

func (r *run) build(ctx context.Context) error {
	r.bin = filepath.Join(r.dir, "bin")
	if err := os.Mkdir(r.bin, 0o755); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, goTool(), "build", "-o", r.bin+"/", "./cmd/kmsemu", "./cmd/xksproxy", "./bench/cmd/xksload")
	cmd.Dir = r.o.RepoDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	return nil
}

// measure runs one path: fresh emulator (and middle process), warm-up, the fixed-rate run,
// then the closed-loop run.
func (r *run) measure(ctx context.Context, path string) (Result, error) {
	res := Result{Name: path, Rate: r.o.Rate, Errors: map[string]int64{}}
	fmt.Fprintf(r.o.Log, "compare: %s: starting\n", path)
	emu, emuAddr, err := r.startEmulator(ctx, path)
	if err != nil {
		return res, err
	}
	defer r.procs.stop(emu)
	endpoint, c := "https://"+emuAddr, r.emuCred
	var mid *proc
	switch path {
	case PathNginx:
		var addr string
		if mid, addr, err = r.startNginx(ctx, emuAddr); err != nil {
			return res, err
		}
		endpoint = "https://" + addr
	case PathXKSProxy:
		var addr string
		if mid, addr, err = r.startXKSProxy(ctx, emuAddr); err != nil {
			return res, err
		}
		endpoint, c = "https://"+addr, r.prxCred
	}
	defer func() {
		if mid != nil {
			r.procs.stop(mid)
		}
	}()
	var midPIDs []int
	if mid != nil {
		if midPIDs, err = r.proc.Tree(mid.pid()); err != nil {
			return res, err
		}
	}
	emuPIDs := []int{emu.pid()}

	warm := min(2*time.Second, max(500*time.Millisecond, r.o.Duration/5))
	if _, err := r.load(ctx, endpoint, c, r.o.Rate, warm); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}

	fmt.Fprintf(r.o.Log, "compare: %s: %.0f req/s for %v\n", path, r.o.Rate, r.o.Duration)
	m0, t0 := r.proc.Sample(midPIDs), time.Now()
	stopPerf := r.perf(ctx, mid, path, "rate")
	rep, err := r.load(ctx, endpoint, c, r.o.Rate, r.o.Duration)
	stopPerf()
	if err != nil {
		return res, err
	}
	m1, wall := r.proc.Sample(midPIDs), time.Since(t0)
	res.P50ms, res.P99ms = ms(rep.P50), ms(rep.P99)
	done := completed(rep)
	r.tally(&res, rep)
	if mid != nil {
		us := TicksToMicros(m1.CPUSince(m0))
		res.CPUUsPerReqAtRate = ptr(us / float64(max(done, 1)))
		res.CoresAtRate = ptr(us / 1e6 / wall.Seconds())
		res.RSSMB = ptr(float64(m1.HWMkB) / 1024)
		res.CtxSwPerReqAtRate = ptr(float64(m1.CtxSwitchesSince(m0)) / float64(max(done, 1)))
	}

	fmt.Fprintf(r.o.Log, "compare: %s: closed loop, %d workers, for %v\n", path, r.o.Workers, r.o.Duration)
	m0, e0 := r.proc.Sample(midPIDs), r.proc.Sample(emuPIDs)
	stopPerf = r.perf(ctx, mid, path, "max")
	rep, err = r.load(ctx, endpoint, c, 0, r.o.Duration)
	stopPerf()
	if err != nil {
		return res, err
	}
	m1, e1 := r.proc.Sample(midPIDs), r.proc.Sample(emuPIDs)
	done = completed(rep)
	r.tally(&res, rep)
	res.RPSMax = rep.Throughput
	res.BackendCPUUsPerReq = TicksToMicros(e1.CPUSince(e0)) / float64(max(done, 1))
	if mid != nil {
		res.CPUUsPerReq = ptr(TicksToMicros(m1.CPUSince(m0)) / float64(max(done, 1)))
		res.RSSMBMax = ptr(float64(m1.HWMkB) / 1024)
		res.CtxSwPerReq = ptr(float64(m1.CtxSwitchesSince(m0)) / float64(max(done, 1)))
		for _, p := range append(m1.Problems, m0.Problems...) {
			fmt.Fprintf(r.o.Log, "compare: %s: /proc: %s\n", path, p)
		}
	}
	if len(res.Errors) == 0 {
		res.Errors = nil
	}
	if res.Failed*100 > res.Requests {
		fmt.Fprintf(r.o.Log, "compare: %s: WARNING: %d of %d requests failed: %v\n", path, res.Failed, res.Requests, res.Errors)
	}
	return res, nil
}

// perf starts `perf record -g` on the middle process when Options.PerfDir is set; the returned
// function stops it (SIGINT, so perf writes its file) and waits. Profiled runs are for finding
// where the time goes, not for figures: perf itself costs CPU.
func (r *run) perf(ctx context.Context, mid *proc, path, phase string) func() {
	if r.o.PerfDir == "" || mid == nil {
		return func() {}
	}
	name := path
	if r.variant != nil {
		name = r.variant.Name
	}
	out := filepath.Join(r.o.PerfDir, fmt.Sprintf("%s-%s-%d.data", name, phase, time.Now().Unix()))
	cmd := exec.CommandContext(ctx, "perf", "record", "-F", "1999", "-g", "-o", out, "-p", strconv.Itoa(mid.pid()))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(r.o.Log, "compare: perf: %v\n", err)
		return func() {}
	}
	fmt.Fprintf(r.o.Log, "compare: perf recording into %s\n", out)
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second): // perf writes its file on SIGINT; never wait forever
			_ = cmd.Process.Kill()
			<-done
		}
	}
}

func ptr(f float64) *float64 { return &f }

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func completed(rep *loadgen.Report) int64 {
	return rep.Total - rep.ByError[loadgen.ErrDropped]
}

func (r *run) tally(res *Result, rep *loadgen.Report) {
	res.Requests += completed(rep)
	res.Failed += rep.Failed
	for k, v := range rep.ByError {
		res.Errors[k] += v
	}
	for k, v := range rep.Protocols {
		if res.Protocols == nil {
			res.Protocols = map[string]int64{}
		}
		res.Protocols[k] += v
	}
}

// load runs xksload on the load CPU: open loop at rate, or closed loop when rate is 0.
func (r *run) load(ctx context.Context, endpoint string, c cred, rate float64, d time.Duration) (*loadgen.Report, error) {
	args := []string{"--endpoint", endpoint, "--prefix", "/aws", "--region", r.o.Region,
		"--access-key-id", c.id, "--insecure", "--keys", strings.Join(r.keys, ","),
		"--duration", d.String(), "--json"}
	if rate > 0 {
		// Open loop: up to 512 outstanding, so a stall shows up as latency, not as drops.
		args = append(args, "--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--conns", strconv.Itoa(r.o.Conns), "--workers", "512")
	} else {
		args = append(args, "--conns", strconv.Itoa(r.o.Workers), "--workers", strconv.Itoa(r.o.Workers))
	}
	if r.o.HTTP2 {
		args = append(args, "--http2")
	}
	lctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	p, err := r.procs.start(lctx, procSpec{name: "xksload", cpu: r.cpuLoad, bin: filepath.Join(r.bin, "xksload"), args: args,
		env: []string{"XKS_SECRET_ACCESS_KEY=" + c.secret}, stdout: &stdout, stderr: &limitedBuffer{b: &stderr, n: 16 << 10}})
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-lctx.Done():
		r.procs.stop(p)
		return nil, fmt.Errorf("xksload: %w", lctx.Err())
	}
	r.procs.forget(p)
	if p.err != nil {
		return nil, fmt.Errorf("xksload: %w: %s", p.err, strings.TrimSpace(stderr.String()))
	}
	var rep loadgen.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("xksload output: %w", err)
	}
	return &rep, nil
}

// FreePort reserves a loopback port for a child process: it listens on 127.0.0.1:0 and closes
// again at once (the child binds the port a moment later).
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// waitReady dials addr until it accepts or p exits.
func waitReady(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before listening: %v; log: %s", p.name, p.err, p.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after 30s; log: %s", p.name, addr, p.logTail())
		}
	}
}

func (r *run) startEmulator(ctx context.Context, path string) (*proc, string, error) {
	addr, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	args := []string{"--listen", addr, "--tls-self-signed", "--xks-region", r.o.Region, "--key", "xksproxy-health-check"}
	for _, k := range r.keys {
		args = append(args, "--key", k)
	}
	p, err := r.procs.start(ctx, procSpec{name: "kmsemu-" + path, cpu: r.cpuLoad, bin: filepath.Join(r.bin, "kmsemu"), args: args,
		env:     []string{"KMS_AWS_XKS_SIGV4_ACCESS_KEY_ID=" + r.emuCred.id, "KMS_AWS_XKS_SIGV4_SECRET_ACCESS_KEY=" + r.emuCred.secret},
		logFile: filepath.Join(r.dir, "kmsemu-"+path+".log")})
	if err != nil {
		return nil, "", err
	}
	if err := waitReady(ctx, p, addr); err != nil {
		r.procs.stop(p)
		return nil, "", err
	}
	return p, addr, nil
}

// writeCert writes a fresh self-signed ECDSA P-256 certificate for 127.0.0.1 (the same key type
// xksproxy's self-signed mode uses, so both proxies do the same TLS work).
func writeCert(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}

// NginxConf renders the nginx configuration: one worker, TLS in front (HTTP/2 offered too when
// http2), HTTP/1.1 keep-alive to the emulator, Host passed through so the client's SigV4
// signature (which covers Host; over HTTP/2 nginx takes it from :authority) still verifies at
// the emulator. nginx does no SigV4 work.
func NginxConf(dir, listen, upstream string, http2 bool) string {
	if http2 {
		listen += " ssl http2"
	} else {
		listen += " ssl"
	}
	return fmt.Sprintf(`# generated by bench/compare
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    client_max_body_size 64k;
    client_body_buffer_size 64k;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    upstream emulator {
        server %[3]s;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    server {
        listen %[2]s;
        ssl_certificate %[1]s/cert.pem;
        ssl_certificate_key %[1]s/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass https://emulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_ssl_session_reuse on;
            proxy_ssl_verify off;
        }
    }
}
`, dir, listen, upstream)
}

func (r *run) chownTree(dir string) error {
	if !r.asUser {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	})
}

func (r *run) startNginx(ctx context.Context, emuAddr string) (*proc, string, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, "", fmt.Errorf("nginx not installed (bench/compare.sh installs it; or use --skip-nginx): %w", err)
	}
	dir := filepath.Join(r.dir, "nginx")
	for _, d := range []string{dir, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, "", err
		}
	}
	if err := writeCert(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")); err != nil {
		return nil, "", err
	}
	addr, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(NginxConf(dir, addr, emuAddr, r.o.HTTP2)), 0o644); err != nil {
		return nil, "", err
	}
	if err := r.chownTree(dir); err != nil {
		return nil, "", err
	}
	p, err := r.procs.start(ctx, procSpec{name: "nginx", cpu: r.cpuMid, bin: bin,
		args:    []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"},
		logFile: filepath.Join(r.dir, "nginx.log")})
	if err != nil {
		return nil, "", err
	}
	if err := waitReady(ctx, p, addr); err != nil {
		r.procs.stop(p)
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, "", fmt.Errorf("%w; error.log: %s", err, tail(b, 2048))
	}
	// Let the master start its worker before the process tree is read.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if pids, _ := r.proc.Tree(p.pid()); len(pids) >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, addr, nil
}

// XKSProxyConf renders the xksproxy configuration. Secrets come from the environment, never
// the file. Logging is at warn: a line per request at info would be measured too.
func XKSProxyConf(dir, listen, emuAddr, region, proxyKeyID, emuKeyID string) string {
	return fmt.Sprintf(`# generated by bench/compare
[server]
listen = %[2]q
metrics_listen = "off"

[tls]
mode = "self-signed"
hosts = ["127.0.0.1", "localhost"]

[[prefix]]
path = "/aws"
region = %[4]q

[[prefix.credential]]
access_key_id = %[5]q
secret_access_key_env = "BENCH_PROXY_SECRET"

[[backend]]
name = "a"
xks_url = "https://%[3]s/aws"
region = %[4]q
access_key_id = %[6]q
secret_access_key_env = "BENCH_BACKEND_SECRET"
ckms_config = "%[1]s/ckms.toml"

# The configuration requires a cutover target; "b" is the same emulator and gets no traffic
# but its health checks (every 15 s).
[[backend]]
name = "b"
xks_url = "https://%[3]s/aws"
region = %[4]q
access_key_id = %[6]q
secret_access_key_env = "BENCH_BACKEND_SECRET"
ckms_config = "%[1]s/ckms.toml"

[route]
primary = "a"

[health]
test_key_id = "xksproxy-health-check"

[cutover]
journal_path = "%[1]s/cutover.json"

[log]
level = "warn"
`, dir, listen, emuAddr, region, proxyKeyID, emuKeyID)
}

func (r *run) startXKSProxy(ctx context.Context, emuAddr string) (*proc, string, error) {
	dir := filepath.Join(r.dir, "xksproxy")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	addr, err := FreePort()
	if err != nil {
		return nil, "", err
	}
	ckms := fmt.Sprintf("[http_config]\nserver_url = \"https://%s\"\naccept_invalid_certs = true\n", emuAddr)
	if err := os.WriteFile(filepath.Join(dir, "ckms.toml"), []byte(ckms), 0o600); err != nil {
		return nil, "", err
	}
	conf := XKSProxyConf(dir, addr, emuAddr, r.o.Region, r.prxCred.id, r.emuCred.id)
	if err := os.WriteFile(filepath.Join(dir, "xksproxy.toml"), []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	if err := r.chownTree(dir); err != nil {
		return nil, "", err
	}
	bin, env := filepath.Join(r.bin, "xksproxy"), []string{"GOMAXPROCS=1", "BENCH_PROXY_SECRET=" + r.prxCred.secret, "BENCH_BACKEND_SECRET=" + r.emuCred.secret}
	if v := r.variant; v != nil {
		if v.Bin != "" {
			bin = v.Bin
		}
		env = append(env, v.Env...)
	}
	p, err := r.procs.start(ctx, procSpec{name: "xksproxy", cpu: r.cpuMid, bin: bin,
		args:    []string{"serve", "--config", filepath.Join(dir, "xksproxy.toml")},
		env:     env,
		logFile: filepath.Join(r.dir, "xksproxy.log")})
	if err != nil {
		return nil, "", err
	}
	if err := waitReady(ctx, p, addr); err != nil {
		r.procs.stop(p)
		return nil, "", err
	}
	return p, addr, nil
}

// demo runs the cutover-under-load scenario and returns its JSON report (also when the demo
// reports a failed migration: the report says why) and a note on how it ended.
func (r *run) demo(ctx context.Context) (json.RawMessage, string) {
	fmt.Fprintf(r.o.Log, "compare: cutover demo: %d keys at %.0f req/s\n", r.o.DemoKeys, r.o.DemoRPS)
	dctx, cancel := context.WithTimeout(ctx, r.o.DemoLimit)
	defer cancel()
	var stdout bytes.Buffer
	args := []string{"demo", "--keys", strconv.Itoa(r.o.DemoKeys), "--rps", strconv.FormatFloat(r.o.DemoRPS, 'f', -1, 64), "--json"}
	p, err := r.procs.start(dctx, procSpec{name: "xksproxy-demo", bin: filepath.Join(r.bin, "xksproxy"), args: args,
		stdout: &limitedBuffer{b: &stdout, n: 4 << 20}, logFile: filepath.Join(r.dir, "demo.log")})
	if err != nil {
		return nil, "demo did not start: " + err.Error()
	}
	select {
	case <-p.done:
	case <-dctx.Done():
		r.procs.stop(p)
		return nil, fmt.Sprintf("demo did not finish within %v; log: %s", r.o.DemoLimit, p.logTail())
	}
	r.procs.forget(p)
	note := "xksproxy " + strings.Join(args, " ") + ": exit 0"
	if p.err != nil {
		note = fmt.Sprintf("xksproxy %s: %v (the report below says why)", strings.Join(args, " "), p.err)
	}
	raw := bytes.TrimSpace(stdout.Bytes())
	if !json.Valid(raw) {
		return nil, note + "; no JSON report; log: " + p.logTail()
	}
	return json.RawMessage(raw), note
}

// ---- processes ----

type procSpec struct {
	name    string
	cpu     string // "" → not pinned
	bin     string
	args    []string
	env     []string
	stdout  io.Writer
	stderr  io.Writer
	logFile string // stdout and stderr, unless given
}

type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	logPath string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) logTail() string {
	if p.logPath == "" {
		return ""
	}
	b, _ := os.ReadFile(p.logPath)
	return tail(b, 2048)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

type procSet struct {
	mu   sync.Mutex
	live []*proc
}

func (s *procSet) start(ctx context.Context, sp procSpec) (*proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	argv := append([]string{sp.bin}, sp.args...)
	if sp.cpu != "" {
		argv = append([]string{"taskset", "-c", sp.cpu}, argv...)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: append(baseEnv(), sp.env...)}
	// Own process group (nginx's worker is stopped with its master); killed if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nobody, Gid: nobody}
	}
	var logF *os.File
	if sp.logFile != "" {
		if logF, err = os.Create(sp.logFile); err != nil {
			return nil, err
		}
	}
	cmd.Stdout, cmd.Stderr = sp.stdout, sp.stderr
	if cmd.Stdout == nil && logF != nil {
		cmd.Stdout = logF
	}
	if cmd.Stderr == nil && logF != nil {
		cmd.Stderr = logF
	}
	if err := cmd.Start(); err != nil {
		if logF != nil {
			logF.Close()
		}
		return nil, fmt.Errorf("start %s: %w", sp.name, err)
	}
	p := &proc{name: sp.name, cmd: cmd, done: make(chan struct{}), logPath: sp.logFile}
	go func() {
		p.err = cmd.Wait()
		if logF != nil {
			logF.Close()
		}
		close(p.done)
	}()
	s.mu.Lock()
	s.live = append(s.live, p)
	s.mu.Unlock()
	return p, nil
}

// baseEnv is the environment of started processes: PATH and HOME only, so nothing of the
// caller's environment (credentials included) leaks into them.
func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if os.Geteuid() == 0 {
		return append(env, "HOME=/nonexistent")
	}
	return append(env, "HOME="+os.Getenv("HOME"))
}

func (s *procSet) forget(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.live {
		if q == p {
			s.live = append(s.live[:i], s.live[i+1:]...)
			return
		}
	}
}

// stop ends p's process group: SIGTERM, then SIGKILL after 5 s.
func (s *procSet) stop(p *proc) {
	s.forget(p)
	pgid := p.pid()
	select {
	case <-p.done:
		return // reaped: its group id may no longer be ours to signal
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (s *procSet) stopAll() {
	for {
		s.mu.Lock()
		if len(s.live) == 0 {
			s.mu.Unlock()
			return
		}
		p := s.live[len(s.live)-1]
		s.mu.Unlock()
		s.stop(p)
	}
}

// limitedBuffer keeps the first n bytes written and discards the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
