package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

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
