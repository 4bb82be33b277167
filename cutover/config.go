package cutover

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xksproxy/xksproxy/cosmian"
)

// Backend is one Cosmian server, reached through KMIP as the keys' owner.
type Backend struct {
	Name string
	KMIP *cosmian.Client
	// ACL is the XKS access-control generation the server runs: "arn"
	// (≤ 5.26, per-principal grants), "service" (PR #1107, reserved
	// [aws-xks-service] identity) or "both". Default "both": replicating the
	// ARN grants and adding the service grant is right for either release.
	ACL string
}

// ACL generations.
const (
	ACLARN     = "arn"
	ACLService = "service"
	ACLBoth    = "both"
)

// Selection says which keys on the source migrate.
type Selection struct {
	Mode SelectMode `json:"mode"` // SelectTag (default) | SelectOwned | SelectList
	Tag  string     `json:"tag,omitempty"`
	Keys []string   `json:"keys,omitempty"`
	// Exclude names ids never migrated in either direction, whatever the mode: each backend's
	// own health-check test key exists on both sides with different material by design.
	Exclude []string `json:"exclude,omitempty"`
	// Unmovable says what becomes of a selected key that cannot be exported at all
	// (sensitive, not extractable, wrapped without its wrapping key): UnmovableBlock (default:
	// it blocks the switch, named) or UnmovableKeep (it stays served by the source for good,
	// through a route of its own that survives finalize; the source cannot be retired while any
	// remains).
	Unmovable string `json:"unmovable,omitempty"`
}

// What becomes of a key that cannot be exported (Selection.Unmovable).
const (
	UnmovableBlock = "block"
	UnmovableKeep  = "keep-on-source"
)

// CheckUnmovable: the unmovable-key policy.
func CheckUnmovable(s string) error {
	switch s {
	case UnmovableBlock, UnmovableKeep:
		return nil
	}
	return fmt.Errorf("must be %q or %q", UnmovableBlock, UnmovableKeep)
}

// ShadowConfig bounds the optional mirroring of live Decrypts to the target.
type ShadowConfig struct {
	// Duration is how long a run started without StartOptions.Shadow mirrors Decrypts before it
	// switches (0: no shadowing unless the run asks for it).
	Duration time.Duration
	// SampleRate is the fraction of Decrypts mirrored, in (0,1]; nil: DefaultShadowSampleRate.
	// A written 0 is refused: it would mirror nothing and prove nothing.
	SampleRate *float64
	QueueSize  int           // default 256
	Workers    int           // default 4
	Timeout    time.Duration // per mirrored call; default 2s
}

// Defaults of ShadowConfig and ProbationConfig: the one place they are written (the
// configuration file documents them, it does not repeat them).
const (
	DefaultShadowSampleRate      = 1.0 // mirrored calls are bounded by Workers and QueueSize; excess is dropped and counted
	DefaultProbationDuration     = 10 * time.Minute
	DefaultProbationMaxErrorRate = 0.01
	DefaultProbationMaxP99       = 100 * time.Millisecond
	DefaultProbationMinRequests  = 100
	DefaultConcurrency           = 8
	DefaultRequestBudget         = 250 * time.Millisecond
	// DefaultRightsSyncRate bounds the rights sync's reads on the serving backend (two calls a
	// key): low enough to leave that backend to live traffic, high enough that a fleet of a
	// thousand keys is re-read every 10 s.
	DefaultRightsSyncRate = 100.0
	MaxRightsSyncRate     = 100000
)

// ProbationConfig sets the thresholds that roll a switch back automatically.
type ProbationConfig struct {
	Duration time.Duration // default DefaultProbationDuration
	// MaxErrorRate in [0,1]; nil: DefaultProbationMaxErrorRate. 0 rolls back on any error.
	MaxErrorRate *float64
	MaxP99       time.Duration // default DefaultProbationMaxP99
	// MinRequests is how many requests the window needs before a verdict; nil:
	// DefaultProbationMinRequests. 0 judges whatever traffic there was.
	MinRequests *int
	// Window is the sliding window the rate and p99 are computed over
	// (default min(Duration, 1m)).
	Window time.Duration
}

