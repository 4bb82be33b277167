package soak

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	tests := []struct {
		in      string
		want    []FaultSpec
		wantErr string
	}{
		{"none", nil, ""},
		{"backend-slow:45s, cert-replace", []FaultSpec{{FaultBackendSlow, 45 * time.Second}, {FaultCertReplace, 0}}, ""},
		{"backend-slow:0s", nil, "positive duration"},
		{"backend-slow:soon", nil, "positive duration"},
		{"disk-full", nil, "unknown kind"},
		{Warmup, nil, "unknown kind"}, // not a fault one can schedule
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseFaults(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	all, err := ParseFaults(DefaultFaults)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, f := range all {
		kinds[f.Kind] = true
	}
	for k := range faultKinds {
		if k != Warmup && !kinds[k] {
			t.Errorf("the default schedule lacks %s", k)
		}
	}
}

func TestPlanCompressesIntoTheMiddleOfTheRun(t *testing.T) {
	specs, _ := ParseFaults(DefaultFaults)
	for _, d := range []time.Duration{time.Minute, 10 * time.Minute, time.Hour} {
		t.Run(d.String(), func(t *testing.T) {
			p := plan(specs, d)
			slot := d * 8 / 10 / time.Duration(len(specs))
			for i, f := range p {
				if f.At < d/10 || f.At+f.Length > d*9/10 {
					t.Errorf("%s at %v for %v leaves the quiet head or tail of %v", f.Kind, f.At, f.Length, d)
				}
				if i > 0 && f.At <= p[i-1].At {
					t.Errorf("%s is not after %s", f.Kind, p[i-1].Kind)
				}
				if nominal := faultKinds[f.Kind].length; f.Length != min(nominal, slot*6/10) {
					t.Errorf("%s lasts %v, want min(%v, %v)", f.Kind, f.Length, nominal, slot*6/10)
				}
			}
		})
	}
	if p := plan(specs, time.Hour); p[1].Length != 30*time.Second {
		t.Errorf("an hour keeps the nominal 30 s, got %v", p[1].Length)
	}
}

func TestAttribute(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	windows := func() []Window {
		return []Window{
			{Kind: FaultBackendSlow, Target: "a", Start: at(10), End: at(20)},
			{Kind: FaultCertReplace, Target: "every replica", Start: at(30), End: at(31)},
			{Kind: FaultReplicaKill, Target: "r1", Start: at(40), End: at(43)},
			{Kind: FaultEtcdStop, Start: at(50), End: at(50), Skipped: "needs fleet mode"},
			{Kind: FaultBackendRestart, Target: "a", Start: at(22), End: at(25)},
		}
	}
	names := []string{"r0", "r1"}
	tests := []struct {
		name string
		f    failure
		want string
	}{
		{"inside", failure{at(15), 0, "DependencyTimeoutException"}, FaultBackendSlow},
		{"sent just before the fault began", failure{at(9.5), 0, "client_timeout"}, FaultBackendSlow},
		{"too early", failure{at(8), 0, "client_timeout"}, Unexplained},
		{"recovery grace", failure{at(20.5), 0, "InternalException"}, FaultBackendSlow},
		{"an active fault wins over an earlier one's grace", failure{at(22.5), 0, "network"}, FaultBackendRestart},
		{"after the grace", failure{at(28.5), 0, "network"}, Unexplained},
		{"a certificate replacement explains nothing", failure{at(30.5), 0, "network"}, Unexplained},
		{"the killed replica", failure{at(41), 1, "network"}, FaultReplicaKill},
		{"another replica", failure{at(41), 0, "network"}, Unexplained},
		{"a skipped fault explains nothing", failure{at(50), 0, "network"}, Unexplained},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws := windows()
			got, unexplained := attribute([]failure{tc.f}, ws, names, 3*time.Second, time.Second, t0)
			if got[tc.want] != 1 || len(got) != 1 {
				t.Fatalf("got %v, want one under %s", got, tc.want)
			}
			if (tc.want == Unexplained) != (len(unexplained) == 1) {
				t.Errorf("unexplained list %v", unexplained)
			}
			for _, w := range ws {
				if w.Kind == tc.want && (w.Failures != 1 || w.ByClass[tc.f.class] != 1) {
					t.Errorf("window %s: %d failures, %v", w.Kind, w.Failures, w.ByClass)
				}
			}
		})
	}
}

