package soak

import (
	"fmt"

	"sort"
	"strings"
	"time"
)

// Fault kinds. The ones that "explain" failures may make requests fail while active; a
// failure during any other fault (or none) is unexplained. A certificate replacement and a
// credential rotation must be invisible to clients, so they explain none; so must etcd
// stopping (the request path does not use it). A migration does
// (its copy competes with traffic for the source backend), and the report shows how many.
const (
	FaultBackendRestart  = "backend-restart"  // serving backend down (connections dropped and refused), then up with its state
	FaultBackendSlow     = "backend-slow"     // serving backend answers XKS calls later than the backend timeout
	FaultBackendErrors   = "backend-errors"   // serving backend fails 20 % of XKS calls
	FaultCertReplace     = "cert-replace"     // every replica's certificate files replaced by a new leaf
	FaultCredRotate      = "cred-rotate"      // a SigV4 credential set replaced, SIGHUP to every replica
	FaultReplicaKill     = "replica-kill"     // kill -9 of one replica, restarted after the fault's length
	FaultEtcdStop        = "etcd-stop"        // the fleet's etcd stopped (fleet mode only)
	FaultMigrateRollback = "migrate-rollback" // migration A → B up to the switch, then rolled back
	FaultMigrateFinalize = "migrate-finalize" // migration A → B, probation, finalize

	// Warmup is not a fault but the first seconds of load: every connection and backend pool
	// opens at once (AWS ramps up; the load generator does not), which on a loaded machine can
	// push a few first requests past the backend timeout. Reported as its own window.
	Warmup = "warm-up"
)

// faultInfo is what the schedule knows of a kind.
type faultInfo struct {
	length   time.Duration // nominal length (compressed for short runs)
	explains bool          // may make requests fail while active
	fleet    bool          // needs --replicas > 1
}

var faultKinds = map[string]faultInfo{
	FaultBackendRestart:  {5 * time.Second, true, false},
	FaultBackendSlow:     {30 * time.Second, true, false},
	FaultBackendErrors:   {30 * time.Second, true, false},
	FaultCertReplace:     {0, false, false},
	FaultCredRotate:      {0, false, false},
	FaultReplicaKill:     {3 * time.Second, true, false},
	FaultEtcdStop:        {30 * time.Second, false, true}, // the data path must not need etcd
	FaultMigrateRollback: {0, true, false},
	FaultMigrateFinalize: {0, true, false},
	Warmup:               {5 * time.Second, true, false},
}

// DefaultFaults is the default schedule: every kind once, the migrations last so that the
// backend faults hit A first and the run ends on B.
const DefaultFaults = "backend-restart,backend-slow,backend-errors,cert-replace,cred-rotate,replica-kill,etcd-stop,migrate-rollback,migrate-finalize"

// FaultSpec is one entry of --faults: a kind and an optional length ("backend-slow:45s").
type FaultSpec struct {
	Kind   string
	Length time.Duration // 0: the kind's nominal length
}

// ParseFaults reads a comma-separated list of kind[:length]; "none" is the empty schedule.
func ParseFaults(s string) ([]FaultSpec, error) {
	if strings.TrimSpace(s) == "none" {
		return nil, nil
	}
	var out []FaultSpec
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		kind, length, hasLen := strings.Cut(part, ":")
		if _, ok := faultKinds[kind]; !ok || kind == Warmup {
			return nil, fmt.Errorf("fault %q: unknown kind (want one of %s)", kind, strings.Join(kindNames(), ", "))
		}
		f := FaultSpec{Kind: kind}
		if hasLen {
			d, err := time.ParseDuration(length)
			if err != nil || d <= 0 || d > 24*time.Hour {
				return nil, fmt.Errorf("fault %q: length must be a positive duration", part)
			}
			f.Length = d
		}
		out = append(out, f)
	}
	return out, nil
}

