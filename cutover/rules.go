package cutover

import (
	"errors"
	"fmt"
	"math"
)

// The rules of the settings an operator writes live here once: CheckAndSetDefaults applies them
// to a Config, and the config package applies them to the file's keys (adding file and field).

// CheckSampleRate: a shadow sample rate is in (0,1]; 0 would mirror nothing and prove nothing.
func CheckSampleRate(r float64) error {
	if math.IsNaN(r) || r <= 0 || r > 1 {
		return errors.New("must be above 0 and at most 1 (0 would mirror nothing; for no shadowing leave the shadow duration at 0)")
	}
	return nil
}

// CheckErrorRate: a probation error rate is in [0,1]; 0 rolls back on any error.
func CheckErrorRate(r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return errors.New("must be between 0 and 1")
	}
	return nil
}

// CheckMinRequests: 0 is allowed (judge whatever traffic there was).
func CheckMinRequests(n int) error {
	if n < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

// CheckConcurrency: parallel key copies, 1..256 (0 in a Config means the default).
func CheckConcurrency(n int) error {
	if n < 1 || n > 256 {
		return errors.New("must be between 1 and 256")
	}
	return nil
}

// MaxPaceRate bounds a fixed pace (background backend calls a second).
const MaxPaceRate = 100000

// CheckPaceRate: a fixed pace is above 0 and at most MaxPaceRate calls a second (0 in a Config
// means "auto").
func CheckPaceRate(r float64) error {
	if math.IsNaN(r) || r <= 0 || r > MaxPaceRate {
		return fmt.Errorf("must be \"auto\" or a number of backend calls a second above 0 and at most %d", MaxPaceRate)
	}
	return nil
}

// CheckConcurrencyBounds: the pace's minimum concurrency is at most its maximum.
func CheckConcurrencyBounds(lo, hi int) error {
	if lo > hi {
		return fmt.Errorf("the minimum concurrency %d is above the maximum %d", lo, hi)
	}
	return nil
}

// CheckRightsSyncRate: keys per second the rights sync may read on the serving backend,
// above 0 and at most MaxRightsSyncRate (0 in a Config means the default).
func CheckRightsSyncRate(r float64) error {
	if math.IsNaN(r) || r <= 0 || r > MaxRightsSyncRate {
		return fmt.Errorf("must be above 0 and at most %d keys per second", MaxRightsSyncRate)
	}
	return nil
}

// CheckACL: the XKS access-control generation of a backend.
func CheckACL(acl string) error {
	switch acl {
	case ACLARN, ACLService, ACLBoth:
		return nil
	}
	return fmt.Errorf("must be %q, %q or %q", ACLARN, ACLService, ACLBoth)
}

// CheckSelectMode: which keys migrate.
func CheckSelectMode(mode SelectMode) error {
	switch mode {
	case SelectTag, SelectOwned, SelectList:
		return nil
	}
	return fmt.Errorf("must be %q, %q or %q", SelectTag, SelectOwned, SelectList)
}

// SelectMode says which keys on the source migrate.
type SelectMode string

// Selection modes.
const (
	SelectTag   SelectMode = "tag"   // keys carrying Selection.Tag (default)
	SelectOwned SelectMode = "owned" // every key the source's KMIP identity owns
	SelectList  SelectMode = "list"  // Selection.Keys
)
