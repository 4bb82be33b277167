package compare

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Path names, in the order they are measured and printed.
const (
	PathDirect   = "direct"
	PathNginx    = "nginx"
	PathXKSProxy = "xksproxy"
)

// Result is one path's figures. The first six fields are the documented JSON contract
// ({name, rps_max, cpu_us_per_req, p50_ms, p99_ms, rss_mb}); the rest are extra context.
// Middle-process fields are null for the direct path, which has no middle process.
type Result struct {
	Name        string   `json:"name"`
	RPSMax      float64  `json:"rps_max"`        // closed-loop completed requests/s
	CPUUsPerReq *float64 `json:"cpu_us_per_req"` // middle process, during the rps_max run
	P50ms       float64  `json:"p50_ms"`         // at the fixed rate
	P99ms       float64  `json:"p99_ms"`         // at the fixed rate
	RSSMB       *float64 `json:"rss_mb"`         // middle process VmHWM after the fixed-rate run

	Rate               float64          `json:"rate"`                         // the fixed rate, requests/s
	CPUUsPerReqAtRate  *float64         `json:"cpu_us_per_req_at_rate"`       // middle process, at the fixed rate
	CoresAtRate        *float64         `json:"cores_at_rate"`                // middle process CPU / wall time at the fixed rate
	RSSMBMax           *float64         `json:"rss_mb_max"`                   // VmHWM after the rps_max run too
	BackendCPUUsPerReq float64          `json:"backend_cpu_us_per_req"`       // the emulator, during the rps_max run
	CtxSwPerReq        *float64         `json:"ctx_switches_per_req"`         // middle process threads, during the rps_max run
	CtxSwPerReqAtRate  *float64         `json:"ctx_switches_per_req_at_rate"` // middle process threads, at the fixed rate
	Requests           int64            `json:"requests"`                     // completed in both measured runs
	Failed             int64            `json:"failed"`                       // failed in both measured runs
	Errors             map[string]int64 `json:"errors,omitempty"`
	Protocols          map[string]int64 `json:"protocols,omitempty"` // replies by the protocol the client actually spoke
	Round              int              `json:"round,omitempty"`     // which round, in Outcome.Runs
	Rounds             int              `json:"rounds,omitempty"`    // how many runs a median result summarises
}

// MedianResult summarises runs of one path: the median of each figure (peak RSS: the maximum,
// it is a peak), requests, failures and errors summed. One run is returned as it is.
func MedianResult(rs []Result) Result {
	if len(rs) == 1 {
		return rs[0]
	}
	out := Result{Name: rs[0].Name, Rate: rs[0].Rate, Rounds: len(rs)}
	med := func(get func(Result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = get(r)
		}
		return median(xs)
	}
	medp := func(get func(Result) *float64) *float64 {
		var xs []float64
		for _, r := range rs {
			if p := get(r); p != nil {
				xs = append(xs, *p)
			}
		}
		if len(xs) == 0 {
			return nil
		}
		return ptr(median(xs))
	}
	maxp := func(get func(Result) *float64) *float64 {
		var m *float64
		for _, r := range rs {
			if p := get(r); p != nil && (m == nil || *p > *m) {
				m = ptr(*p)
			}
		}
		return m
	}
	out.RPSMax = med(func(r Result) float64 { return r.RPSMax })
	out.P50ms = med(func(r Result) float64 { return r.P50ms })
	out.P99ms = med(func(r Result) float64 { return r.P99ms })
	out.BackendCPUUsPerReq = med(func(r Result) float64 { return r.BackendCPUUsPerReq })
	out.CPUUsPerReq = medp(func(r Result) *float64 { return r.CPUUsPerReq })
	out.CPUUsPerReqAtRate = medp(func(r Result) *float64 { return r.CPUUsPerReqAtRate })
	out.CoresAtRate = medp(func(r Result) *float64 { return r.CoresAtRate })
	out.CtxSwPerReq = medp(func(r Result) *float64 { return r.CtxSwPerReq })
	out.CtxSwPerReqAtRate = medp(func(r Result) *float64 { return r.CtxSwPerReqAtRate })
	out.RSSMB = maxp(func(r Result) *float64 { return r.RSSMB })
	out.RSSMBMax = maxp(func(r Result) *float64 { return r.RSSMBMax })
	for _, r := range rs {
		out.Requests += r.Requests
		out.Failed += r.Failed
		for k, v := range r.Errors {
			if out.Errors == nil {
				out.Errors = map[string]int64{}
			}
			out.Errors[k] += v
		}
		for k, v := range r.Protocols {
			if out.Protocols == nil {
				out.Protocols = map[string]int64{}
			}
			out.Protocols[k] += v
		}
	}
	return out
}

