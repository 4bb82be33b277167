package compare

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

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

// newCred makes a credential the XKS specification accepts: 32 random bytes make a 43-character
// secret (the specification wants 43 to 64 characters, and xksproxy refuses a prefix credential
// outside that range).
func newCred(prefix string) cred {
	b := make([]byte, 32)
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
