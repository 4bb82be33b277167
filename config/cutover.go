package config

import (
	"fmt"
	"math"
	"time"
)

// Cutover is [cutover].
type Cutover struct {
	JournalPath                  string   `toml:"journal_path"`
	Source                       string   `toml:"source"`
	Target                       string   `toml:"target"`
	Select                       string   `toml:"select"`
	Tag                          string   `toml:"tag"`
	Keys                         []string `toml:"keys"`
	Concurrency                  int      `toml:"concurrency"`
	TargetACL                    string   `toml:"target_acl"`
	ShadowDuration               Duration `toml:"shadow_duration"`
	ShadowSampleRate             *float64 `toml:"shadow_sample_rate"`
	ProbationDuration            Duration `toml:"probation_duration"`
	ProbationMaxErrorRate        *float64 `toml:"probation_max_error_rate"`
	ProbationMaxP99              Duration `toml:"probation_max_p99"`
	ProbationMinRequests         int      `toml:"probation_min_requests"`
	RevokeSourceGrantsOnFinalize bool     `toml:"revoke_source_grants_on_finalize"`
}

// cutover checks [cutover] against the backend names.
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
	defStr(&co.Select, "tag")
	switch co.Select {
	case "tag", "owned":
	case "list":
		if len(co.Keys) == 0 {
			c.fail("cutover.keys", "required when cutover.select = \"list\"")
		}
	default:
		c.fail("cutover.select", "must be \"tag\", \"owned\" or \"list\"")
	}
	for i, k := range co.Keys {
		if !validKeyID(k) {
			c.fail(fmt.Sprintf("cutover.keys[%d]", i), "must be 1 to 128 characters of A-Z a-z 0-9 . - _")
		}
	}
	defStr(&co.Tag, "aws-xks")
	defInt(&co.Concurrency, 8)
	if co.Concurrency < 1 || co.Concurrency > 256 {
		c.fail("cutover.concurrency", "must be between 1 and 256")
	}
	defStr(&co.TargetACL, "both")
	switch co.TargetACL {
	case "arn", "service", "both":
	default:
		c.fail("cutover.target_acl", "must be \"arn\", \"service\" or \"both\"")
	}
	c.positiveDur("cutover.shadow_duration", co.ShadowDuration)
	co.ShadowSampleRate = c.rate("cutover.shadow_sample_rate", co.ShadowSampleRate, 0.01)
	defDur(&co.ProbationDuration, 10*time.Minute)
	c.positiveDur("cutover.probation_duration", co.ProbationDuration)
	co.ProbationMaxErrorRate = c.rate("cutover.probation_max_error_rate", co.ProbationMaxErrorRate, 0.01)
	defDur(&co.ProbationMaxP99, 100*time.Millisecond)
	c.positiveDur("cutover.probation_max_p99", co.ProbationMaxP99)
	defInt(&co.ProbationMinRequests, 100)
	if co.ProbationMinRequests < 0 {
		c.fail("cutover.probation_min_requests", "must not be negative")
	}
}

// sectionUsed: the cutover backends are checked when [cutover] is written or there are two or
// more backends (a single-backend file without [cutover] is valid).
func (c *checker) sectionUsed(f *File) bool { return c.cutoverSet || len(f.Backend) >= 2 }

func (c *checker) rate(field string, p *float64, def float64) *float64 {
	if p == nil {
		return &def
	}
	if math.IsNaN(*p) || *p < 0 || *p > 1 {
		c.fail(field, "must be between 0 and 1")
	}
	return p
}
