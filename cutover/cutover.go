// Package cutover migrates every XKS key from one Cosmian KMS backend to
// another while the proxy keeps serving: copy in memory, prove the target
// decrypts what the source encrypted, switch the route with fallback, watch a
// probation window, finalize or roll back. Every transition bumps an epoch and
// is journaled before the route changes, so a restarted proxy never routes to
// a backend its journal does not name.
package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/time/rate"
)

// State is a state of the migration state machine.
type State string

// States. Every state not listed as routing to the target routes to the source.
const (
	StateServing      State = "serving"       // no migration: source serves
	StateCopying      State = "copying"       // copying keys source → target
	StateCopyFailed   State = "copy_failed"   // some key could not be copied: blocked, source serves
	StateVerifying    State = "verifying"     // cross-checking every key
	StateVerifyFailed State = "verify_failed" // some key failed verification: blocked, source serves
	StateVerified     State = "verified"      // ready to switch
	StateShadowing    State = "shadowing"     // mirroring live Decrypts to the target
	StateSwitched     State = "switched"      // target serves, source is the fallback (probation inside)
	StateFinalized    State = "finalized"     // target serves alone
	StateRollingBack  State = "rolling_back"  // source serves, target is the fallback until the last copy-back pass
	StateRolledBack   State = "rolled_back"   // back on the source, with a reason
)

func (s State) valid() bool {
	switch s {
	case StateServing, StateCopying, StateCopyFailed, StateVerifying, StateVerifyFailed,
		StateVerified, StateShadowing, StateSwitched, StateFinalized, StateRollingBack, StateRolledBack:
		return true
	}
	return false
}

var allStates = []State{StateServing, StateCopying, StateCopyFailed, StateVerifying, StateVerifyFailed,
	StateVerified, StateShadowing, StateSwitched, StateFinalized, StateRollingBack, StateRolledBack}

// InMigration reports whether s belongs to a migration that has not ended.
func (s State) InMigration() bool { return s.inMigration() }

// inMigration reports whether s belongs to a migration that has not ended.
func (s State) inMigration() bool {
	switch s {
	case StateServing, StateFinalized, StateRolledBack:
		return false
	}
	return true
}

