package soak

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

// Growth allowances: past warm-up, a proxy under constant load holds a flat RSS and goroutine
// count, give or take the GC's sawtooth, the migration's workers and the connections the
// faults leave open (a slow backend makes clients and the proxy open more; they idle out
// later). The median of the last third of a replica's samples may exceed the median of its
// first third by this much before the run fails; goroutines are judged net of
// goroutinesPerFD for each extra open fd (a connection costs at most about three: the
// server's serve and read loops, or a client's read and write loops). See bench/README.md.
const (
	rssGrowthFactor       = 1.25
	rssGrowthMB           = 16
	goroutineGrowthFactor = 1.25
	goroutineGrowth       = 32
	goroutinesPerFD       = 3
)

// Series is first, last and max of one figure of one replica.
type Series struct {
	First float64 `json:"first"`
	Last  float64 `json:"last"`
	Max   float64 `json:"max"`
}

// Growth is the judgement of one replica's samples.
type Growth struct {
	Samples              int     `json:"samples"` // of its current process, judged
	RSSBaselineMB        float64 `json:"rss_baseline_mb"`
	RSSFinalMB           float64 `json:"rss_final_mb"`
	GoroutinesBaseline   float64 `json:"goroutines_baseline"`
	GoroutinesFinal      float64 `json:"goroutines_final"`
	FDsBaseline          float64 `json:"fds_baseline"`
	FDsFinal             float64 `json:"fds_final"`
	RSSGrowing           bool    `json:"rss_growing"`
	GoroutinesGrowing    bool    `json:"goroutines_growing"`
	TooFewSamplesToJudge bool    `json:"too_few_samples,omitempty"`
}

// Report is a soak's outcome; bench/README.md ("Soak") documents each JSON field.
type Report struct {
	Pass            bool     `json:"pass"`
	Problems        []string `json:"problems,omitempty"`
	Replicas        int      `json:"replicas"`
	RateRPS         float64  `json:"rate_rps"`
	DurationSeconds float64  `json:"duration_s"`
	// InterruptedAfterSeconds: the load was ended early (Options.Interrupt) this long after it began.
	InterruptedAfterSeconds float64          `json:"interrupted_after_s,omitempty"`
	RequestsTotal           int64            `json:"requests_total"`
	RequestsFailed          int64            `json:"requests_failed"`
	FailedByCause           map[string]int64 `json:"requests_failed_by_cause"`
	FailedByFault           map[string]int64 `json:"requests_failed_by_fault"`
	Unexplained             int64            `json:"unexplained"`
	// UnexplainedFailures are the first few: "offset-from-load-start replica class".
	UnexplainedFailures []string            `json:"unexplained_failures,omitempty"`
	Over250ms           int64               `json:"requests_over_250ms"`
	P50ms               float64             `json:"p50_ms"`
	P99ms               float64             `json:"p99_ms"`
	FaultsInjected      int                 `json:"faults_injected"`
	FaultsSkipped       int                 `json:"faults_skipped"`
	Faults              []Window            `json:"faults"`
	Recorded            int                 `json:"ciphertexts_recorded"`
	Redecrypted         int                 `json:"redecrypted"`
	RedecryptFailed     int                 `json:"redecrypt_failed"`
	RedecryptFailures   []string            `json:"redecrypt_failures,omitempty"`
	KeysCompared        int                 `json:"keys_compared"`
	KeysOnBoth          int                 `json:"keys_on_both"`
	KeysLost            int                 `json:"keys_lost"`
	KeysSplit           int                 `json:"keys_split"`
	LostIDs             []string            `json:"lost_ids,omitempty"`
	SplitIDs            []string            `json:"split_ids,omitempty"`
	ServingBackend      string              `json:"serving_backend"`
	FinalState          string              `json:"final_state"`
	RSSMB               map[string]Series   `json:"rss_mb"`
	Goroutines          map[string]Series   `json:"goroutines"`
	FDs                 map[string]Series   `json:"fds"`
	Growth              map[string]Growth   `json:"growth"`
	Restarts            map[string]int      `json:"restarts"`
	Samples             map[string][]Sample `json:"samples"`
	// Adversary is what the adversarial callers did and whether anyone gained a right.
	Adversary *AdversaryReport `json:"adversary,omitempty"`
}

