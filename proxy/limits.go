package proxy

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// LimitError is one Limits value outside its bounds. Field is the Go field's name in Limits
// ("XKS.MaxPayload" for the nested ones), so that a configuration file can name its own key.
type LimitError struct {
	Field string
	Msg   string
}

func (e *LimitError) Error() string { return "limits: " + e.Field + " " + e.Msg }

// Is makes a LimitError an ErrConfig.
func (e *LimitError) Is(target error) bool { return target == ErrConfig }

// CheckLimits reports every value of l outside its bounds (errors.Join of *LimitError); a zero
// takes the default. It is the check Config applies, for callers (the configuration file) that
// must refuse a bad value before building a proxy.
func CheckLimits(l Limits) error { return l.checkAndSetDefaults() }

// checkAndSetDefaults fills the defaults and applies the bounds: these are the only ones, the
// configuration file calls CheckLimits rather than keeping its own.
func (l *Limits) checkAndSetDefaults() error {
	setDef(&l.MaxBodyBytes, 64<<10)
	setDef(&l.MaxHeaderBytes, 16<<10)
	setDef(&l.MaxHeaderCount, 64)
	setDef(&l.ReadHeaderTimeout, 5*time.Second)
	setDef(&l.ReadTimeout, 10*time.Second)
	setDef(&l.WriteTimeout, 10*time.Second)
	setDef(&l.IdleTimeout, 120*time.Second)
	setDef(&l.Budget, DefaultBudget)
	setDef(&l.MaxInFlight, 1024)
	setDef(&l.BodyTimeout, 250*time.Millisecond)
	setDef(&l.SlowBodyAfter, 50*time.Millisecond)
	setDef(&l.MaxSlowBodies, 64)
	setDef(&l.MaxSlowBodiesPerConn, 4)
	setDef(&l.MaxHandshakes, max(2, runtime.GOMAXPROCS(0)))
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &LimitError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	between := func(field string, v, lo, hi int64) {
		if v < lo || v > hi {
			bad(field, "must be between %d and %d", lo, hi)
		}
	}
	between("MaxBodyBytes", l.MaxBodyBytes, 32<<10, 16<<20)
	between("MaxHeaderBytes", int64(l.MaxHeaderBytes), 4096, 1<<20)
	between("MaxHeaderCount", int64(l.MaxHeaderCount), 8, 1000)
	// Upper bounds: a timeout of hours (read_timeout = "1000h") would let one client hold a
	// connection and its goroutine all that time.
	for _, b := range []struct {
		name string
		d    time.Duration
		max  time.Duration
	}{{"ReadHeaderTimeout", l.ReadHeaderTimeout, time.Minute}, {"ReadTimeout", l.ReadTimeout, 5 * time.Minute},
		{"WriteTimeout", l.WriteTimeout, 5 * time.Minute}, {"IdleTimeout", l.IdleTimeout, time.Hour},
		{"BodyTimeout", l.BodyTimeout, 10 * time.Second}} {
		if b.d < 0 || b.d > b.max {
			bad(b.name, "must be positive and at most %v", b.max)
		}
	}
	if l.SlowBodyAfter < 0 || l.SlowBodyAfter > l.BodyTimeout {
		bad("SlowBodyAfter", "must be positive and at most BodyTimeout (%v)", l.BodyTimeout)
	}
	if l.MaxSlowBodies < 1 {
		bad("MaxSlowBodies", "must be at least 1")
	}
	if l.MaxSlowBodiesPerConn < 1 || l.MaxSlowBodiesPerConn > l.MaxSlowBodies {
		bad("MaxSlowBodiesPerConn", "must be at least 1 and at most MaxSlowBodies (%d)", l.MaxSlowBodies)
	}
	if l.Budget < 0 || (l.Budget > 250*time.Millisecond && !l.AllowSlowBudget) {
		bad("Budget", "must be positive and at most 250ms (AWS KMS's timeout)")
	}
	between("MaxHandshakes", int64(l.MaxHandshakes), 1, 4096)
	if l.MaxInFlight < 1 {
		bad("MaxInFlight", "must be at least 1")
	}
	if l.XKS.MaxPayload != 0 {
		between("XKS.MaxPayload", int64(l.XKS.MaxPayload), xks.SpecMinPayload, 1<<20)
	}
	if l.XKS.MaxAAD != 0 {
		between("XKS.MaxAAD", int64(l.XKS.MaxAAD), xks.SpecMinAAD, 1<<20)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := l.XKS.CheckAndSetDefaults(); err != nil {
		return fmt.Errorf("%w: limits: %w", ErrConfig, err)
	}
	if l.MaxBodyBytes < int64(l.XKS.MaxBody) {
		// The xks layer answers larger bodies with 501 itself; the HTTP bound must let them in.
		l.MaxBodyBytes = int64(l.XKS.MaxBody)
	}
	return nil
}