// RightsSyncConfig paces the rights sync (rightsync.go).
type RightsSyncConfig struct {
	// Interval: while switched, rights changes made on the target are carried to the source at
	// this interval (plus the time of one pass); default 1s, at most 1m.
	Interval time.Duration
	// Rate: keys per second a pass reads on the target (an attribute read and an access list
	// each), default DefaultRightsSyncRate. A pass over n keys takes at least n/Rate seconds:
	// that, plus the interval, is how long a change made on the target takes to reach the source.
	Rate float64
}

// Config configures a Controller.
type Config struct {
	Source, Target Backend
	JournalPath    string // required (in fleet mode: the local copy of the last applied epoch)
	// Fleet coordinates this controller with the other replicas' and keeps their shared journal
	// (package fleet); nil: one process, the file journal at JournalPath.
	Fleet  Fleet
	Select Selection
	// Pace bounds the one budget all background work draws from (pace.go).
	Pace      PaceConfig
	Shadow    ShadowConfig
	Probation ProbationConfig
	// RevokeSourceGrantsOnFinalize makes every finalize (asked for or automatic) revoke the
	// migrated keys' grants on the source, as FinalizeOptions.RevokeSourceGrants does for one.
	RevokeSourceGrantsOnFinalize bool
	Now                          func() time.Time
	Logger                       *slog.Logger
	Registry                     prometheus.Registerer
	Progress                     io.Writer // a terminal gets a one-line progress bar
	// MarkerTimeout bounds each read or write of the backends' cutover markers (default 5s).
	MarkerTimeout time.Duration
	// RightsSync paces the carrying of rights changes from the target to the source while
	// switched.
	RightsSync RightsSyncConfig
	// GrantEveryoneForServiceKeys lets a key that a newer source (ACL "service") grants only to
	// [aws-xks-service] be granted to every user ("*") on a 5.26 target (ACL "arn"): the only
	// way 5.26 lets AWS's changing principals use it, but also every KMIP user of that server,
	// a right the owner never gave. Off (the default), such a key fails to copy, named, and
	// blocks the switch until its principals are granted explicitly on the source.
	GrantEveryoneForServiceKeys bool
}

