package adminapi

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// renderFleet lists every registered member: name, acknowledged epoch, route, lease age,
// requests/s; an expired member is marked and named among those a phase change waits for.
func renderFleet(w io.Writer, s *cutover.Status) {
	f := s.Fleet
	if f == nil {
		return
	}
	store := "reachable"
	if !f.StoreReachable {
		store = "UNREACHABLE (serving the last applied epoch; no phase change until it is back)"
	}
	driver := f.Driver
	if driver == "" {
		driver = "none elected"
	}
	fmt.Fprintf(w, "\nfleet: %d member(s), driver %s, store %s (answered by %s)\n", len(f.Members), driver, store, f.Member)
	if len(f.WaitingFor) > 0 {
		fmt.Fprintf(w, "waiting for: %s (a phase change needs every registered member's acknowledgement; `xksproxy cutover forget NAME` removes a member that is gone for good)\n",
			strings.Join(f.WaitingFor, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  MEMBER\tEPOCH\tROUTE\tLEASE AGE\tREQ/S\t")
	for _, m := range f.Members {
		name := m.Name
		if m.Driver {
			name += " (driver)"
		}
		route := m.Primary
		if m.Fallback != "" {
			route += " → " + m.Fallback
		}
		age := m.LeaseAge.Round(100 * time.Millisecond).String()
		if !m.Live {
			age = "EXPIRED (last seen " + age + " ago)"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%.1f\t\n", name, m.AppliedEpoch, route, age, m.RequestsPerSec)
	}
	tw.Flush()
}
