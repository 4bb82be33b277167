package adminapi

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/xksproxy/xksproxy/cutover"
)

// RenderStatus writes a human-readable status table.
func RenderStatus(w io.Writer, s *cutover.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	route := s.Primary
	if s.Fallback != "" {
		route += " (fallback " + s.Fallback + ")"
	}
	fmt.Fprintf(tw, "state:\t%s\n", s.State)
	fmt.Fprintf(tw, "epoch:\t%d\n", s.Epoch)
	fmt.Fprintf(tw, "migration:\t%s → %s\n", s.Source, s.Target)
	fmt.Fprintf(tw, "serving:\t%s\n", route)
	if !s.StartedAt.IsZero() {
		fmt.Fprintf(tw, "started:\t%s\n", s.StartedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "updated:\t%s\n", s.UpdatedAt.UTC().Format(time.RFC3339))
	if !s.SwitchedAt.IsZero() {
		fmt.Fprintf(tw, "switched:\t%s\n", s.SwitchedAt.UTC().Format(time.RFC3339))
	}
	if s.Running {
		fmt.Fprintf(tw, "running:\tyes\n")
	}
	for _, n := range s.Notes {
		fmt.Fprintf(tw, "note:\t%s\n", esc(n))
	}
	k := s.Keys
	if k.Total == 0 && s.State == cutover.StateCopying {
		// The run lists the source's keys before it knows how many there are.
		fmt.Fprintf(tw, "keys:\tlisting the keys on %s…\n", s.Source)
	} else {
		fmt.Fprintf(tw, "keys:\t%d total, %d copied (%d already there), %d verified, %d pending, %d conflicts, %d errors\n",
			k.Total, k.Copied, k.Skipped, k.Verified, k.Pending, k.Conflicts, k.Errors)
	}
	if s.CreatedDuring > 0 || len(s.CreatedOnTarget) > 0 {
		fmt.Fprintf(tw, "CreateKey ids:\t%d seen while %s served, %d while %s served (each is copied to the other side when it is not there: AWS repeats CreateKey for keys that exist)\n",
			s.CreatedDuring, s.Source, len(s.CreatedOnTarget), s.Target)
	}
	sh := s.Shadow
	if sh.Match+sh.Mismatch+sh.Errors+sh.Dropped > 0 {
		fmt.Fprintf(tw, "shadow:\t%d match, %d mismatch, %d errors, %d dropped\n", sh.Match, sh.Mismatch, sh.Errors, sh.Dropped)
	}
	if p := s.Probation; p != nil {
		verdict := "running"
		if p.Passed {
			verdict = "passed"
		}
		if p.Waiting != "" {
			verdict = "not passed: " + p.Waiting
		}
		fmt.Fprintf(tw, "probation:\t%s; %d requests, error rate %.2f%% (%d timeouts; max %.2f%%), p99 %s (max %s)\n",
			verdict, p.Requests, 100*p.ErrorRate, p.Timeouts, 100*p.MaxErrorRate, p.P99.Round(time.Microsecond), p.MaxP99)
	}
	if pc := s.Pace; s.State.InMigration() || pc.Paused {
		line := fmt.Sprintf("%s, %.0f calls/s, %d of %d..%d keys at once", pc.Mode, pc.CallsPerSecond, pc.Concurrency, pc.MinConcurrency, pc.MaxConcurrency)
		if pc.Paused {
			line = "PAUSED (xksproxy cutover resume); " + line
		}
		if pc.KeysPerSecond > 0 {
			line += fmt.Sprintf(", %.1f keys/s", pc.KeysPerSecond)
		}
		if pc.TimeLeft > 0 {
			line += ", about " + pc.TimeLeft.String() + " left"
		}
		fmt.Fprintf(tw, "pace:\t%s\n", line)
		if pc.LimitedBy != "" {
			fmt.Fprintf(tw, "limited by:\t%s\n", esc(pc.LimitedBy))
		}
	}
	fmt.Fprintf(tw, "fallbacks:\t%d\n", s.Fallbacks)
	if s.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", esc(s.Reason))
	}
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", esc(s.LastError))
	}
	tw.Flush()
	renderFleet(w, s)
	if len(s.Failures) > 0 {
		fmt.Fprintf(w, "\nfailed keys (%d):\n", s.FailuresTotal)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tPHASE\tRESULT\tREASON")
		for _, f := range s.Failures {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", esc(f.KeyID), f.Phase, f.Result, esc(f.Reason))
		}
		tw.Flush()
		if s.FailuresTotal > len(s.Failures) {
			fmt.Fprintf(w, "  … and %d more\n", s.FailuresTotal-len(s.Failures))
		}
	}
	if len(s.Kept) > 0 {
		// Keys that cannot be exported stay served where they are, for good: say it every time,
		// so that nobody retires that backend.
		on := map[string]int{}
		for _, k := range s.Kept {
			on[k.On]++
		}
		fmt.Fprintf(w, "\nkept for good (%d key(s) cannot be exported; their backend must keep running):\n", len(s.Kept))
		for _, b := range slices.Sorted(maps.Keys(on)) {
			fmt.Fprintf(w, "  %d on %s\n", on[b], esc(b))
		}
		for i, k := range s.Kept {
			if i == 10 {
				fmt.Fprintf(w, "  … and %d more\n", len(s.Kept)-10)
				break
			}
			fmt.Fprintf(w, "  %s on %s: %s\n", esc(k.ID), esc(k.On), esc(k.Reason))
		}
	}
}