// CheckAndSetDefaults validates c and fills defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Source.Name == "" || c.Target.Name == "" {
		return errors.New("cutover: source and target backend names are required")
	}
	if c.Source.Name == c.Target.Name {
		return fmt.Errorf("cutover: source and target are the same backend %q", c.Source.Name)
	}
	for _, b := range []*Backend{&c.Source, &c.Target} {
		if b.KMIP == nil {
			return fmt.Errorf("cutover: backend %q has no KMIP client", b.Name)
		}
		if b.ACL == "" {
			b.ACL = ACLBoth
		}
		if err := CheckACL(b.ACL); err != nil {
			return fmt.Errorf("cutover: backend %q: acl: %w", b.Name, err)
		}
	}
	if c.JournalPath == "" {
		return errors.New("cutover: JournalPath is required")
	}

	if err := c.Select.checkAndSetDefaults(); err != nil {
		return err
	}
	if err := c.markerDefaults(); err != nil {
		return err
	}
	if err := c.Pace.checkAndSetDefaults(); err != nil {
		return err
	}
	s := &c.Shadow
	if s.Duration < 0 {
		return errors.New("cutover: Shadow.Duration must not be negative")
	}
	if s.SampleRate == nil {
		s.SampleRate = new(DefaultShadowSampleRate)
	} else if err := CheckSampleRate(*s.SampleRate); err != nil {
		return fmt.Errorf("cutover: Shadow.SampleRate: %w", err)
	}
	if s.QueueSize <= 0 {
		s.QueueSize = 256
	}
	if s.Workers <= 0 {
		s.Workers = 4
	}
	if s.Timeout <= 0 {
		s.Timeout = 2 * time.Second
	}
	p := &c.Probation
	if p.Duration < 0 || p.MaxP99 < 0 || p.Window < 0 {
		return errors.New("cutover: Probation durations must not be negative")
	}
	if p.Duration == 0 {
		p.Duration = DefaultProbationDuration
	}
	if p.MaxErrorRate == nil {
		p.MaxErrorRate = new(DefaultProbationMaxErrorRate)
	} else if err := CheckErrorRate(*p.MaxErrorRate); err != nil {
		return fmt.Errorf("cutover: Probation.MaxErrorRate: %w", err)
	}
	if p.MaxP99 == 0 {
		p.MaxP99 = DefaultProbationMaxP99
	}
	if p.MinRequests == nil {
		p.MinRequests = new(DefaultProbationMinRequests)
	} else if err := CheckMinRequests(*p.MinRequests); err != nil {
		return fmt.Errorf("cutover: Probation.MinRequests: %w", err)
	}
	if p.Window <= 0 {
		p.Window = min(p.Duration, time.Minute)
	}
	r := &c.RightsSync
	if r.Interval == 0 {
		r.Interval = time.Second
	}
	if r.Interval < 0 || r.Interval > time.Minute {
		return errors.New("cutover: RightsSync.Interval must be positive and at most 1m")
	}
	if r.Rate == 0 {
		r.Rate = DefaultRightsSyncRate
	} else if err := CheckRightsSyncRate(r.Rate); err != nil {
		return fmt.Errorf("cutover: RightsSync.Rate: %w", err)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (p *PaceConfig) checkAndSetDefaults() error {
	if p.MinConcurrency == 0 {
		p.MinConcurrency = 1
	}
	if p.MaxConcurrency == 0 {
		p.MaxConcurrency = max(DefaultConcurrency, p.MinConcurrency)
	}
	if err := CheckConcurrency(p.MinConcurrency); err != nil {
		return fmt.Errorf("cutover: Pace.MinConcurrency: %w", err)
	}
	if err := CheckConcurrency(p.MaxConcurrency); err != nil {
		return fmt.Errorf("cutover: Pace.MaxConcurrency: %w", err)
	}
	if err := CheckConcurrencyBounds(p.MinConcurrency, p.MaxConcurrency); err != nil {
		return fmt.Errorf("cutover: Pace: %w", err)
	}
	if p.Rate != 0 {
		if err := CheckPaceRate(p.Rate); err != nil {
			return fmt.Errorf("cutover: Pace.Rate: %w", err)
		}
	}
	if p.RequestBudget < 0 {
		return errors.New("cutover: Pace.RequestBudget must not be negative")
	}
	if p.RequestBudget == 0 {
		p.RequestBudget = DefaultRequestBudget
	}
	return nil
}

func (s *Selection) checkAndSetDefaults() error {
	if s.Mode == "" {
		s.Mode = SelectTag
	}
	if err := CheckSelectMode(s.Mode); err != nil {
		return fmt.Errorf("cutover: selection mode %q: %w", s.Mode, err)
	}
	if s.Tag == "" {
		s.Tag = cosmian.XKSTag
	}
	if s.Unmovable == "" {
		s.Unmovable = UnmovableBlock
	}
	if err := CheckUnmovable(s.Unmovable); err != nil {
		return fmt.Errorf("cutover: unmovable %q: %w", s.Unmovable, err)
	}
	if s.Mode == SelectList && len(s.Keys) == 0 {
		return errors.New("cutover: selection mode list needs keys")
	}
	for _, k := range s.Keys {
		if err := validKeyID(k); err != nil {
			return fmt.Errorf("cutover: selection: %w", err)
		}
	}
	return nil
}

// maxKeyIDLen bounds key ids taken from outside (admin API, proxy hooks).
const maxKeyIDLen = 512

func validKeyID(id string) error {
	if id == "" || len(id) > maxKeyIDLen {
		return fmt.Errorf("key id of length %d", len(id))
	}
	if id[0] == '[' {
		// Cosmian reads "[…" as a tag query, never as one uid.
		return fmt.Errorf("key id %.40q starts with '['", id)
	}
	return nil
}
