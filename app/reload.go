package app

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cutover"
)

// ErrReloadRefused marks a reload that changed nothing: the file or a change it asks for is
// refused (the error says why, one line per key).
var ErrReloadRefused = errors.New("reload refused")

// staticKeys are the keys a reload never applies: the sockets stay (a binary upgrade, SIGUSR2,
// binds new addresses), and so does the log's format (its level applies).
var staticKeys = []string{"server.listen", "server.metrics_listen", "admin.listen", "log.format"}

// Reload reads the configuration file again and applies it (SIGHUP). It returns the keys it did
// not apply (the listen addresses) and an error wrapping ErrReloadRefused when nothing was
// applied; everything then runs as before.
func (l *Live) Reload(ctx context.Context) (notApplied []string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	notApplied, err = l.reload(ctx)
	switch {
	case err == nil:
		l.m.reloads.WithLabelValues("applied").Inc()
	case errors.Is(err, ErrReloadRefused):
		l.m.reloads.WithLabelValues("refused").Inc()
	default:
		l.m.reloads.WithLabelValues("failed").Inc()
	}
	return notApplied, err
}

func refused(err error) error { return fmt.Errorf("%w:\n%w", ErrReloadRefused, err) }

func (l *Live) reload(ctx context.Context) ([]string, error) {
	if l.released {
		return nil, refused(errors.New("a binary upgrade holds the journal: reload once it ended"))
	}
	f, warnings, err := config.Load(l.cfg.Path)
	if err != nil {
		return nil, refused(err)
	}
	for _, w := range warnings {
		l.log.Warn("reload: configuration", "warning", w)
	}
	changes := config.Changes(l.file, f)
	var keep []string
	for _, k := range changes {
		if slices.Contains(staticKeys, k) {
			keep = append(keep, k)
		}
	}
	rebuild, err := l.check(f, changes)
	if err != nil {
		return nil, refused(err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if credentialsOnly(l.file, f, changes) {
		// The commonest reload (the spec's credential rotation): applied to the proxy in
		// service, its connections and counters untouched.
		return nil, l.setCredentials(f)
	}
	ac, err := l.cfg.Setup(ctx, f)
	if err != nil {
		return nil, refused(f.Locate(err))
	}
	// The sockets stay: the new proxy is lent the ones in service.
	ac.Proxy.Listen, ac.Proxy.MetricsListen, ac.Proxy.Admin.Listen = l.ac.Proxy.Listen, l.ac.Proxy.MetricsListen, l.ac.Proxy.Admin.Listen

	// The controller first (it decides the route): kept, opened, or replaced while idle.
	old := l.ctl
	var opened *running
	route := l.routes.current().Route()
	switch {
	case ac.Cutover == nil:
	case old == nil || rebuild:
		if old != nil {
			if err := old.stop(); err != nil {
				l.log.Error("reload: the controller's last journal write failed", "err", err)
			}
			l.ctl = nil
		}
		opened, err = l.openController(ac, nil)
		if err != nil {
			if old != nil {
				l.resumeOld(old)
			}
			return nil, refused(fmt.Errorf("%s: cutover: %w", base(f), err))
		}
		route = opened.route
	default:
		// Kept: the new proxy serves the route in service, and the controller's Run goes on.
		ac.Cutover = l.ac.Cutover
	}
	if ac.Cutover == nil {
		route = ac.Proxy.Route
	}
	g, err := l.startGeneration(ac, route)
	if err != nil {
		if opened != nil {
			opened.o.close()
			if old != nil {
				l.resumeOld(old)
			}
		}
		return nil, fmt.Errorf("reload: the new configuration's proxy did not start; the previous one serves: %w", err)
	}
	if err := l.routes.add(g.p); err != nil {
		g.cancel()
		<-g.done
		return nil, fmt.Errorf("reload: %w", err)
	}
	prev := l.gen
	l.gen = g
	l.routes.remove(prev.p)
	prev.cancel()
	l.draining.Add(1)
	go func() {
		defer l.draining.Done()
		if err := <-prev.done; err != nil {
			l.log.Warn("reload: the previous configuration's proxy stopped with an error", "err", err)
		}
	}()
	switch {
	case opened != nil:
		l.ctl = opened
		l.runController(opened)
	case ac.Cutover == nil && old != nil:
		if err := old.stop(); err != nil {
			l.log.Error("reload: the controller's last journal write failed", "err", err)
		}
		l.ctl = nil
		l.seam.cur.Store(nil)
	}
	l.file, l.ac = f, ac
	l.setLevel(f)
	l.m.loaded(f, "reload")
	return keep, nil
}

// resumeOld puts the controller a failed reload stopped back in service.
func (l *Live) resumeOld(old *running) {
	r, err := l.openController(l.ac, nil)
	if err != nil {
		l.log.Error("reload: the previous controller cannot load the journal again; migrations are stopped until a reload or restart succeeds", "err", err)
		return
	}
	l.ctl = r
	l.runController(r)
}

// check refuses what a reload cannot do, each problem on its line: remove a backend that the
// route or a migration in flight uses; change [cutover] or [fleet] while a migration is in
// flight. rebuild says whether the controller must be replaced (it is idle then).
func (l *Live) check(f *config.File, changes []string) (rebuild bool, err error) {
	names := map[string]bool{}
	for _, b := range f.Backend {
		names[b.Name] = true
	}
	var errs []error
	in := map[string]string{}
	r := l.routes.current().Route()
	if r.Primary != "" {
		in[r.Primary] = fmt.Sprintf("it serves (route epoch %d: primary %s)", r.Epoch, r.Primary)
	}
	if r.Fallback != "" {
		in[r.Fallback] = fmt.Sprintf("it is the fallback (route epoch %d)", r.Epoch)
	}
	var st cutover.Status
	inFlight := false
	if l.ctl != nil {
		st = l.ctl.o.ctrl.Status()
		inFlight = st.State != cutover.StateServing && st.State != cutover.StateFinalized && st.State != cutover.StateRolledBack
		if inFlight {
			for _, n := range []string{st.Source, st.Target} {
				if _, ok := in[n]; !ok {
					in[n] = fmt.Sprintf("the migration %s → %s in flight (state %s) uses it", st.Source, st.Target, st.State)
				}
			}
		}
	}
	for _, n := range sortedKeys(in) {
		if !names[n] {
			errs = append(errs, fmt.Errorf("%s: backend: backend %q cannot be removed: %s; put it back", base(f), n, in[n]))
		}
	}
	var ctl []string
	for _, k := range changes {
		if k == "cutover" || strings.HasPrefix(k, "cutover.") || k == "fleet" || strings.HasPrefix(k, "fleet.") ||
			l.pairBackendChanged(f, k) {
			ctl = append(ctl, k)
		}
	}
	if len(ctl) > 0 && inFlight {
		for _, k := range ctl {
			errs = append(errs, located(f, k, "changed while the migration %s → %s is in flight (state %s): put it back, or change it once the migration is finalized or rolled back",
				st.Source, st.Target, st.State))
		}
	}
	for _, k := range ctl {
		if k == "fleet" || strings.HasPrefix(k, "fleet.") {
			errs = append(errs, located(f, k, "a replica's fleet settings change with a binary upgrade (SIGUSR2) or a restart, not a reload"))
		}
	}
	if len(errs) > 0 {
		return false, errors.Join(errs...)
	}
	return len(ctl) > 0 && l.ctl != nil, nil
}

// pairBackendChanged: key changes the KMIP access (ckms_config, name) of a backend the
// controller migrates between.
func (l *Live) pairBackendChanged(f *config.File, key string) bool {
	if l.ctl == nil {
		return false
	}
	if key == "backend" {
		return false // the list's length changed: a backend added or removed (checked above)
	}
	src, tgt := l.ctl.o.ctrl.Pair()
	for i, b := range l.file.Backend {
		if b.Name != src && b.Name != tgt {
			continue
		}
		p := fmt.Sprintf("backend[%d].", i)
		if key == p+"ckms_config" || key == p+"name" {
			return true
		}
	}
	for i, b := range f.Backend {
		if (b.Name == src || b.Name == tgt) && key == fmt.Sprintf("backend[%d].name", i) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// pairSwitch is the operator API's controller under a Live: a start or plan that names another
// pair than the controller's (or, without names, another than [cutover]'s while no migration is
// in flight) gets the controller of that pair.
type pairSwitch struct{ l *Live }

func (s *pairSwitch) ctrl() *cutover.Controller { return s.l.Controller() }

func (s *pairSwitch) Status() cutover.Status {
	if c := s.ctrl(); c != nil {
		return c.Status()
	}
	return cutover.Status{}
}

func (s *pairSwitch) Switch(ctx context.Context) error {
	return s.with(func(c *cutover.Controller) error { return c.Switch(ctx) })
}
func (s *pairSwitch) Rollback(ctx context.Context, reason string) error {
	return s.with(func(c *cutover.Controller) error { return c.Rollback(ctx, reason) })
}
func (s *pairSwitch) Finalize(ctx context.Context, o cutover.FinalizeOptions) error {
	return s.with(func(c *cutover.Controller) error { return c.Finalize(ctx, o) })
}

func (s *pairSwitch) SetPaused(ctx context.Context, paused bool) error {
	return s.with(func(c *cutover.Controller) error { return c.SetPaused(ctx, paused) })
}

func (s *pairSwitch) with(f func(*cutover.Controller) error) error {
	c := s.ctrl()
	if c == nil {
		return cutover.ErrStopped
	}
	return f(c)
}

func (s *pairSwitch) Plan(ctx context.Context, opts ...cutover.PlanOptions) (*cutover.Plan, error) {
	var o cutover.PlanOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	c, err := s.l.pairController(ctx, o.Source, o.Target, false)
	if err != nil {
		return nil, err
	}
	return c.Plan(ctx)
}

func (s *pairSwitch) Start(ctx context.Context, o cutover.StartOptions) error {
	c, err := s.l.pairController(ctx, o.Source, o.Target, true)
	if err != nil {
		return err
	}
	o.Source, o.Target = "", ""
	return c.Start(ctx, o)
}

// pairController is the controller of the pair source → target (empty: the one of the
// migration in flight, else [cutover]'s). For a start, the controller in service is replaced by
// that pair's when it differs (refused while a migration is in flight); a plan gets a controller
// that only plans.
func (l *Live) pairController(ctx context.Context, source, target string, start bool) (*cutover.Controller, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctl == nil {
		return nil, cutover.ErrStopped
	}
	cur := l.ctl.o.ctrl
	st := cur.Status()
	src, tgt := cur.Pair()
	inFlight := st.State != cutover.StateServing && st.State != cutover.StateFinalized && st.State != cutover.StateRolledBack
	if source == "" && target == "" && !inFlight {
		source, target = l.ac.Cutover.Source.Name, l.ac.Cutover.Target.Name
	}
	source, target = orName(source, src), orName(target, tgt)
	if source == src && target == tgt {
		return cur, nil
	}
	if source == target {
		return nil, fmt.Errorf("%w: source and target are both %q", cutover.ErrWrongState, source)
	}
	if inFlight {
		return nil, fmt.Errorf("%w: the migration %s → %s is in state %s: finalize or roll it back before %s → %s",
			cutover.ErrWrongState, src, tgt, st.State, source, target)
	}
	if l.ac.Fleet != nil {
		return nil, fmt.Errorf("%w: in fleet mode every replica's [cutover] names the pair: set source = %q and target = %q in each replica's file and reload them",
			cutover.ErrOtherPair, source, target)
	}
	if start && st.Primary != source {
		return nil, fmt.Errorf("%w: backend %q serves (state %s): the next migration starts from it (--source %s)", cutover.ErrWrongState, st.Primary, st.State, st.Primary)
	}
	cc, err := withPair(l.ac, source, target)
	if err != nil {
		return nil, err
	}
	if !start {
		cc.Registry = nil // a controller that only plans: its metrics go nowhere
		cc.Logger = l.log
		return cutover.New(*cc)
	}
	old := l.ctl
	if err := old.stop(); err != nil {
		l.log.Error("cutover: the controller's last journal write failed", "err", err)
	}
	l.ctl = nil
	r, err := l.openController(l.ac, []string{source, target})
	if err != nil {
		l.resumeOld(old)
		return nil, err
	}
	l.ctl = r
	l.runController(r)
	l.log.Info("cutover: the controller migrates another pair now", "source", source, "target", target)
	return r.o.ctrl, nil
}

func orName(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// credentialKey matches a prefix's credential sets in config.Changes.
var credentialKey = regexp.MustCompile(`^prefix\[(\d+)\]\.credential`)

// credentialsOnly: every change is a prefix's credential sets, the prefixes otherwise the same.
func credentialsOnly(old, f *config.File, changes []string) bool {
	if len(old.Prefix) != len(f.Prefix) {
		return false
	}
	for _, k := range changes {
		m := credentialKey.FindStringSubmatch(k)
		if m == nil {
			return false
		}
		i, _ := strconv.Atoi(m[1])
		if i >= len(f.Prefix) || old.Prefix[i].Path != f.Prefix[i].Path {
			return false
		}
	}
	return true
}

// setCredentials applies f's credential sets to the proxy in service (and their age metrics).
func (l *Live) setCredentials(f *config.File) error {
	p := l.routes.current()
	for i, pf := range f.Prefix {
		if err := p.SetCredentials(pf.Path, pf.Credentials()); err != nil {
			return refused(located(f, fmt.Sprintf("prefix[%d].credential", i), "%v", err))
		}
		if m := l.gen.ac.CertMetrics; m != nil {
			if err := m.SetCredentialAges(pf.Path, credentialAges(pf)); err != nil {
				l.log.Warn("reload: credential age metrics", "prefix", pf.Path, "err", err)
			}
		}
		l.ac.Proxy.Prefixes[i].Credentials = pf.Credentials()
	}
	l.file = f
	l.setLevel(f)
	l.m.loaded(f, "reload")
	return nil
}

// setLevel applies [log] level.
func (l *Live) setLevel(f *config.File) {
	if l.cfg.Level != nil {
		_ = l.cfg.Level.UnmarshalText([]byte(strings.ToUpper(f.Log.Level)))
	}
}

// ReloadTLS re-reads the certificate files of the configuration in service (as on SIGHUP, even
// when the file itself is refused: a renewal must not wait for an unrelated fix).
func (l *Live) ReloadTLS() error {
	l.mu.Lock()
	g := l.gen
	l.mu.Unlock()
	if g == nil {
		return ErrNothingToReload
	}
	r, ok := g.ac.Certs.(interface{ Reload() error })
	if !ok {
		return ErrNothingToReload
	}
	return r.Reload()
}