func (s *soak) report(loads []*loadgen.Report) *Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := &Report{Replicas: len(s.replicas), RateRPS: s.o.Rate, DurationSeconds: s.o.Duration.Seconds(),
		InterruptedAfterSeconds: s.interrupted.Seconds(),
		FailedByCause:           map[string]int64{}, Faults: s.windows, Problems: slices.Clone(s.probs),
		RSSMB: map[string]Series{}, Goroutines: map[string]Series{}, FDs: map[string]Series{},
		Growth: map[string]Growth{}, Restarts: map[string]int{}, Samples: map[string][]Sample{}}
	for _, l := range loads {
		if l == nil {
			continue
		}
		rep.RequestsTotal += l.Total
		rep.RequestsFailed += l.Failed
		rep.Over250ms += l.Over250ms
		rep.P50ms = max(rep.P50ms, float64(l.P50)/1e6)
		rep.P99ms = max(rep.P99ms, float64(l.P99)/1e6)
		for k, v := range l.ByError {
			rep.FailedByCause[k] += v
		}
	}
	names := make([]string, len(s.replicas))
	for i, r := range s.replicas {
		names[i] = r.name
	}
	rep.FailedByFault, rep.UnexplainedFailures = attribute(s.fails, rep.Faults, names, s.o.Grace, s.o.ClientTimeout, s.loadStart)
	rep.Unexplained = rep.FailedByFault[Unexplained]
	for _, w := range rep.Faults {
		if w.Kind == Warmup {
			continue
		}
		if w.Skipped != "" {
			rep.FaultsSkipped++
		} else {
			rep.FaultsInjected++
		}
	}
	for i, r := range s.replicas {
		sm := s.samples[i]
		rep.Samples[r.name] = sm
		rep.Restarts[r.name] = r.restarts
		rep.RSSMB[r.name] = series(sm, func(x Sample) float64 { return x.RSSMB })
		rep.Goroutines[r.name] = series(sm, func(x Sample) float64 { return float64(x.Goroutines) })
		rep.FDs[r.name] = series(sm, func(x Sample) float64 { return float64(x.FDs) })
		rep.Growth[r.name] = judgeGrowth(sm)
	}
	return rep
}

func series(sm []Sample, f func(Sample) float64) Series {
	if len(sm) == 0 {
		return Series{}
	}
	out := Series{First: f(sm[0]), Last: f(sm[len(sm)-1])}
	for _, x := range sm {
		out.Max = max(out.Max, f(x))
	}
	return out
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// judgeGrowth compares the first and last thirds of the samples of the replica's current
// process (a restart starts a new series); fewer than 6 samples are not judged.
func judgeGrowth(all []Sample) Growth {
	var sm []Sample
	if n := len(all); n > 0 {
		for _, x := range all {
			if x.Start == all[n-1].Start {
				sm = append(sm, x)
			}
		}
	}
	g := Growth{Samples: len(sm)}
	if len(sm) < 6 {
		g.TooFewSamplesToJudge = true
		return g
	}
	third := len(sm) / 3
	pick := func(part []Sample, f func(Sample) float64) float64 {
		v := make([]float64, len(part))
		for i, x := range part {
			v[i] = f(x)
		}
		return median(v)
	}
	rss := func(x Sample) float64 { return x.RSSMB }
	gor := func(x Sample) float64 { return float64(x.Goroutines) }
	g.RSSBaselineMB, g.RSSFinalMB = pick(sm[:third], rss), pick(sm[len(sm)-third:], rss)
	fds := func(x Sample) float64 { return float64(x.FDs) }
	g.GoroutinesBaseline, g.GoroutinesFinal = pick(sm[:third], gor), pick(sm[len(sm)-third:], gor)
	g.FDsBaseline, g.FDsFinal = pick(sm[:third], fds), pick(sm[len(sm)-third:], fds)
	g.RSSGrowing = g.RSSFinalMB > g.RSSBaselineMB*rssGrowthFactor+rssGrowthMB
	connGoroutines := goroutinesPerFD * max(0, g.FDsFinal-g.FDsBaseline)
	g.GoroutinesGrowing = g.GoroutinesFinal-connGoroutines > g.GoroutinesBaseline*goroutineGrowthFactor+goroutineGrowth
	return g
}

// judge sets Pass: nothing lost, split or undecryptable, no failure outside the fault that
// explains it, no growth beyond the allowances, every fault injected as planned.
func (r *Report) judge() {
	if r.RequestsTotal == 0 {
		r.Problems = append(r.Problems, "no request was sent")
	}
	if r.KeysLost > 0 || r.KeysSplit > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d keys lost, %d split", r.KeysLost, r.KeysSplit))
	}
	if r.RedecryptFailed > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d re-decryptions failed", r.RedecryptFailed))
	}
	if a := r.Adversary; a != nil && (a.RightsWidened > 0 || len(a.HealthKeyNotRefused) > 0) {
		r.Problems = append(r.Problems, fmt.Sprintf("adversary: %d rights widened %v; health-check key calls not refused: %v", a.RightsWidened, a.WidenedIDs, a.HealthKeyNotRefused))
	}
	if r.Unexplained > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d failures outside any fault that explains them", r.Unexplained))
	}
	for _, name := range slices.Sorted(maps.Keys(r.Growth)) {
		g := r.Growth[name]
		if g.RSSGrowing {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: RSS grew from %.1f to %.1f MB", name, g.RSSBaselineMB, g.RSSFinalMB))
		}
		if g.GoroutinesGrowing {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: goroutines grew from %.0f to %.0f", name, g.GoroutinesBaseline, g.GoroutinesFinal))
		}
	}
	r.Pass = len(r.Problems) == 0
}

