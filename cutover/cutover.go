// Package cutover migrates every XKS key from one Cosmian KMS backend to
// another while the proxy keeps serving: copy in memory, prove the target
// decrypts what the source encrypted, switch the route with fallback, watch a
// probation window, finalize or roll back. Every transition bumps an epoch and
// is journaled before the route changes, so a restarted proxy never routes to
// a backend its journal does not name.
package cutover

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/xksproxy/xksproxy/xks"
)

// Router is the proxy's atomically swapped route table.
type Router interface {
	SetRoute(epoch uint64, primary, fallback string) error
}

// Forwarder sends one XKS call to one named backend through the same path as
// live traffic; resp is the spec-normalised reply body.
type Forwarder interface {
	Forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (status int, resp []byte, err error)
}

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
type Controller struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	store    Storage      // the journal: file (one process) or fleet store
	file     *fileStorage // the file journal; in fleet mode the local copy of the applied epoch
	book     *ledger      // the journal in memory: every read and write of it
	fleet    *member      // nil: one process
	bar      *progressBar
	markers  *markerWriter
	sides    *sides
	copier   *copier
	verifier *verifier
	probe    *storageProbe
	rights   *rightsSync

	// ctl serialises control operations (start, switch, rollback, finalize
	// and the runner's own transitions); acquired with a context so a
	// cancelled runner never deadlocks an operator's rollback.
	ctl chan struct{}

	runMu   sync.Mutex
	running bool
	runStop context.CancelFunc
	runDone chan struct{}

	baseCtx    context.Context
	baseCancel context.CancelFunc
	flushDone  chan struct{}

	shadow    *shadower
	probation *probation
}

// New loads (or creates) the journal and returns a controller. It starts no
// migration work; call Resume to continue an interrupted run.
func New(cfg Config) (*Controller, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "cutover"),
		m:    m,
		file: newFileStorage(cfg.JournalPath),
		ctl:  make(chan struct{}, 1),
		bar:  newProgressBar(cfg.Progress),
	}
	c.sides = &sides{
		src: &backend{name: cfg.Source.Name, k: cfg.Source.KMIP, acl: cfg.Source.ACL},
		tgt: &backend{name: cfg.Target.Name, k: cfg.Target.KMIP, acl: cfg.Target.ACL},
		sel: cfg.Select, workers: cfg.Concurrency, log: c.log,
	}
	c.probe = &storageProbe{sides: c.sides}
	c.rights = &rightsSync{sides: c.sides, base: newRightsBase(), lim: rate.NewLimiter(rate.Limit(cfg.RightsSyncRate), 1),
		interval: cfg.RightsSyncInterval, m: m, now: cfg.Now}
	c.copier = &copier{sides: c.sides, rights: c.rights, probe: c.probe, grantEveryone: cfg.GrantEveryoneForServiceKeys}
	c.verifier = &verifier{sides: c.sides, probe: c.probe}
	c.shadow = newShadower(cfg, m, c.log)
	c.store = c.file
	if cfg.Fleet != nil {
		c.store = cfg.Storage
	}
	c.baseCtx, c.baseCancel = context.WithCancel(context.Background())
	c.sides.detectGenerations(c.baseCtx)
	c.markers = newMarkerWriter(&markerBook{src: c.sides.src, tgt: c.sides.tgt, timeout: cfg.MarkerTimeout, log: c.log})
	c.markers.run()
	c.book = newLedger(c.log, m, cfg.Now, c.store, c.markers, 2*cfg.MarkerTimeout)
	c.sides.book = c.book
	c.probation = newProbation(cfg, c.book, m)
	ld := &loader{src: cfg.Source.Name, tgt: cfg.Target.Name, store: c.store, file: c.file, markers: c.markers,
		book: c.book, log: c.log, now: cfg.Now}
	if cfg.Fleet != nil {
		c.fleet = newMember(c, cfg.Fleet)
		c.probation.peers = c.fleet.peerProbation
		c.shadow.peers = c.fleet.peerShadow
		var applied bool
		if applied, err = ld.loadFleet(c.baseCtx); err == nil && applied {
			h := c.book.header()
			p, f := h.Route()
			c.fleet.applied.Store(h.Epoch)
			c.fleet.route.Store(&[2]string{p, f})
		}
	} else {
		err = ld.loadJournal(c.baseCtx)
	}
	if err != nil {
		c.baseCancel()
		c.markers.close()
		c.file.close()
		return nil, err
	}
	c.flushDone = make(chan struct{})
	go c.flusher()
	return c, nil
}

// InitialRoute is what the proxy must serve at start-up according to the journal.
func (c *Controller) InitialRoute() (epoch uint64, primary, fallback string) {
	if !c.Ready() {
		return 0, "", "" // fleet member with no epoch yet: not ready (see Ready)
	}
	h := c.book.header()
	p, f := h.Route()
	return h.Epoch, p, f
}

// Close stops background work (the journal is already durable).
func (c *Controller) Close() error {
	c.baseCancel()
	c.runMu.Lock()
	done := c.runDone
	c.runMu.Unlock()
	if done != nil {
		<-done
	}
	c.shadow.stop()
	c.probation.waitRechecks()
	<-c.flushDone
	c.markers.close()
	if c.fleet != nil {
		c.fleet.wait()
	}
	err := c.book.flush(c.writesJournal())
	c.file.close()
	return err
}

// lock acquires the control lock or gives up when ctx ends.
func (c *Controller) lock(ctx context.Context) error {
	select {
	case c.ctl <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Controller) unlock() { <-c.ctl }

// curState is the state, without a lock.
func (c *Controller) curState() State { return c.book.state() }

// transition takes the move ev names in the state table (ledger.move: the backends record it,
// then the journal), and only then applies its route; waiters wake once it is applied (or
// refused). The caller holds ctl.
func (c *Controller) transition(ev event, mutate func(h *Header)) error {
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

// recordMarker writes a transition's marker on the backends before it is journaled, bounded by
// the marker timeout.
func (c *Controller) recordMarker(m *Marker) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.baseCtx), 2*c.cfg.MarkerTimeout)
	defer cancel()
	return c.markers.record(ctx, m)
}

// applyRoute swaps the proxy's route to an epoch's; in fleet mode it also keeps the local copy
// of that epoch and acknowledges it.
func (c *Controller) applyRoute(epoch uint64, primary, fallback string, st State) error {
	if c.fleet != nil {
		return c.fleet.apply(epoch, primary, fallback, st)
	}
	return c.cfg.Router.SetRoute(epoch, primary, fallback)
}

// writesJournal reports whether this process writes the journal's header and key records (a
// fleet member that does not drive writes only its created-key notes).
func (c *Controller) writesJournal() bool { return c.fleet == nil || c.fleet.isDriver() }

// flusher writes per-key progress at most every 200ms: a restart loses at
// most that much progress, and re-copying a key is idempotent (it is found
// identical on the target and skipped).
func (c *Controller) flusher() {
	defer close(c.flushDone)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-c.baseCtx.Done():
			c.bar.finish()
			return
		case <-t.C:
		}
		if err := c.book.flush(c.writesJournal()); err != nil {
			c.log.Error("journal flush failed", "err", err)
		}
		st := c.Status()
		c.bar.draw(&st)
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
