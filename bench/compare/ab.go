package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
)

// Variant is one xksproxy build or environment in an A/B run.
type Variant struct {
	Name string   // label in the output
	Bin  string   // xksproxy binary; "" → the one built from RepoDir
	Env  []string // KEY=VALUE added to the proxy's environment (after GOMAXPROCS=1, so they win)
}

// ParseVariant reads NAME[@BIN][:KEY=VALUE[,KEY=VALUE...]], the --variant flag's syntax.
func ParseVariant(s string) (Variant, error) {
	var v Variant
	spec, env, hasEnv := strings.Cut(s, ":")
	v.Name, v.Bin, _ = strings.Cut(spec, "@")
	if v.Name == "" || strings.ContainsAny(v.Name, " \t,=") {
		return v, fmt.Errorf("variant %q: want NAME[@BIN][:KEY=VALUE,...] with a non-empty NAME", s)
	}
	if hasEnv {
		for kv := range strings.SplitSeq(env, ",") {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return v, fmt.Errorf("variant %q: environment entry %q is not KEY=VALUE", s, kv)
			}
			v.Env = append(v.Env, kv)
		}
	}
	return v, nil
}

// ABRun is one measurement of one variant.
type ABRun struct {
	Round   int    `json:"round"`
	Variant string `json:"variant"`
	Result  Result `json:"result"`
}

// ABOutcome is everything one RunAB measured, runs in the order they ran.
type ABOutcome struct {
	Machine Machine `json:"machine"`
	Runs    []ABRun `json:"runs"`
}

// RunAB measures the xksproxy path for each variant, rounds times, interleaved (the order of
// the variants rotates every round so no variant always runs first after a build or a quiet
// spell). Each run gets a fresh emulator and proxy. It exists because single compare runs on a
// shared machine drift by 10–20 %: a change is only kept when it wins across interleaved rounds.
func RunAB(ctx context.Context, o Options, variants []Variant, rounds int) (*ABOutcome, error) {
	if len(variants) < 1 || rounds < 1 || rounds > 100 {
		return nil, errors.New("compare: A/B needs at least one variant and 1..100 rounds")
	}
	seen := map[string]bool{}
	for _, v := range variants {
		if seen[v.Name] {
			return nil, fmt.Errorf("compare: variant name %q used twice", v.Name)
		}
		seen[v.Name] = true
		if v.Bin != "" {
			if _, err := os.Stat(v.Bin); err != nil {
				return nil, fmt.Errorf("compare: variant %s: %w", v.Name, err)
			}
		}
	}
	r, cleanup, err := newRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	o = r.o
	out := &ABOutcome{Machine: r.machine()}
	for round := range rounds {
		for i := range variants {
			v := variants[(i+round)%len(variants)]
			r.variant = &v
			fmt.Fprintf(o.Log, "compare: round %d/%d, variant %s\n", round+1, rounds, v.Name)
			res, err := r.measure(ctx, PathXKSProxy)
			if err != nil {
				return nil, fmt.Errorf("round %d, variant %s: %w", round+1, v.Name, err)
			}
			res.Name = v.Name
			out.Runs = append(out.Runs, ABRun{Round: round + 1, Variant: v.Name, Result: res})
		}
	}
	return out, nil
}

// WriteAB writes every run, then each variant's medians and its ratio to the first variant's.
func WriteAB(w io.Writer, out *ABOutcome, variants []Variant) error {
	var rs []Result
	for _, run := range out.Runs {
		x := run.Result
		x.Name = fmt.Sprintf("%d %s", run.Round, run.Variant)
		rs = append(rs, x)
	}
	if err := WriteTable(w, rs); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nMedians over rounds (ratio to %s):\n", variants[0].Name)
	type col struct {
		name string
		get  func(Result) float64
	}
	cols := []col{
		{"cpu_us/req (max)", func(r Result) float64 { return deref(r.CPUUsPerReq) }},
		{"cpu_us/req (@rate)", func(r Result) float64 { return deref(r.CPUUsPerReqAtRate) }},
		{"rps_max", func(r Result) float64 { return r.RPSMax }},
		{"p99_ms (@rate)", func(r Result) float64 { return r.P99ms }},
		{"rss_mb (max)", func(r Result) float64 { return deref(r.RSSMBMax) }},
	}
	base := make([]float64, len(cols))
	for vi, v := range variants {
		fmt.Fprintf(w, "  %-12s", v.Name)
		for ci, c := range cols {
			var xs []float64
			for _, run := range out.Runs {
				if run.Variant == v.Name {
					xs = append(xs, c.get(run.Result))
				}
			}
			m := median(xs)
			if vi == 0 {
				base[ci] = m
			}
			ratio := ""
			if vi > 0 && base[ci] != 0 {
				ratio = fmt.Sprintf(" (%+.1f%%)", (m/base[ci]-1)*100)
			}
			fmt.Fprintf(w, "  %s %.1f%s", c.name, m, ratio)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteBenchfmt writes every run in Go's benchmark format, one line per run, named
// BenchmarkXKSProxyPath/variant=NAME, so `benchstat -col /variant FILE` tests the differences
// between variants for significance, as for `go test -bench` results.
func WriteBenchfmt(w io.Writer, out *ABOutcome) error {
	var b strings.Builder
	fmt.Fprintf(&b, "goos: linux\ngoarch: %s\ncpu: %s\npkg: github.com/xksproxy/xksproxy/bench/compare\n", runtime.GOARCH, out.Machine.CPUModel)
	for _, run := range out.Runs {
		r := run.Result
		fmt.Fprintf(&b, "BenchmarkXKSProxyPath/variant=%s 1 %.2f cpu-µs/req %.2f cpu-µs/req@rate %.0f req/s %.3f p99-ms@rate %.3f ctxsw/req %.1f rss-MB\n",
			run.Variant, deref(r.CPUUsPerReq), deref(r.CPUUsPerReqAtRate), r.RPSMax, r.P99ms, deref(r.CtxSwPerReq), deref(r.RSSMBMax))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
