package demo

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// The report lists at most maxFailedPerKind failed requests of each operation and error, and
// maxFailedRequests in all: the first of each kind explain the rest.
const (
	maxFailedPerKind  = 5
	maxFailedRequests = 40
)

// timeline keeps what the run did and saw, with times: the demo's own steps, the migration's
// states as the sampler sees them, and the first failed requests. It is what explains a failure
// in the report: which step or state it came in.
type timeline struct {
	mu       sync.Mutex
	progress io.Writer
	zero     time.Time // the migration's start; zero until then
	events   []event
	failed   []failure
	kinds    map[[2]string]int
}

type event struct {
	at   time.Time
	what string
}

type failure struct {
	at        time.Time
	op, class string
}

// Event is a step of the run as the report lists it.
type Event struct {
	AtSeconds float64 `json:"at_s"` // from the migration's start (negative: before it)
	What      string  `json:"what"`
}

// FailedRequest is one failed request as the report lists it, with the last event before it.
type FailedRequest struct {
	AtSeconds float64 `json:"at_s"`
	Op        string  `json:"op"`
	Error     string  `json:"error"`
	After     string  `json:"after,omitempty"`
}

func newTimeline(progress io.Writer) *timeline {
	return &timeline{progress: progress, kinds: map[[2]string]int{}}
}

// say prints a step and records it.
func (t *timeline) say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(t.progress, msg)
	t.note(msg)
}

// report prints where the migration stands (not recorded: the states are).
func (t *timeline) report(st cutover.Status) {
	t.mu.Lock()
	at := time.Since(t.zero).Seconds()
	t.mu.Unlock()
	k := st.Keys
	fmt.Fprintf(t.progress, "  %6.1fs %s: %d keys, %d copied, %d verified; %.0f keys/s, pace %.0f calls/s (%s)\n",
		at, st.State, k.Total, k.Copied, k.Verified, st.Pace.KeysPerSecond, st.Pace.CallsPerSecond, st.Pace.LimitedBy)
}

// note records an event without printing it.
func (t *timeline) note(what string) {
	t.mu.Lock()
	t.events = append(t.events, event{time.Now(), what})
	t.mu.Unlock()
}

// started marks the migration's start: the report's times count from it.
func (t *timeline) started(at time.Time) {
	t.mu.Lock()
	t.zero = at
	t.mu.Unlock()
}

// onFailure is the load generator's OnFailure: it keeps the first failures of each kind.
func (t *timeline) onFailure(at time.Time, op, class string) {
	t.mu.Lock()
	k := [2]string{op, class}
	if t.kinds[k] < maxFailedPerKind && len(t.failed) < maxFailedRequests {
		t.kinds[k]++
		t.failed = append(t.failed, failure{at, op, class})
	}
	t.mu.Unlock()
}

// fill adds the events and failed requests to the report.
func (t *timeline) fill(rep *Report) {
	t.mu.Lock()
	defer t.mu.Unlock()
	zero := t.zero
	if zero.IsZero() && len(t.events) > 0 {
		zero = t.events[0].at
	}
	rel := func(at time.Time) float64 { return round(at.Sub(zero).Seconds()) }
	for _, e := range t.events {
		rep.Timeline = append(rep.Timeline, Event{AtSeconds: rel(e.at), What: e.what})
	}
	slices.SortFunc(t.failed, func(a, b failure) int { return a.at.Compare(b.at) })
	for _, f := range t.failed {
		fr := FailedRequest{AtSeconds: rel(f.at), Op: f.op, Error: f.class}
		for _, e := range t.events {
			if e.at.After(f.at) {
				break
			}
			fr.After = e.what
		}
		rep.FailedRequests = append(rep.FailedRequests, fr)
	}
}
