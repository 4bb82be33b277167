package config

import (
	"fmt"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/xks"
)

// Cutover is [cutover].
type Cutover struct {
	JournalPath                  string   `toml:"journal_path"`
	Source                       string   `toml:"source"`
	Target                       string   `toml:"target"`
	Select                       string   `toml:"select"`
	Tag                          string   `toml:"tag"`
	Keys                         []string `toml:"keys"`
	Unmovable                    string   `toml:"unmovable"`
	Pace                         any      `toml:"pace"` // "auto" or a number (checked: PaceRate)
	MinConcurrency               int      `toml:"min_concurrency"`
	MaxConcurrency               int      `toml:"max_concurrency"`
	Concurrency                  int      `toml:"concurrency"` // the older name of max_concurrency
	RightsSyncRate               *float64 `toml:"rights_sync_rate"`
	TargetACL                    string   `toml:"target_acl"`
	ShadowDuration               Duration `toml:"shadow_duration"`
	ShadowSampleRate             *float64 `toml:"shadow_sample_rate"`
	ProbationDuration            Duration `toml:"probation_duration"`
	ProbationMaxErrorRate        *float64 `toml:"probation_max_error_rate"`
	ProbationMaxP99              Duration `toml:"probation_max_p99"`
	ProbationMinRequests         *int     `toml:"probation_min_requests"`
	RevokeSourceGrantsOnFinalize bool     `toml:"revoke_source_grants_on_finalize"`
	GrantEveryoneForServiceKeys  bool     `toml:"grant_everyone_for_service_keys"`
}

// cutover checks [cutover] against the backend names. The backend names and the journal path
// get their defaults here (they belong to the file); every other key left out stays zero (nil
// for the rates and the minimum) and takes the controller's default, and its rule is the
// controller's (cutover.Check*), so a value the operator wrote reaches the controller as written.
func (c *checker) cutover(f *File, names map[string]int) {
	co := &f.Cutover
	defStr(&co.JournalPath, DefaultJournalPath)
	co.JournalPath = c.rel(co.JournalPath)
	defStr(&co.Source, "a")
	defStr(&co.Target, "b")
	if _, ok := names[co.Source]; !ok && len(f.Backend) > 0 && c.sectionUsed(f) {
		c.fail("cutover.source", "no backend is named %q", co.Source)
	}
	if _, ok := names[co.Target]; !ok && len(f.Backend) > 0 && c.sectionUsed(f) {
		c.fail("cutover.target", "no backend is named %q", co.Target)
	}
	if co.Source == co.Target {
		c.fail("cutover.target", "must differ from cutover.source")
	}
	if co.Select != "" {
		c.rule("cutover.select", cutover.CheckSelectMode(cutover.SelectMode(co.Select)))
	}
	if cutover.SelectMode(co.Select) == cutover.SelectList && len(co.Keys) == 0 {
		c.fail("cutover.keys", "required when cutover.select = \"list\"")
	}
	for i, k := range co.Keys {
		c.xksRule(fmt.Sprintf("cutover.keys[%d]", i), xks.ValidKeyID(k))
	}
	if co.Unmovable != "" {
		c.rule("cutover.unmovable", cutover.CheckUnmovable(co.Unmovable))
	}
	switch v := co.Pace.(type) {
	case nil:
	case string:
		if v != "auto" {
			c.fail("cutover.pace", "must be \"auto\" or a number of backend calls a second, not %q", v)
		}
	case int64:
		c.rule("cutover.pace", cutover.CheckPaceRate(float64(v)))
	case float64:
		c.rule("cutover.pace", cutover.CheckPaceRate(v))
	default:
		c.fail("cutover.pace", "must be \"auto\" or a number of backend calls a second")
	}
	if co.Concurrency != 0 {
		c.rule("cutover.concurrency", cutover.CheckConcurrency(co.Concurrency))
		if co.MaxConcurrency != 0 {
			c.fail("cutover.concurrency", "is the older name of max_concurrency: write only max_concurrency")
		}
	}
	if co.MinConcurrency != 0 {
		c.rule("cutover.min_concurrency", cutover.CheckConcurrency(co.MinConcurrency))
	}
	if co.MaxConcurrency != 0 {
		c.rule("cutover.max_concurrency", cutover.CheckConcurrency(co.MaxConcurrency))
	}
	if hi := max(co.MaxConcurrency, co.Concurrency); co.MinConcurrency != 0 && hi != 0 {
		c.rule("cutover.min_concurrency", cutover.CheckConcurrencyBounds(co.MinConcurrency, hi))
	}
	if co.RightsSyncRate != nil { // a written 0 would stop the sync: refused, not defaulted
		c.rule("cutover.rights_sync_rate", cutover.CheckRightsSyncRate(*co.RightsSyncRate))
	}
	if co.TargetACL != "" {
		c.rule("cutover.target_acl", cutover.CheckACL(co.TargetACL))
	}
	c.positiveDur("cutover.shadow_duration", co.ShadowDuration)
	if co.ShadowSampleRate != nil {
		c.rule("cutover.shadow_sample_rate", cutover.CheckSampleRate(*co.ShadowSampleRate))
	}
	c.positiveDur("cutover.probation_duration", co.ProbationDuration)
	if co.ProbationMaxErrorRate != nil {
		c.rule("cutover.probation_max_error_rate", cutover.CheckErrorRate(*co.ProbationMaxErrorRate))
	}
	c.positiveDur("cutover.probation_max_p99", co.ProbationMaxP99)
	if co.ProbationMinRequests != nil {
		c.rule("cutover.probation_min_requests", cutover.CheckMinRequests(*co.ProbationMinRequests))
	}
}

// PaceRate is pace as the controller takes it: 0 for "auto" (or unset), else the fixed rate.
// The file was checked: any other value is not there.
func (co *Cutover) PaceRate() float64 {
	switch v := co.Pace.(type) {
	case int64:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

// sectionUsed: the cutover backends are checked when [cutover] is written or there are two or
// more backends (a single-backend file without [cutover] is valid).
func (c *checker) sectionUsed(f *File) bool { return c.cutoverSet || len(f.Backend) >= 2 }
