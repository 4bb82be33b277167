package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/bench/compare"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
)

// replica is one `xksproxy serve --config` child process. Separate processes make RSS and
// file descriptors per replica, a kill -9 a real crash, SIGHUP the real reload path, and keep
// the soak's own load generator and emulators out of the figures.
type replica struct {
	name  string
	bin   string
	files replicaFiles
	admin *adminapi.Client
	log   *os.File

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	restarts int
	starts   []time.Time // when each process was started (samples restart with it)
}

func (r *replica) endpoint() string { return "https://" + r.files.listen }

// start launches the process and waits until it listens (at most a minute).
func (r *replica) start(ctx context.Context) error {
	cmd := exec.Command(r.bin, "serve", "--config", r.files.config)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.starts = append(r.starts, time.Now())
	r.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, addr := range []string{r.files.listen, r.files.metrics, r.files.adminListen} {
		if err := waitListening(wctx, addr, exited); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", r.name, err, r.log.Name())
		}
	}
	return nil
}

func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

func (r *replica) signal(sig os.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return errors.New(r.name + ": not running")
	}
	return r.cmd.Process.Signal(sig)
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *replica) kill() error {
	if err := r.signal(syscall.SIGKILL); err != nil {
		return err
	}
	r.mu.Lock()
	ex := r.exited
	r.mu.Unlock()
	<-ex
	return nil
}

// stop asks the process to end (SIGTERM: in-flight requests finish, the journal is flushed)
// and kills it after 15 s.
func (r *replica) stop() {
	if r.signal(syscall.SIGTERM) != nil {
		return
	}
	r.mu.Lock()
	ex := r.exited
	r.mu.Unlock()
	select {
	case <-ex:
	case <-time.After(15 * time.Second):
		_ = r.kill()
	}
}

// Sample is one reading of a replica.
type Sample struct {
	At         time.Time `json:"at"`
	RSSMB      float64   `json:"rss_mb"`
	Goroutines int       `json:"goroutines"`
	FDs        int       `json:"fds"`
	P99ms      float64   `json:"p99_ms"`
	Requests   int64     `json:"requests"` // started since the previous sample, on this replica
	Start      int       `json:"process"`  // which process of the replica (0 first, +1 per restart)
}

// sample reads RSS from /proc and goroutines and open fds from the replica's own metrics
// (go_goroutines, process_open_fds: the runtime and process collectors).
func (r *replica) sample(ctx context.Context, hc *http.Client) (Sample, error) {
	pid := r.pid()
	st, err := compare.ProcFS{}.Status(pid)
	if err != nil {
		return Sample{}, fmt.Errorf("%s: %w", r.name, err)
	}
	s := Sample{At: time.Now(), RSSMB: float64(st.VmRSS) / 1024}
	r.mu.Lock()
	s.Start = len(r.starts) - 1
	r.mu.Unlock()
	vals, err := scrape(ctx, hc, "http://"+r.files.metrics+"/metrics", "go_goroutines", "process_open_fds")
	if err != nil {
		return s, fmt.Errorf("%s: %w", r.name, err)
	}
	s.Goroutines, s.FDs = int(vals["go_goroutines"]), int(vals["process_open_fds"])
	return s, nil
}

// scrape reads the named unlabelled gauges from a Prometheus text exposition.
func scrape(ctx context.Context, hc *http.Client, url string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, n := range names {
			if name == n {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					out[n] = f
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("metrics: %s missing", n)
		}
	}
	return out, nil
}
