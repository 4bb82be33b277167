package adminapi

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

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
	k := s.Keys
	fmt.Fprintf(tw, "keys:\t%d total, %d copied (%d already there), %d verified, %d pending, %d conflicts, %d errors\n",
		k.Total, k.Copied, k.Skipped, k.Verified, k.Pending, k.Conflicts, k.Errors)
	if s.CreatedDuring > 0 || len(s.CreatedOnTarget) > 0 {
		fmt.Fprintf(tw, "created:\t%d during the migration, %d on the target after the switch\n", s.CreatedDuring, len(s.CreatedOnTarget))
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
		fmt.Fprintf(tw, "probation:\t%s; %d requests, error rate %.2f%% (max %.2f%%), p99 %s (max %s)\n",
			verdict, p.Requests, 100*p.ErrorRate, 100*p.MaxErrorRate, p.P99.Round(time.Microsecond), p.MaxP99)
	}
	fmt.Fprintf(tw, "fallbacks:\t%d\n", s.Fallbacks)
	if s.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", s.Reason)
	}
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error:\t%s\n", s.LastError)
	}
	tw.Flush()
	if len(s.Failures) > 0 {
		fmt.Fprintf(w, "\nfailed keys (%d):\n", s.FailuresTotal)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  KEY\tPHASE\tRESULT\tREASON")
		for _, f := range s.Failures {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.KeyID, f.Phase, f.Result, f.Reason)
		}
		tw.Flush()
		if s.FailuresTotal > len(s.Failures) {
			fmt.Fprintf(w, "  … and %d more\n", s.FailuresTotal-len(s.Failures))
		}
	}
}

// truncate shortens an error text for a reply or an error message.
func truncate(s string) string {
	const max = 300
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