// Machine describes where the figures came from.
type Machine struct {
	Date      string `json:"date"`
	NProc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	Nginx     string `json:"nginx,omitempty"`
	Pinning   string `json:"pinning"`
	// ClientProtocol says what the load generator spoke to each path.
	ClientProtocol string `json:"client_protocol"`
}

// WriteJSON writes results as an indented JSON array.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rs)
}

func fmtOpt(p *float64, prec int) string {
	if p == nil || math.IsNaN(*p) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, *p)
}

// WriteTable writes results as a fixed-width text table (also valid Markdown).
func WriteTable(w io.Writer, rs []Result) error {
	rate := 0.0
	if len(rs) > 0 {
		rate = rs[0].Rate
	}
	head := []string{"path", "rps_max", "cpu_us/req (max)", fmt.Sprintf("cpu_us/req (@%.0f)", rate),
		fmt.Sprintf("cores (@%.0f)", rate), fmt.Sprintf("p50_ms (@%.0f)", rate), fmt.Sprintf("p99_ms (@%.0f)", rate),
		"rss_mb (@rate)", "rss_mb (max)", "ctxsw/req (max)", fmt.Sprintf("ctxsw/req (@%.0f)", rate), "emu cpu_us/req", "failed"}
	rows := [][]string{head}
	for _, r := range rs {
		name := r.Name
		if r.Round > 0 {
			name = fmt.Sprintf("%d %s", r.Round, r.Name)
		}
		rows = append(rows, []string{name, fmt.Sprintf("%.0f", r.RPSMax), fmtOpt(r.CPUUsPerReq, 1),
			fmtOpt(r.CPUUsPerReqAtRate, 1), fmtOpt(r.CoresAtRate, 3), fmt.Sprintf("%.3f", r.P50ms),
			fmt.Sprintf("%.3f", r.P99ms), fmtOpt(r.RSSMB, 1), fmtOpt(r.RSSMBMax, 1), fmtOpt(r.CtxSwPerReq, 2), fmtOpt(r.CtxSwPerReqAtRate, 2),
			fmt.Sprintf("%.1f", r.BackendCPUUsPerReq), fmt.Sprintf("%d/%d", r.Failed, r.Requests)})
	}
	width := make([]int, len(head))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	line := func(row []string) {
		b.WriteString("|")
		for i, c := range row {
			if i == 0 {
				fmt.Fprintf(&b, " %-*s |", width[i], c)
			} else {
				fmt.Fprintf(&b, " %*s |", width[i], c)
			}
		}
		b.WriteString("\n")
	}
	line(rows[0])
	b.WriteString("|")
	for i, wd := range width {
		if i == 0 {
			b.WriteString(strings.Repeat("-", wd+2) + "|")
		} else {
			b.WriteString(strings.Repeat("-", wd+1) + ":|")
		}
	}
	b.WriteString("\n")
	for _, row := range rows[1:] {
		line(row)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Check is one of the performance targets (bench/README.md), evaluated on measured figures. Targets are reported,
// never asserted: OK is nil when a figure it needs is missing.
type Check struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	OK       *bool  `json:"ok"`
	Margin   string `json:"margin,omitempty"`
}

func find(rs []Result, name string) *Result {
	for i := range rs {
		if rs[i].Name == name {
			return &rs[i]
		}
	}
	return nil
}

func okp(b bool) *bool { return &b }

// Assess evaluates the performance targets for xksproxy against the other paths.
func Assess(rs []Result) []Check {
	x, n, d := find(rs, PathXKSProxy), find(rs, PathNginx), find(rs, PathDirect)
	var out []Check
	if x == nil {
		return out
	}
	c := Check{Target: "CPU/request ≤ 1.5× nginx's (aim ≤ 1×), at max throughput"}
	if x.CPUUsPerReq != nil && n != nil && n.CPUUsPerReq != nil && *n.CPUUsPerReq > 0 {
		ratio := *x.CPUUsPerReq / *n.CPUUsPerReq
		c.Measured = fmt.Sprintf("%.1f µs vs %.1f µs = %.2f×", *x.CPUUsPerReq, *n.CPUUsPerReq, ratio)
		c.OK = okp(ratio <= 1.5)
		c.Margin = fmt.Sprintf("%+.0f%% vs the 1.5× bound", (ratio/1.5-1)*100)
	} else {
		c.Measured = "n/a (nginx not measured)"
	}
	out = append(out, c)
	c = Check{Target: "CPU/request ≤ 1.5× nginx's, at the fixed rate"}
	if x.CPUUsPerReqAtRate != nil && n != nil && n.CPUUsPerReqAtRate != nil && *n.CPUUsPerReqAtRate > 0 {
		ratio := *x.CPUUsPerReqAtRate / *n.CPUUsPerReqAtRate
		c.Measured = fmt.Sprintf("%.1f µs vs %.1f µs = %.2f×", *x.CPUUsPerReqAtRate, *n.CPUUsPerReqAtRate, ratio)
		c.OK = okp(ratio <= 1.5)
		c.Margin = fmt.Sprintf("%+.0f%% vs the 1.5× bound", (ratio/1.5-1)*100)
	} else {
		c.Measured = "n/a (nginx not measured)"
	}
	out = append(out, c)
	c = Check{Target: "max throughput with one proxy core ≥ 10 000 req/s"}
	if x.CPUUsPerReq != nil && *x.CPUUsPerReq > 0 {
		// The client and the backend share the other core and may saturate first; then the
		// one-core ceiling 1e6/cpu_us is the estimate, and it says so.
		ceiling := 1e6 / *x.CPUUsPerReq
		c.Measured = fmt.Sprintf("measured %.0f req/s using %.2f proxy core; one-core ceiling 1e6/cpu_us = %.0f req/s",
			x.RPSMax, x.RPSMax**x.CPUUsPerReq/1e6, ceiling)
		if x.RPSMax >= 10000 {
			c.OK = okp(true)
			c.Margin = fmt.Sprintf("%+.0f%% measured", (x.RPSMax/10000-1)*100)
		} else {
			c.OK = okp(ceiling >= 10000)
			c.Margin = fmt.Sprintf("%+.0f%% estimated from the ceiling", (ceiling/10000-1)*100)
		}
	} else {
		c.Measured = fmt.Sprintf("measured %.0f req/s", x.RPSMax)
	}
	out = append(out, c)
	c = Check{Target: fmt.Sprintf("p99 added over direct ≤ 1 ms at %.0f req/s", x.Rate)}
	if d != nil {
		added := x.P99ms - d.P99ms
		c.Measured = fmt.Sprintf("%.3f ms − %.3f ms = %+.3f ms (p50 %+.3f ms)", x.P99ms, d.P99ms, added, x.P50ms-d.P50ms)
		c.OK = okp(added <= 1)
		c.Margin = fmt.Sprintf("%+.3f ms vs the bound", added-1)
	} else {
		c.Measured = "n/a (direct not measured)"
	}
	out = append(out, c)
	c = Check{Target: fmt.Sprintf("peak RSS ≤ 64 MB at %.0f req/s", x.Rate)}
	if x.RSSMB != nil {
		c.Measured = fmt.Sprintf("%.1f MB", *x.RSSMB)
		c.OK = okp(*x.RSSMB <= 64)
		c.Margin = fmt.Sprintf("%+.1f MB vs the bound", *x.RSSMB-64)
	}
	out = append(out, c)
	return out
}

// WriteProtocols writes one line per path naming the protocols its replies came over.
func WriteProtocols(w io.Writer, rs []Result) error {
	var b strings.Builder
	b.WriteString("protocols spoken by the client:")
	for i, r := range rs {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s", r.Name)
		keys := make([]string, 0, len(r.Protocols))
		for k := range r.Protocols {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if len(keys) == 0 {
			b.WriteString(" n/a")
		}
		for _, k := range keys {
			fmt.Fprintf(&b, " %s×%d", k, r.Protocols[k])
		}
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteChecks writes the target checks as lines.
func WriteChecks(w io.Writer, cs []Check) error {
	var b strings.Builder
	for _, c := range cs {
		verdict := "n/a "
		if c.OK != nil {
			verdict = map[bool]string{true: "MET ", false: "MISS"}[*c.OK]
		}
		fmt.Fprintf(&b, "[%s] %s: %s", verdict, c.Target, c.Measured)
		if c.Margin != "" {
			fmt.Fprintf(&b, " (%s)", c.Margin)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMachine writes the machine description as lines.
func WriteMachine(w io.Writer, m Machine) error {
	_, err := fmt.Fprintf(w, "date %s; nproc %d; CPU %s; %s; kernel %s; %s\npinning: %s\nclient: %s\n",
		m.Date, m.NProc, m.CPUModel, m.GoVersion, m.Kernel, m.Nginx, m.Pinning, m.ClientProtocol)
	return err
}
