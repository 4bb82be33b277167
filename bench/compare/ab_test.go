package compare

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseVariant(t *testing.T) {
	tests := []struct {
		in      string
		want    Variant
		wantErr bool
	}{
		{in: "base", want: Variant{Name: "base"}},
		{in: "gc:GOGC=400", want: Variant{Name: "gc", Env: []string{"GOGC=400"}}},
		{in: "new@/tmp/xksproxy", want: Variant{Name: "new", Bin: "/tmp/xksproxy"}},
		{in: "both@/tmp/x:GOGC=200,GOMEMLIMIT=64MiB", want: Variant{Name: "both", Bin: "/tmp/x", Env: []string{"GOGC=200", "GOMEMLIMIT=64MiB"}}},
		{in: "", wantErr: true},
		{in: "@/tmp/x", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "gc:GOGC", wantErr: true},
		{in: "gc:=1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseVariant(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (got.Name != tt.want.Name || got.Bin != tt.want.Bin || !slices.Equal(got.Env, tt.want.Env)) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWriteABMedians(t *testing.T) {
	vs := []Variant{{Name: "base"}, {Name: "new"}}
	out := &ABOutcome{}
	for i, cpu := range []float64{50, 40, 54, 45, 52, 44} {
		name := vs[i%2].Name
		out.Runs = append(out.Runs, ABRun{Round: i/2 + 1, Variant: name, Result: Result{Name: name, CPUUsPerReq: ptr(cpu), RPSMax: 1000}})
	}
	var b bytes.Buffer
	if err := WriteAB(&b, out, vs); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	// base: median of 50, 54, 52 = 52; new: median of 40, 45, 44 = 44, -15.4 %.
	for _, want := range []string{"  base          cpu_us/req (max) 52.0  ", "  new           cpu_us/req (max) 44.0 (-15.4%)", "rps_max 1000.0 (+0.0%)", "| 3 new  |"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1}, 2}, {[]float64{5, 1, 3}, 3}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMedianResult(t *testing.T) {
	one := Result{Name: PathNginx, RPSMax: 1}
	if got := MedianResult([]Result{one}); got.Name != one.Name || got.RPSMax != 1 || got.Rounds != 0 {
		t.Fatalf("one run: got %+v, want it unchanged", got)
	}
	rs := []Result{
		{Name: PathXKSProxy, Rate: 1800, RPSMax: 15000, CPUUsPerReq: ptr(60), CPUUsPerReqAtRate: ptr(110), RSSMB: ptr(20), RSSMBMax: ptr(24), P99ms: 2.0, Requests: 10, Failed: 1, Errors: map[string]int64{"KeyNotFoundException": 1}},
		{Name: PathXKSProxy, Rate: 1800, RPSMax: 16000, CPUUsPerReq: ptr(50), CPUUsPerReqAtRate: ptr(100), RSSMB: ptr(22), RSSMBMax: ptr(23), P99ms: 1.0, Requests: 20},
		{Name: PathXKSProxy, Rate: 1800, RPSMax: 14000, CPUUsPerReq: ptr(55), CPUUsPerReqAtRate: ptr(130), RSSMB: ptr(21), RSSMBMax: ptr(25), P99ms: 3.0, Requests: 30, Failed: 2, Errors: map[string]int64{"KeyNotFoundException": 2}},
	}
	got := MedianResult(rs)
	checks := []struct {
		name      string
		got, want float64
	}{
		{"rps_max", got.RPSMax, 15000},
		{"cpu_us_per_req", deref(got.CPUUsPerReq), 55},
		{"cpu_us_per_req_at_rate", deref(got.CPUUsPerReqAtRate), 110},
		{"p99", got.P99ms, 2.0},
		{"rss_mb is the peak", deref(got.RSSMB), 22},
		{"rss_mb_max is the peak", deref(got.RSSMBMax), 25},
		{"requests summed", float64(got.Requests), 60},
		{"failed summed", float64(got.Failed), 3},
		{"errors summed", float64(got.Errors["KeyNotFoundException"]), 3},
		{"rounds", float64(got.Rounds), 3},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if got.CoresAtRate != nil || got.Name != PathXKSProxy || got.Rate != 1800 {
		t.Errorf("got %+v: want nil cores (no run had it), the path's name and rate", got)
	}
}

func TestWriteProtocols(t *testing.T) {
	rs := []Result{
		{Name: PathDirect, Protocols: map[string]int64{"HTTP/1.1": 10}},
		{Name: PathNginx, Protocols: map[string]int64{"HTTP/2": 7, "HTTP/1.1": 3}},
		{Name: PathXKSProxy},
	}
	var b bytes.Buffer
	if err := WriteProtocols(&b, rs); err != nil {
		t.Fatal(err)
	}
	want := "protocols spoken by the client: direct HTTP/1.1×10; nginx HTTP/1.1×3 HTTP/2×7; xksproxy n/a\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
	m := MedianResult([]Result{rs[1], rs[1]})
	if m.Protocols["HTTP/2"] != 14 || m.Protocols["HTTP/1.1"] != 6 {
		t.Fatalf("medians sum protocols: %v", m.Protocols)
	}
}

// The benchmark-format output parses as benchstat expects: one line per run, named by variant.
func TestWriteBenchfmt(t *testing.T) {
	out := &ABOutcome{Machine: Machine{CPUModel: "Test CPU"}, Runs: []ABRun{
		{Round: 1, Variant: "base", Result: Result{CPUUsPerReq: ptr(52.25), CPUUsPerReqAtRate: ptr(110), RPSMax: 15000, P99ms: 2, CtxSwPerReq: ptr(1.1), RSSMBMax: ptr(24)}},
		{Round: 1, Variant: "new", Result: Result{CPUUsPerReq: ptr(48), RPSMax: 15500}},
	}}
	var b bytes.Buffer
	if err := WriteBenchfmt(&b, out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 6 || lines[2] != "cpu: Test CPU" {
		t.Fatalf("output:\n%s", b.String())
	}
	want := "BenchmarkXKSProxyPath/variant=base 1 52.25 cpu-µs/req 110.00 cpu-µs/req@rate 15000 req/s 2.000 p99-ms@rate 1.100 ctxsw/req 24.0 rss-MB"
	if lines[4] != want {
		t.Fatalf("line\n%q\nwant\n%q", lines[4], want)
	}
	if !strings.HasPrefix(lines[5], "BenchmarkXKSProxyPath/variant=new 1 48.00 cpu-µs/req 0.00 ") {
		t.Fatalf("line %q", lines[5])
	}
}