func samples(start int, rss []float64, gor, fds []int) []Sample {
	out := make([]Sample, len(rss))
	for i := range rss {
		out[i] = Sample{RSSMB: rss[i], Goroutines: gor[i], FDs: fds[i], Start: start}
	}
	return out
}

func TestJudgeGrowth(t *testing.T) {
	flatRSS := []float64{22, 23, 22, 24, 23, 22, 23, 24, 23}
	flatG := []int{80, 85, 82, 90, 84, 83, 86, 88, 85}
	flatFD := []int{50, 52, 51, 53, 50, 52, 51, 52, 51}
	tests := []struct {
		name             string
		s                []Sample
		rssUp, gorUp, na bool
	}{
		{"flat", samples(0, flatRSS, flatG, flatFD), false, false, false},
		{"rss leak", samples(0, []float64{22, 23, 24, 30, 36, 42, 48, 54, 60}, flatG, flatFD), true, false, false},
		{"goroutine leak", samples(0, flatRSS, []int{80, 90, 100, 150, 200, 250, 300, 350, 400}, flatFD), false, true, false},
		// 60 more connections (fds) explain 180 more goroutines.
		{"goroutines that connections explain", samples(0, flatRSS, []int{80, 80, 80, 150, 200, 250, 260, 260, 260}, []int{50, 50, 50, 80, 100, 110, 110, 110, 110}), false, false, false},
		{"too few", samples(0, flatRSS[:5], flatG[:5], flatFD[:5]), false, false, true},
		// A restarted process starts a new series: the old one's high figures are not its baseline.
		{"judged on the current process only", append(samples(0, []float64{60, 60, 60}, []int{400, 400, 400}, []int{50, 50, 50}),
			samples(1, flatRSS, flatG, flatFD)...), false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := judgeGrowth(tc.s)
			if g.RSSGrowing != tc.rssUp || g.GoroutinesGrowing != tc.gorUp || g.TooFewSamplesToJudge != tc.na {
				t.Fatalf("got %+v", g)
			}
		})
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 42\n" +
			"go_goroutines_other 7\nprocess_open_fds 17\nxks_requests_total{a=\"b\"} 3\n"))
	}))
	defer srv.Close()
	tests := []struct {
		name  string
		names []string
		want  map[string]float64
	}{
		{"present", []string{"go_goroutines", "process_open_fds"}, map[string]float64{"go_goroutines": 42, "process_open_fds": 17}},
		{"missing", []string{"process_resident_memory_bytes"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scrape(context.Background(), srv.Client(), srv.URL, tc.names...)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("want an error, got %v", got)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v", got, err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// The JSON report carries the figures the issue names, under those names.
func TestReportJSONNames(t *testing.T) {
	r := &Report{RSSMB: map[string]Series{"r0": {1, 2, 3}}}
	r.judge()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"requests_total", "requests_failed", "requests_failed_by_cause", "requests_failed_by_fault",
		"requests_over_250ms", "faults_injected", "keys_lost", "keys_split", "redecrypt_failed", "rss_mb", "goroutines",
		"fds", "unexplained", "pass"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if rss := m["rss_mb"].(map[string]any)["r0"].(map[string]any); rss["first"] != 1.0 || rss["last"] != 2.0 || rss["max"] != 3.0 {
		t.Errorf("rss_mb.r0 = %v", rss)
	}
	if r.Pass {
		t.Error("a run without requests passed")
	}
}