// esc makes text from the journal (an operator's rollback reason, a backend's error, a key id)
// safe for a terminal: control characters (escape sequences, carriage returns, tabs that would
// break the table) and invalid UTF-8 are shown as Go escapes, never interpreted.
func esc(s string) string {
	clean := utf8.ValidString(s)
	for _, r := range s {
		if !clean || unicode.IsControl(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// Outcome says whether a migration has come to rest and, if so, what the operator does next
// ("" while it is still progressing): `cutover status --watch` stops on it.
func Outcome(s *cutover.Status) string {
	switch s.State {
	case cutover.StateServing:
		return fmt.Sprintf("no migration: %s serves", s.Primary)
	case cutover.StateFinalized:
		return fmt.Sprintf("migration finalized: %s serves alone", s.Primary)
	case cutover.StateRolledBack:
		return fmt.Sprintf("migration rolled back: %s serves (%s)", s.Primary, esc(s.Reason))
	}
	if s.Running && s.State != cutover.StateSwitched {
		return ""
	}
	switch s.State {
	case cutover.StateCopyFailed, cutover.StateVerifyFailed:
		return fmt.Sprintf("migration blocked in %s: fix the keys listed, then `xksproxy cutover start` again (or roll back)", s.State)
	case cutover.StateVerified:
		return "verified: switch with `xksproxy cutover switch`"
	case cutover.StateSwitched:
		if p := s.Probation; p != nil && p.Passed && !s.Options.AutoFinalize {
			return "probation passed: finalize with `xksproxy cutover finalize` (or roll back)"
		}
	}
	return ""
}

// Rate follows the copy or verification between two statuses and renders its rate and the
// time left: "rate: 42.0 keys/s, about 1m30s left" ("" when it cannot tell yet).
type Rate struct {
	state cutover.State
	done  int
	at    time.Time
}

// Line updates r with s seen at now and returns the rate line.
func (r *Rate) Line(s *cutover.Status, now time.Time) string {
	k := s.Keys
	var done int
	switch s.State {
	case cutover.StateCopying:
		done = k.Copied + k.Errors + k.Conflicts
	case cutover.StateVerifying:
		done = k.Verified + k.Errors + k.Conflicts
	default:
		*r = Rate{}
		return ""
	}
	prev := *r
	*r = Rate{state: s.State, done: done, at: now}
	if prev.state != s.State || prev.at.IsZero() || k.Total == 0 {
		return ""
	}
	dt := now.Sub(prev.at).Seconds()
	if dt <= 0 || done <= prev.done {
		return ""
	}
	rate := float64(done-prev.done) / dt
	left := time.Duration(float64(max(k.Total-done, 0)) / rate * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf("rate:      %.1f keys/s, about %s left", rate, left)
}

// RenderPlan writes a plan: a count for every action, then the keys that need attention (a
// conflict or an error); verbose lists every key.
func RenderPlan(w io.Writer, p *cutover.Plan, verbose bool) {
	fmt.Fprintf(w, "plan %s → %s: %d keys\n", p.Source, p.Target, len(p.Keys))
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, a := range []string{cutover.ActionCopy, cutover.ActionSkip, cutover.ActionConflict, cutover.ActionError} {
		fmt.Fprintf(w, "  %-10s %d\n", a, p.Counts[a])
	}
	attention := 0
	for _, k := range p.Keys {
		if k.Action == cutover.ActionConflict || k.Action == cutover.ActionError {
			attention++
		}
	}
	if verbose {
		fmt.Fprintln(w, "\nkeys:")
	} else if attention > 0 {
		fmt.Fprintf(w, "\nneeds attention (%d):\n", attention)
	}
	for _, k := range p.Keys {
		if !verbose && k.Action != cutover.ActionConflict && k.Action != cutover.ActionError {
			continue
		}
		line := fmt.Sprintf("  %-10s %s", k.Action, k.KeyID)
		if k.Reason != "" {
			line += ": " + k.Reason
		}
		fmt.Fprintln(w, line)
	}
	if !verbose && len(p.Keys) > attention {
		fmt.Fprintln(w, "(--verbose lists every key)")
	}
}