func kindNames() []string {
	out := make([]string, 0, len(faultKinds))
	for k := range faultKinds {
		if k != Warmup {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// planned is one fault of the schedule, at an offset from the start of the load.
type planned struct {
	FaultSpec
	At time.Duration
}

// plan spreads the faults over the middle of the run: the first tenth is a quiet baseline,
// the last tenth a quiet tail (so the final samples are not taken inside a fault). Each
// fault gets an equal slot and lasts its length, at most 60 % of the slot: a short run
// compresses the faults, a long one keeps their nominal lengths.
func plan(specs []FaultSpec, d time.Duration) []planned {
	if len(specs) == 0 {
		return nil
	}
	slot := d * 8 / 10 / time.Duration(len(specs))
	out := make([]planned, len(specs))
	for i, s := range specs {
		if s.Length == 0 {
			s.Length = faultKinds[s.Kind].length
		}
		if s.Length > slot*6/10 {
			s.Length = slot * 6 / 10
		}
		out[i] = planned{FaultSpec: s, At: d/10 + time.Duration(i)*slot}
	}
	return out
}

// Window is when a fault was active, as injected (not as planned).
type Window struct {
	Kind     string           `json:"kind"`
	Target   string           `json:"target,omitempty"` // backend or replica name
	Start    time.Time        `json:"start"`
	End      time.Time        `json:"end"`
	Skipped  string           `json:"skipped,omitempty"` // why it was not injected
	Failures int64            `json:"failures"`          // requests attributed to it
	ByClass  map[string]int64 `json:"failures_by_cause,omitempty"`
	// LastFailureAfterEnd is how long after the fault ended the last request it explains
	// started (negative: before the end): the recovery time.
	LastFailureAfterEnd float64 `json:"last_failure_after_end_s,omitempty"`
	Note                string  `json:"note,omitempty"`
}

// failure is one failed request as the load generator saw it.
type failure struct {
	at      time.Time
	replica int
	class   string
}

// Unexplained names failures no active fault explains.
const Unexplained = "unexplained"

// attribute assigns each failure to a window that explains it: a fault that may make
// requests fail, active when the request started (from one client timeout before it began:
// a request in flight then fails with it), and for a replica kill only on that replica. A
// failure in no active window goes to one that ended at most grace before (recovery: the next
// health check, reconnecting). It returns the count per fault kind (and Unexplained) and the
// first unexplained failures, and sets each window's Failures, ByClass, LastFailureAfterEnd.
func attribute(fails []failure, ws []Window, replicaNames []string, grace, timeout time.Duration, t0 time.Time) (map[string]int64, []string) {
	out := map[string]int64{}
	var unexplained []string
	find := func(f failure, grace time.Duration) int {
		for i := range ws {
			w := &ws[i]
			if w.Skipped != "" || !faultKinds[w.Kind].explains {
				continue
			}
			if f.at.Before(w.Start.Add(-timeout)) || f.at.After(w.End.Add(grace)) {
				continue
			}
			if w.Kind == FaultReplicaKill && w.Target != replicaName(replicaNames, f.replica) {
				continue
			}
			return i
		}
		return -1
	}
	for _, f := range fails {
		hit := find(f, 0)
		if hit < 0 {
			hit = find(f, grace)
		}
		if hit < 0 {
			out[Unexplained]++
			if len(unexplained) < 20 {
				unexplained = append(unexplained, fmt.Sprintf("%.3fs %s %s", f.at.Sub(t0).Seconds(), replicaName(replicaNames, f.replica), f.class))
			}
			continue
		}
		w := &ws[hit]
		if after := f.at.Sub(w.End).Seconds(); w.Failures == 0 || after > w.LastFailureAfterEnd {
			w.LastFailureAfterEnd = after
		}
		w.Failures++
		if w.ByClass == nil {
			w.ByClass = map[string]int64{}
		}
		w.ByClass[f.class]++
		out[w.Kind]++
	}
	return out, unexplained
}

func replicaName(names []string, i int) string {
	if i < len(names) {
		return names[i]
	}
	return "?"
}