// StartOptions configure one migration run.
type StartOptions struct {
	// Shadow mirrors live Decrypts to the target for this long before switching; 0 takes
	// Config.Shadow.Duration (the configured default, itself 0 for none).
	Shadow time.Duration `json:"shadow"`
	// NoShadow switches without shadowing whatever Config.Shadow.Duration says.
	NoShadow bool `json:"no_shadow,omitempty"`
	// AutoSwitch switches as soon as verification (and shadowing) passed.
	AutoSwitch bool `json:"auto_switch"`
	// AutoFinalize finalizes once probation passed.
	AutoFinalize bool `json:"auto_finalize"`
	// Source and Target name the pair to migrate; empty: the controller's own
	// (Config.Source and Config.Target). A controller migrates one pair: another is refused
	// with ErrOtherPair, and the app builds a controller for that pair.
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

// Pair reports the source and target backends this controller migrates between.
func (c *Controller) Pair() (source, target string) { return c.sides.src.name, c.sides.tgt.name }

// checkPair refuses a pair other than the controller's (empty names take the controller's).
func (s *sides) checkPair(source, target string) error {
	src, tgt := s.src.name, s.tgt.name
	if (source == "" || source == src) && (target == "" || target == tgt) {
		return nil
	}
	return fmt.Errorf("%w: asked for %s → %s, this controller migrates %s → %s", ErrOtherPair,
		orDefault(source, src), orDefault(target, tgt), src, tgt)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FinalizeOptions configure Finalize.
type FinalizeOptions struct {
	// RevokeSourceGrants revokes, on the source, the access rights of every migrated key.
	RevokeSourceGrants bool `json:"revoke_source_grants"`
	// Force finalizes although probation has not passed; Reason (required with Force) is
	// logged and kept in the journal.
	Force  bool   `json:"force,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Controller runs migrations. All methods are safe for concurrent use.
//
// Its life has three steps: New validates the configuration and builds the parts (no I/O, no
// goroutine); Load reads the journal and judges it against the backends' markers (network calls)
// and returns the route the proxy is to be built on; Run(ctx, proxy) owns every goroutine of the
// migration (the runner, the flusher, the marker writer, the fleet member's loops, the shadow's
// workers, probation's second opinions) until ctx ends, and returns once they all have. Control
// operations wait for Run to start and are refused once it returned.
type Controller struct {
	cfg       Config
	log       *slog.Logger
	m         *metrics
	store     Storage      // the journal: file (one process) or fleet store
	file      *fileStorage // the file journal; in fleet mode the local copy of the applied epoch
	book      *ledger      // the journal in memory: every read and write of it
	markers   *markerWriter
	control   *control // Run's context, goroutines, proxy; the control lock; the runner
	fleet     *member  // nil: one process
	sides     *sides
	copier    *copier
	verifier  *verifier
	probe     *storageProbe
	rights    *rightsSync
	shadow    *shadower
	probation *probation
}

// New validates cfg and builds a controller. It reads nothing and starts nothing: Load reads the
// journal, Run runs the migration.
func New(cfg Config) (*Controller, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry, cfg.Fleet != nil)
	if err != nil {
		return nil, err
	}
	pm, err := newPaceMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "cutover"), m: m,
		file: newFileStorage(cfg.JournalPath), control: newControl()}
	c.store = c.file
	if cfg.Fleet != nil {
		c.store = cfg.Fleet
	}
	c.sides = &sides{
		src: &backend{name: cfg.Source.Name, k: cfg.Source.KMIP, acl: cfg.Source.ACL},
		tgt: &backend{name: cfg.Target.Name, k: cfg.Target.KMIP, acl: cfg.Target.ACL},
		sel: cfg.Select, pace: newPace(cfg.Pace, pm), log: c.log,
	}
	c.markers = newMarkerWriter(&markerBook{src: c.sides.src, tgt: c.sides.tgt, timeout: cfg.MarkerTimeout, log: c.log, pace: c.sides.pace})
	c.book = newLedger(c.log, m, cfg.Now, c.store, c.markers, 2*cfg.MarkerTimeout)
	c.sides.book = c.book
	c.probe = &storageProbe{sides: c.sides}
	c.rights = &rightsSync{sides: c.sides, base: newRightsBase(), lim: rate.NewLimiter(rate.Limit(cfg.RightsSync.Rate), 1),
		interval: cfg.RightsSync.Interval, m: m, now: cfg.Now}
	c.copier = &copier{sides: c.sides, rights: c.rights, probe: c.probe, grantEveryone: cfg.GrantEveryoneForServiceKeys}
	c.verifier = &verifier{sides: c.sides, probe: c.probe}
	c.shadow = newShadower(cfg, c.control, m, c.log)
	c.probation = newProbation(cfg, c.book, c.control, m)
	if cfg.Fleet != nil {
		c.fleet = newMember(cfg.Fleet, c.book, c.markers, c, c.shadow, c.probation, &c.control.link, c.file, m, c.log, cfg.Now)
		c.probation.peers = c.fleet.view.peerProbation
		c.shadow.peers = c.fleet.view.peerShadow
		c.fleet.pace, c.sides.pace.peers = c.sides.pace, c.fleet.view.peerPace
	}
	return c, nil
}

// Route is what the proxy serves: the epoch, the primary backend and the fallback ("" for none).
type Route struct {
	Epoch             uint64
	Primary, Fallback string
}

// errLoaded: Load was called again.
var errLoaded = errors.New("cutover: Load called twice")

// Load reads the journal (the file, or the fleet store with the local copy as a fallback) and
// serves it only if the backends' markers agree with it; it resolves the backends' access-control
// generations first. It returns the route the proxy is to be built on (the journal decides it,
// not the configuration), zero for a fleet member that has no epoch yet (not ready). It leaves no
// goroutine running; on error nothing stays open.
func (c *Controller) Load(ctx context.Context) (Route, error) {
	if c.book.loaded() {
		return Route{}, errLoaded
	}
	c.sides.detectGenerations(ctx)
	ld := &loader{src: c.cfg.Source.Name, tgt: c.cfg.Target.Name, store: c.store, file: c.file, markers: c.markers,
		book: c.book, log: c.log, now: c.cfg.Now}
	var err error
	applied := true
	if c.fleet != nil {
		if applied, err = ld.loadFleet(ctx); err == nil && applied {
			h := c.book.header()
			p, f := h.Route()
			c.fleet.loaded(h.Epoch, p, f)
		}
	} else {
		err = ld.loadJournal(ctx)
	}
	c.markers.settle() // the writes Load recorded: none outlives it
	if err != nil {
		c.file.close()
		return Route{}, err
	}
	if !applied {
		return Route{}, nil
	}
	h := c.book.header()
	p, f := h.Route()
	return Route{Epoch: h.Epoch, Primary: p, Fallback: f}, nil
}

// Run runs the migration until ctx ends, driving p (the proxy built on Load's route): it resumes
// a journaled run (in fleet mode: the member's loops start, and the elected driver resumes),
// writes the journal's progress, records the epochs on the backends, and returns once every
// goroutine it started has ended, the last progress written and the journal closed.
func (c *Controller) Run(ctx context.Context, p Proxy) error {
	if !c.book.loaded() {
		return errors.New("cutover: Run before Load")
	}
	if p == nil {
		return errors.New("cutover: Run needs the proxy")
	}
	if err := c.control.begin(ctx, p); err != nil {
		return err
	}
	markersDone := make(chan struct{})
	go func() { defer close(markersDone); c.markers.loop() }()
	c.control.spawn(c.flushLoop)
	c.sides.pace.setPaused(c.book.header().Paused) // before anything resumes
	c.control.spawn(func(ctx context.Context) {
		c.sides.pace.loop(ctx, func() bool { return c.book.state().inMigration() }, func() bool { return c.book.header().Paused })
	})
	if c.fleet != nil {
		c.fleet.run(c.control)
	} else if err := c.resume(ctx); err != nil {
		c.log.Error("cutover: resuming the journaled migration failed", "err", err)
	}
	<-ctx.Done()
	c.control.end()
	c.shadow.stop()
	err := c.book.flush(c.fleet.writesJournal())
	c.markers.close()
	<-markersDone
	c.file.close()
	return err
}

// Close releases what Load opened, for a controller that will not Run (Run releases it itself
// when it returns). It must not be called while Run runs.
func (c *Controller) Close() error {
	c.markers.settle()
	c.file.close()
	return nil
}

// transition takes the move ev names in the state table (ledger.move: the backends record it,
// then the journal), and only then applies its route; waiters wake once it is applied (or
// refused).
func (c *Controller) transition(_ ctlHeld, ev event, mutate func(h *Header)) error {
	mv, err := c.book.move(ev, mutate)
	if err != nil {
		return err
	}
	err = c.applyRoute(mv.epoch, mv.primary, mv.fallback, mv.to)
	c.book.announce()
	if err != nil {
		return fmt.Errorf("cutover: journaled %s (epoch %d) but the route was not applied: %w", mv.to, mv.epoch, err)
	}
	return nil
}

// applyRoute swaps the proxy's route to an epoch's; in fleet mode the member also keeps the local
// copy of that epoch and acknowledges it.
func (c *Controller) applyRoute(epoch uint64, primary, fallback string, st State) error {
	if c.fleet != nil {
		return c.fleet.apply(epoch, primary, fallback, st)
	}
	return c.control.link.setRoute(epoch, primary, fallback)
}

// writesJournal reports whether this process writes the journal's header and key records (a
// fleet member that does not drive writes only its created-key notes).
func (m *member) writesJournal() bool { return m == nil || m.isDriver() }

// flushLoop writes per-key progress at most every 200ms: a restart loses at most that much
// progress, and re-copying a key is idempotent (it is found identical on the target and
// skipped). It draws the progress bar and logs the progress every 2 s while copying or verifying.
func (c *Controller) flushLoop(ctx context.Context) {
	bar := newProgressBar(c.cfg.Progress)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			bar.finish()
			return
		case <-t.C:
		}
		if err := c.book.flush(c.fleet.writesJournal()); err != nil {
			c.log.Error("journal flush failed", "err", err)
		}
		st := c.Status()
		bar.draw(&st)
		if (st.State == StateCopying || st.State == StateVerifying) && time.Since(lastLog) >= 2*time.Second {
			lastLog = time.Now()
			c.log.Info("cutover progress", "state", st.State, "epoch", st.Epoch, "total", st.Keys.Total,
				"copied", st.Keys.Copied, "skipped", st.Keys.Skipped, "verified", st.Keys.Verified,
				"conflicts", st.Keys.Conflicts, "errors", st.Keys.Errors)
		}
	}
}

// Wait blocks until the state is one of states, or ctx ends.
func (c *Controller) Wait(ctx context.Context, states ...State) (Status, error) {
	s, err := c.book.wait(ctx, states)
	if err != nil {
		return c.Status(), fmt.Errorf("cutover: waiting for %v (state is %s): %w", states, s, err)
	}
	return c.Status(), nil
}
