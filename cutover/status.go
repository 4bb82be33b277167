package cutover

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// KeyCounts sums the per-key progress of the current migration.
type KeyCounts struct {
	Total     int `json:"total"`
	Copied    int `json:"copied"`  // present on the target (imported or already there)
	Skipped   int `json:"skipped"` // of Copied: identical key was already on the target
	Verified  int `json:"verified"`
	Conflicts int `json:"conflicts"`
	Errors    int `json:"errors"`
	// Kept: keys that cannot be exported, left served by the source (Status.Kept names them).
	Kept    int `json:"kept,omitempty"`
	Pending int `json:"pending"`
	// GrantsCopied counts (key, user) grants this process applied on the target, the
	// [aws-xks-service] grant included; it restarts at zero with the process.
	GrantsCopied int `json:"grants_copied"`
}

// KeyFailure names a key that blocks the migration and why (never material).
type KeyFailure struct {
	KeyID  string `json:"key_id"`
	Phase  Phase  `json:"phase,omitempty"`
	Result string `json:"result"`
	Reason string `json:"reason"`
}

// ProbationStatus is the probation picture while switched.
type ProbationStatus struct {
	ProbationStats
	Duration     time.Duration `json:"duration_ns"`
	Passed       bool          `json:"passed"`
	MaxErrorRate float64       `json:"max_error_rate"`
	MaxP99       time.Duration `json:"max_p99_ns"`
	MinRequests  int           `json:"min_requests"`
	// SinceSwitch counts the target's requests since the switch; Waiting says why probation
	// has not passed once its duration is over (too few requests to judge).
	SinceSwitch int64  `json:"requests_since_switch"`
	Waiting     string `json:"waiting,omitempty"`
}

// maxStatusFailures bounds the failures listed in Status (the count is exact).
const maxStatusFailures = 200

// JournalState is what the journal says: epoch, state, the migration's sides, the route that
// state serves, its times and options, and why it stopped or rolled back.
type JournalState struct {
	Epoch      uint64       `json:"epoch"`
	State      State        `json:"state"`
	Source     string       `json:"source"`
	Target     string       `json:"target"`
	Primary    string       `json:"primary"`
	Fallback   string       `json:"fallback,omitempty"`
	StartedAt  time.Time    `json:"started_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
	SwitchedAt time.Time    `json:"switched_at,omitzero"`
	Options    StartOptions `json:"options"`
	Reason     string       `json:"reason,omitempty"`
	LastError  string       `json:"last_error,omitempty"`
}

// Status is a JSON-serialisable snapshot of the controller. The journal's part is embedded: its
// fields are Status's own in JSON.
type Status struct {
	JournalState
	Running         bool             `json:"running"`
	Keys            KeyCounts        `json:"keys"`
	Failures        []KeyFailure     `json:"failures,omitempty"`
	FailuresTotal   int              `json:"failures_total"`
	CreatedDuring   int              `json:"created_during"`
	CreatedOnTarget []string         `json:"created_on_target,omitempty"`
	Shadow          ShadowStats      `json:"shadow"`
	Probation       *ProbationStatus `json:"probation,omitempty"`
	Fallbacks       uint64           `json:"fallbacks"`
	// CreateKeyChecks: how this process answered whether a backend holds a CreateKey's id.
	CreateKeyChecks CreateKeyChecks `json:"createkey_checks"`
	// Pace: the background work's budget now, what limits it, and the time left.
	Pace          PaceStatus `json:"pace"`
	SharedStorage bool       `json:"shared_storage,omitempty"`
	Notes         []string   `json:"notes,omitempty"` // shared storage, ids never migrated
	// Kept are the keys that cannot be exported and are served for good by the backend each
	// names (from every migration so far): that backend cannot be retired while any remain.
	Kept []KeptKey `json:"kept,omitempty"`
	// Fleet is set in fleet mode: this member, the driver, every registered member.
	Fleet *FleetStatus `json:"fleet,omitempty"`
}

// Status returns a snapshot of the controller.
func (c *Controller) Status() Status {
	s := Status{SharedStorage: c.probe.shared.Load(), Notes: c.sides.notes(c.probe.isShared(), c.cfg.Select.Exclude)}
	passed := c.book.fill(&s)
	s.Running = c.control.isRunning()
	s.Keys.GrantsCopied = int(c.copier.grantsCopied.Load())
	slices.SortFunc(s.Failures, func(a, b KeyFailure) int { return strings.Compare(a.KeyID, b.KeyID) })
	if len(s.Failures) > maxStatusFailures {
		s.Failures = s.Failures[:maxStatusFailures]
	}
	s.Shadow = c.shadow.stats()
	if c.fleet != nil {
		s.Fleet = c.fleet.status(c.cfg.Now(), s.State.inMigration())
	}
	s.Fallbacks = c.probation.fallbacks.Load()
	s.CreateKeyChecks = c.sides.checks.snapshot()
	s.Pace = c.sides.pace.status()
	left := 0
	switch s.State {
	case StateCopying:
		left = s.Keys.Pending
	case StateVerifying:
		left = max(0, s.Keys.Copied-s.Keys.Verified)
	}
	if kps := s.Pace.KeysPerSecond; left > 0 && kps > 0 {
		s.Pace.TimeLeft = time.Duration(float64(left) / kps * float64(time.Second)).Round(time.Second)
	}
	c.sides.pace.m.left.Set(s.Pace.TimeLeft.Seconds())
	if s.State == StateSwitched {
		p := c.cfg.Probation
		s.Probation = &ProbationStatus{
			ProbationStats: c.probation.stats(c.cfg.Now()),
			Duration:       p.Duration, Passed: passed,
			MaxErrorRate: *p.MaxErrorRate, MaxP99: p.MaxP99, MinRequests: *p.MinRequests,
			SinceSwitch: c.probation.evidence(c.cfg.Now()),
		}
		pr := s.Probation
		switch v := c.probation.verdict(c.cfg.Now()); {
		case pr.Passed:
		case v.watching != "":
			pr.Waiting = v.watching
		case !s.SwitchedAt.IsZero() && !c.cfg.Now().Before(s.SwitchedAt.Add(p.Duration)) && pr.SinceSwitch < int64(*p.MinRequests):
			pr.Waiting = fmt.Sprintf("duration over; waiting for %d requests to %s (%d so far) before judging", *p.MinRequests, c.sides.tgt.name, pr.SinceSwitch)
		}
	}
	return s
}
