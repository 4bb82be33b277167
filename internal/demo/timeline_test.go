package demo

import (
	"io"
	"testing"
	"time"
)

// The report places each failed request after the last step or state before it, counts from the
// migration's start, and keeps only the first few of each kind.
func TestTimelinePlacesFailures(t *testing.T) {
	tl := newTimeline(io.Discard)
	t0 := time.Now()
	tl.started(t0)
	tl.events = []event{{t0.Add(-time.Second), "warm-up"}, {t0.Add(2 * time.Second), "state switched"}}
	tl.onFailure(t0.Add(3*time.Second), "CreateKey", "client_timeout")
	tl.onFailure(t0.Add(-500*time.Millisecond), "Encrypt", "InternalException")
	for i := 0; i < 2*maxFailedPerKind; i++ {
		tl.onFailure(t0.Add(time.Second), "unknown", "dropped_client_overload")
	}
	var rep Report
	tl.fill(&rep)
	if len(rep.FailedRequests) != 2+maxFailedPerKind {
		t.Fatalf("%d failed requests listed, want %d", len(rep.FailedRequests), 2+maxFailedPerKind)
	}
	first, last := rep.FailedRequests[0], rep.FailedRequests[len(rep.FailedRequests)-1]
	if first.AtSeconds != -0.5 || first.Op != "Encrypt" || first.After != "warm-up" {
		t.Errorf("first = %+v", first)
	}
	if last.AtSeconds != 3 || last.Error != "client_timeout" || last.After != "state switched" {
		t.Errorf("last = %+v", last)
	}
	if len(rep.Timeline) != 2 || rep.Timeline[0].AtSeconds != -1 {
		t.Errorf("timeline = %+v", rep.Timeline)
	}
}