// WriteText prints the readable report.
func (r *Report) WriteText(w io.Writer) {
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "xksproxy soak — %d replica(s), %.0f req/s for %s: %s\n\n", r.Replicas, r.RateRPS, time.Duration(r.DurationSeconds*float64(time.Second)), verdict)
	if r.InterruptedAfterSeconds > 0 {
		fmt.Fprintf(w, "  interrupted     the load stopped after %.0f s; later faults were not injected\n\n", r.InterruptedAfterSeconds)
	}
	fmt.Fprintf(w, "  requests        %d total, %d failed, %d over 250 ms; p50 %.2f ms, p99 %.2f ms\n", r.RequestsTotal, r.RequestsFailed, r.Over250ms, r.P50ms, r.P99ms)
	if len(r.FailedByCause) > 0 {
		fmt.Fprintf(w, "  failed by cause %s\n", kv(r.FailedByCause))
		fmt.Fprintf(w, "  failed by fault %s\n", kv(r.FailedByFault))
	}
	fmt.Fprintf(w, "  faults          %d injected, %d skipped\n", r.FaultsInjected, r.FaultsSkipped)
	for _, f := range r.Faults {
		if f.Skipped != "" {
			fmt.Fprintf(w, "                  %-17s skipped: %s\n", f.Kind, f.Skipped)
			continue
		}
		fmt.Fprintf(w, "                  %-17s %-13s %6.1fs  %d failures %s\n", f.Kind, f.Target, f.End.Sub(f.Start).Seconds(), f.Failures, f.Note)
		if f.Failures > 0 {
			fmt.Fprintf(w, "                  %-17s last failure %+.1fs after the end\n", "", f.LastFailureAfterEnd)
		}
	}
	fmt.Fprintf(w, "  re-decryption   %d ciphertexts × %d replica(s): %d ok, %d failed\n", r.Recorded, r.Replicas, r.Redecrypted, r.RedecryptFailed)
	fmt.Fprintf(w, "  keys            %d compared, %d on both backends: %d lost, %d split; %s serves (%s)\n", r.KeysCompared, r.KeysOnBoth, r.KeysLost, r.KeysSplit, r.ServingBackend, r.FinalState)
	if a := r.Adversary; a != nil {
		fmt.Fprintf(w, "  adversary       %v; rights of %d keys checked on both backends: %d widened\n", a.Requests, a.KeysChecked, a.RightsWidened)
	}
	for _, name := range slices.Sorted(maps.Keys(r.RSSMB)) {
		m, g, f, gr := r.RSSMB[name], r.Goroutines[name], r.FDs[name], r.Growth[name]
		fmt.Fprintf(w, "  %-15s RSS %.1f → %.1f MB (max %.1f), goroutines %.0f → %.0f (max %.0f), fds %.0f → %.0f; %d restart(s)\n",
			name, m.First, m.Last, m.Max, g.First, g.Last, g.Max, f.First, f.Last, r.Restarts[name])
		switch {
		case gr.TooFewSamplesToJudge:
			fmt.Fprintf(w, "                  growth not judged: %d samples of the current process (6 needed)\n", gr.Samples)
		default:
			fmt.Fprintf(w, "                  growth: RSS %.1f → %.1f MB, goroutines %.0f → %.0f, fds %.0f → %.0f (medians of first and last thirds of %d samples)\n",
				gr.RSSBaselineMB, gr.RSSFinalMB, gr.GoroutinesBaseline, gr.GoroutinesFinal, gr.FDsBaseline, gr.FDsFinal, gr.Samples)
		}
	}
	for _, u := range r.UnexplainedFailures {
		fmt.Fprintf(w, "  unexplained     %s\n", u)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM         %s\n", p)
	}
}

func kv(m map[string]int64) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
