package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fleet mode, the member side: every replica's controller runs these loops.
//   - watch: the stored header; each newer epoch is applied with the proxy's atomic route swap,
//     kept in the local copy (the file journal) and acknowledged; created-key notes of other
//     members join this controller's lists (the driver's catch-up and backfill copy them).
//   - heartbeat: about once a second, the member record (applied epoch, route, request rate,
//     own probation window and shadow counters) under the member's lease, then the member
//     list (status, fleet size, aggregated probation and shadow, phase barriers).
//   - campaign: one member is elected driver; it reloads the journal, resumes the migration
//     and is the only one that writes it (every write fenced) until it loses the lead.

// heartbeatEvery is the member record's period: at most one etcd write per replica per second
// in steady state.
const heartbeatEvery = time.Second

type member struct {
	c *Controller
	f Fleet

	driver  atomic.Bool
	applied atomic.Uint64 // newest epoch whose route this member applied (0: none yet)
	routeMu sync.Mutex    // orders route applications
	route   atomic.Pointer[[2]string]

	poke       chan struct{}
	members    atomic.Pointer[[]MemberInfo]
	reachable  atomic.Bool
	waiting    atomic.Pointer[[]string] // members a phase change waits for
	driverName atomic.Pointer[string]   // the elected driver, as last read
	held       atomic.Pointer[Header]   // a stored header the markers did not confirm yet
	requests   atomic.Uint64            // XKS requests observed, for requests/s
	rps        atomic.Uint64            // float64 bits

	started atomic.Bool
	address atomic.Pointer[string] // admin URL to advertise, when known only at run time
	wg      sync.WaitGroup
	// leadCtx is the driver's leadership context (nil when not driving); the runner lives in it.
	leadMu  sync.Mutex
	leadCtx context.Context
}

func newMember(c *Controller, f Fleet) *member {
	return &member{c: c, f: f, poke: make(chan struct{}, 1)}
}

func (m *member) isDriver() bool { return m.driver.Load() }

// ready: this member applied an epoch (from the store or its local copy).
func (m *member) ready() bool { return m.applied.Load() > 0 }

// loadFleet reads the shared journal at start. With the store unreachable it falls back to
// the local copy of the last epoch this replica applied; with neither, it is not ready. Whatever
// it serves, the backends' markers must agree with it (checkMarkers), as in a single process.
func (c *Controller) loadFleet() error {
	ctx, cancel := context.WithTimeout(c.baseCtx, 15*time.Second)
	defer cancel()
	local, err := c.file.Load(ctx)
	if err != nil {
		return err
	}
	snap, err := c.store.Load(ctx)
	if err == nil && snap == nil {
		if local != nil && local.Header.Epoch > 1 {
			return fmt.Errorf("%s holds no journal but this replica applied epoch %d (state %s, %s serving) according to %s: refusing to start the fleet again at epoch 1; restore the store, or move %s aside if this key store's fleet is to start afresh",
				c.store.Where(), local.Header.Epoch, local.Header.State, local.Header.Primary(), c.file.Where(), c.file.Where())
		}
		if snap, err = c.createFleetJournal(ctx); err != nil {
			return err
		}
	}
	if err != nil {
		if local == nil {
			c.log.Warn("fleet: store unreachable and no local copy of an applied epoch; not ready until the store answers",
				"store", c.store.Where(), "err", err)
			j, ferr := c.freshJournal()
			if ferr != nil {
				return ferr
			}
			j.KeyStore = "" // unknown until the store answers; the markers judge what it says
			return c.adopt(j)
		}
		j := journalFrom(local)
		if _, err := c.checkMarkers(ctx, j, true, c.file.Where()); err != nil {
			return err
		}
		c.log.Warn("fleet: store unreachable at start; serving the last applied epoch from the local copy",
			"store", c.store.Where(), "local", c.file.Where(), "epoch", j.Epoch, "state", j.State, "err", err)
		if err := c.adopt(j); err != nil {
			return err
		}
		c.fleet.applied.Store(j.Epoch)
		p, f := j.Route()
		c.fleet.route.Store(&[2]string{p, f})
		return nil
	}
	if local != nil && local.Header.Epoch > snap.Header.Epoch {
		return fmt.Errorf("%s is at epoch %d but this replica applied epoch %d (%s) according to %s: the store went back in time (restored from an old backup?); refusing to serve an older route",
			c.store.Where(), snap.Header.Epoch, local.Header.Epoch, local.Header.State, c.file.Where())
	}
	if local != nil && local.Header.KeyStore != "" && snap.Header.KeyStore != local.Header.KeyStore {
		return fmt.Errorf("%w: %s holds key store %q but this replica served key store %s according to %s: refusing to serve another key store's state; restore the store, or move %s aside if this replica joins another key store",
			ErrMarkerContradicts, c.store.Where(), snap.Header.KeyStore, local.Header.KeyStore, c.file.Where(), c.file.Where())
	}
	j := journalFrom(snap)
	// Legacy (no key store yet) is accepted as the markers allow; the driver gives it its
	// identity (drive).
	legacy := j.KeyStore == ""
	act, err := c.checkMarkers(ctx, j, true, c.store.Where())
	if err != nil {
		return err
	}
	if legacy {
		j.KeyStore = "" // only the elected driver writes the identity
	} else if act == markersNote {
		c.markers.note(markerOf(j))
	}
	if err := c.adopt(j); err != nil {
		return err
	}
	// The proxy is built on this epoch's route (InitialRoute): that is its first application.
	c.fleet.applied.Store(j.Epoch)
	p, f := j.Route()
	c.fleet.route.Store(&[2]string{p, f})
	return nil
}

// createFleetJournal writes the store's first journal: a fresh key store's, or one that goes on
// from what the backends' markers record (checkMarkers). Whichever member gets there first
// writes it; the others load it.
func (c *Controller) createFleetJournal(ctx context.Context) (*Snapshot, error) {
	j, err := c.freshJournal()
	if err != nil {
		return nil, err
	}
	act, err := c.checkMarkers(ctx, j, false, c.store.Where())
	if err != nil {
		return nil, err
	}
	if act == markersRecord {
		if err := c.markers.record(ctx, markerOf(j)); err != nil {
			return nil, fmt.Errorf("%w; refusing to start on a record the backends do not hold: retry once one of them answers", err)
		}
	}
	err = c.store.Save(ctx, Change{Header: &j.Header})
	switch {
	case err == nil:
		c.markers.note(markerOf(j))
		return j.snapshot(), nil
	case errors.Is(err, ErrFenced):
		return c.store.Load(ctx) // another member created it first
	}
	return nil, err
}

// verifyHeader is what a member checks before it applies an epoch read from the store: the same
// key store, and a record the backends hold (agreement). Someone who can write the store cannot
// make a member route where the backends never went. ErrMarkerUnreadable: the markers could not
// be read now (retried).
func (c *Controller) verifyHeader(ctx context.Context, h *Header) error {
	ks := c.book.header().KeyStore
	if ks != "" && h.KeyStore != ks {
		return fmt.Errorf("%w: the store names key store %q, this member serves key store %s", ErrMarkerContradicts, h.KeyStore, ks)
	}
	if h.KeyStore == "" {
		return c.verifyLegacyHeader(ctx, h)
	}
	var newest *Marker
	var failed []string
	for _, b := range []*backend{c.sides.src, c.sides.tgt} {
		m, err := c.readMarker(ctx, b, h.KeyStore)
		if err != nil {
			failed = append(failed, b.name+": "+truncate(err.Error()))
			continue
		}
		if m != nil && (newest == nil || m.Epoch > newest.Epoch) {
			newest = m
		}
	}
	if newest == nil {
		if len(failed) > 0 {
			return fmt.Errorf("%w: %s", ErrMarkerUnreadable, strings.Join(failed, "; "))
		}
		if h.Epoch == 1 && h.State == StateServing {
			return nil
		}
		return fmt.Errorf("%w: epoch %d (state %s) of key store %s is recorded on neither backend", ErrMarkerContradicts, h.Epoch, h.State, h.KeyStore)
	}
	if newest.Epoch > h.Epoch+1 {
		// Older than the backends' record: a newer header follows; not applied meanwhile.
		return fmt.Errorf("%w: epoch %d is older than epoch %d the backends record", ErrMarkerAhead, h.Epoch, newest.Epoch)
	}
	if err := agreement(h, newest); err != nil {
		if len(failed) > 0 && newest.Epoch < h.Epoch {
			// The backend that holds the newer record may be the one that cannot be read.
			return fmt.Errorf("%w: %s (%v)", ErrMarkerUnreadable, strings.Join(failed, "; "), err)
		}
		return err
	}
	return nil
}

// verifyLegacyHeader checks a header with no key store identity (an earlier release's store,
// before the driver gives it one): valid only while no backend holds a marker with an identity,
// and not older than the earlier release's markers.
func (c *Controller) verifyLegacyHeader(ctx context.Context, h *Header) error {
	f := c.discoverAll(ctx)
	if len(f.failed) > 0 {
		return fmt.Errorf("%w: %s", ErrMarkerUnreadable, strings.Join(f.failed, "; "))
	}
	for _, m := range f.all {
		if m.KeyStore != "" {
			return fmt.Errorf("%w: the store holds no key store identity but backend %s records %s", ErrMarkerContradicts, m.Backend, m.describe())
		}
	}
	if m := f.newest(""); m != nil && m.Epoch > h.Epoch {
		return fmt.Errorf("%w: epoch %d is older than epoch %d the backends record", ErrMarkerAhead, h.Epoch, m.Epoch)
	}
	return nil
}

// start launches the member loops (once); called by Resume when the proxy serves.
func (m *member) start() {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	ctx := m.c.baseCtx
	m.wg.Add(3)
	go func() { defer m.wg.Done(); m.f.Watch(ctx, m.onEvent) }()
	go func() { defer m.wg.Done(); m.heartbeatLoop(ctx) }()
	go func() { defer m.wg.Done(); m.campaignLoop(ctx) }()
	m.pokeNow()
}

// wait returns once the loops ended (the controller's base context is cancelled).
func (m *member) wait() { m.wg.Wait() }

func (m *member) pokeNow() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// apply swaps the proxy's route to epoch's, keeps the local copy and acknowledges. Epochs
// only move forward: a member never serves a route older than one it acknowledged.
func (m *member) apply(epoch uint64, primary, fallback string, st State) error {
	m.routeMu.Lock()
	defer m.routeMu.Unlock()
	if epoch < m.applied.Load() {
		return nil
	}
	if err := m.c.cfg.Router.SetRoute(epoch, primary, fallback); err != nil {
		return err
	}
	h := m.c.book.header()
	if h.Epoch == epoch {
		// The local copy is written before the acknowledgement: a restart without the store
		// serves this epoch, never an older one.
		if err := m.c.file.Save(context.Background(), Change{PrevEpoch: epoch, Header: &h}); err != nil {
			m.c.log.Error("fleet: writing the local copy of the applied epoch failed", "epoch", epoch, "err", err)
		}
	}
	m.route.Store(&[2]string{primary, fallback})
	m.applied.Store(epoch)
	m.c.m.fleetApplied.Set(float64(epoch))
	if !m.isDriver() {
		// The driver starts and stops its own shadowing; the others follow the state.
		if st == StateShadowing {
			m.c.shadow.start()
		} else {
			m.c.shadow.stop()
		}
	}
	m.pokeNow()
	return nil
}

// onEvent handles one change of the shared journal.
func (m *member) onEvent(ev WatchEvent) {
	c := m.c
	switch {
	case ev.Resync:
		if m.isDriver() {
			return // the driver holds the newest journal; its own writes are fenced
		}
		ctx, cancel := context.WithTimeout(c.baseCtx, 15*time.Second)
		snap, err := c.store.Load(ctx)
		cancel()
		if err != nil || snap == nil {
			return
		}
		// The header first: a new migration's header clears the previous one's records,
		// and must not clear the ones just loaded.
		m.onHeader(&snap.Header)
		c.book.resync(snap)
	case ev.Key != nil:
		if m.isDriver() || validKeyID(ev.Key.ID) != nil {
			return // the driver's own records are its journal already
		}
		c.book.takeKey(*ev.Key)
	case ev.Created != nil:
		if validKeyID(ev.Created.ID) != nil {
			return
		}
		c.book.takeCreated(*ev.Created)
	case ev.Header != nil:
		m.onHeader(ev.Header)
	}
}

func (m *member) onHeader(h *Header) {
	c := m.c
	if !h.State.valid() || h.Epoch == 0 || !validKeyStoreID(h.KeyStore) {
		return
	}
	if m.stale(h) {
		return
	}
	// Verified against the backends' markers before anything of it is taken; a header that
	// cannot be verified now waits (pending) and the heartbeat tries it again.
	ctx, cancel := context.WithTimeout(c.baseCtx, 3*c.cfg.MarkerTimeout)
	err := c.verifyHeader(ctx, h)
	cancel()
	if err != nil {
		m.hold(h, err)
		return
	}
	m.release(h)
	if !c.book.take(h, m.isDriver()) {
		return
	}
	p, f := h.Route()
	if err := m.apply(h.Epoch, p, f, h.State); err != nil {
		c.log.Error("fleet: applying the stored epoch failed", "epoch", h.Epoch, "err", err)
	} else {
		c.log.Info("fleet: epoch applied", "epoch", h.Epoch, "state", h.State, "primary", p, "fallback", f)
	}
	c.book.announce()
}

// stale handles a header this member need not take: an older epoch, or the driver's own
// current one (its route re-applied if the swap has not happened yet). A non-driver takes the
// current epoch's header again: the driver updates it between epochs (last error, options).
func (m *member) stale(h *Header) bool {
	c := m.c
	cur := c.book.header().Epoch
	switch {
	case h.Epoch > cur:
		return false
	case h.Epoch < cur:
		return true
	case !m.isDriver():
		return false
	}
	if m.applied.Load() < cur {
		p, f := h.Route()
		_ = m.apply(h.Epoch, p, f, h.State)
	}
	return true
}

// hold keeps a header the markers did not confirm, for the heartbeat to try again; it is logged
// once per epoch.
func (m *member) hold(h *Header, err error) {
	for {
		old := m.held.Load()
		if old != nil && old.Epoch > h.Epoch {
			return
		}
		if m.held.CompareAndSwap(old, h) {
			if old == nil || old.Epoch != h.Epoch {
				lv := slog.LevelError
				if errors.Is(err, ErrMarkerUnreadable) || errors.Is(err, ErrMarkerAhead) {
					lv = slog.LevelWarn
				}
				m.c.log.Log(context.Background(), lv, "fleet: not applying an epoch the backends' markers do not confirm; serving the last applied one",
					"epoch", h.Epoch, "state", h.State, "err", truncate(err.Error()))
				m.c.m.fleetRefused.Inc()
			}
			return
		}
	}
}

// release forgets a held header once h (as new or newer) is applied.
func (m *member) release(h *Header) {
	if old := m.held.Load(); old != nil && old.Epoch <= h.Epoch {
		m.held.CompareAndSwap(old, nil)
	}
}

func (m *member) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	last, lastN := m.c.cfg.Now(), m.requests.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.poke:
		}
		now := m.c.cfg.Now()
		if d := now.Sub(last); d >= heartbeatEvery/2 {
			n := m.requests.Load()
			m.rps.Store(floatBits(float64(n-lastN) / d.Seconds()))
			last, lastN = now, n
		}
		m.heartbeat(ctx, now)
		if h := m.held.Load(); h != nil {
			m.onHeader(h)
		}
	}
}

func (m *member) heartbeat(ctx context.Context, now time.Time) {
	c := m.c
	r := m.route.Load()
	if r == nil {
		r = &[2]string{}
	}
	rec := MemberRecord{
		Address:      derefOr(m.address.Load()),
		AppliedEpoch: m.applied.Load(), Primary: r[0], Fallback: r[1], Heartbeat: now.UTC(),
		RequestsPerSec: bitsFloat(m.rps.Load()),
		Probation:      c.probation.local(now),
		Shadow:         c.shadow.snapshot(),
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := m.f.Publish(cctx, rec)
	var ms []MemberInfo
	if err == nil {
		ms, err = m.f.Members(cctx)
	}
	if err != nil {
		if m.reachable.Swap(false) {
			c.log.Warn("fleet: store unreachable; serving the last applied epoch, no phase change until it is back",
				"epoch", rec.AppliedEpoch, "err", err)
		}
		c.m.fleetStoreUp.Set(0)
		return
	}
	if !m.reachable.Swap(true) {
		c.log.Info("fleet: store reachable", "store", c.store.Where())
	}
	c.m.fleetStoreUp.Set(1)
	m.members.Store(&ms)
	c.m.setMembers(ms)
	if name, _, err := m.f.Driver(cctx); err == nil {
		m.driverName.Store(&name)
	}
	if c.fleet.ready() {
		return
	}
	// Not ready yet (started without store nor local copy): the store answers now.
	lctx, lcancel := context.WithTimeout(ctx, 15*time.Second)
	snap, err := c.store.Load(lctx)
	if err == nil && snap != nil {
		err = c.verifyHeader(lctx, &snap.Header)
		if err != nil {
			lcancel()
			m.hold(&snap.Header, err)
			return
		}
	}
	lcancel()
	if err == nil && snap != nil {
		if err := c.adopt(journalFrom(snap)); err != nil {
			c.log.Error("fleet: the stored journal does not fit the configuration", "err", err)
			return
		}
		p, f := snap.Header.Route()
		_ = m.apply(snap.Header.Epoch, p, f, snap.Header.State)
	}
}

func floatBits(f float64) uint64 { return uint64(f * 1000) }
func bitsFloat(b uint64) float64 { return float64(b) / 1000 }

// campaignLoop stands for election until ctx ends; while elected, this member drives.
func (m *member) campaignLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if !m.ready() {
			// A member that has not applied an epoch cannot judge the migration.
			select {
			case <-ctx.Done():
				return
			case <-time.After(heartbeatEvery):
			}
			continue
		}
		lead, err := m.f.Campaign(ctx)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(heartbeatEvery):
			}
			continue
		}
		m.drive(lead)
	}
}

// drive runs the migration while lead lives.
func (m *member) drive(lead context.Context) {
	c := m.c
	ctx, cancel := context.WithTimeout(lead, 30*time.Second)
	snap, err := c.store.Load(ctx)
	cancel()
	if err != nil || snap == nil {
		c.log.Error("fleet: elected but the journal cannot be read; resigning", "err", err)
		return
	}
	vctx, vcancel := context.WithTimeout(lead, 3*c.cfg.MarkerTimeout)
	err = c.verifyHeader(vctx, &snap.Header)
	vcancel()
	if errors.Is(err, ErrMarkerUnreadable) {
		c.log.Warn("fleet: elected but the backends' markers cannot be read to confirm the journal; resigning, will stand again", "err", err)
		return
	}
	if err == nil {
		err = c.adopt(journalFrom(snap))
	}
	if err != nil {
		c.log.Error("fleet: elected but the stored journal does not fit the configuration or the backends' markers; not driving", "err", err)
		<-lead.Done()
		return
	}
	if err := c.giveKeyStoreIdentity(lead); err != nil {
		c.log.Warn("fleet: the store's journal has no key store identity yet (an earlier release's); will retry when next elected", "err", err)
	}
	m.leadMu.Lock()
	m.leadCtx = lead
	m.leadMu.Unlock()
	m.driver.Store(true)
	c.m.fleetDriver.Set(1)
	c.m.fleetDriverChanges.Inc()
	c.log.Info("fleet: driving the migration", "member", m.f.Member(), "epoch", snap.Header.Epoch, "state", snap.Header.State)
	p, f := snap.Header.Route()
	if err := m.apply(snap.Header.Epoch, p, f, snap.Header.State); err != nil {
		c.log.Error("fleet: applying the stored epoch failed", "err", err)
	}
	if err := c.resumeLocal(lead); err != nil {
		c.log.Error("fleet: resuming the migration failed", "err", err)
	}
	<-lead.Done()
	c.log.Warn("fleet: lost the lead; no longer driving", "member", m.f.Member())
	m.driver.Store(false)
	c.m.fleetDriver.Set(0)
	m.leadMu.Lock()
	m.leadCtx = nil
	m.leadMu.Unlock()
	// The runner lives in lead: it has stopped or is stopping.
	if err := c.lock(context.Background()); err == nil {
		c.stopRunner()
		c.unlock()
	}
	c.shadow.stop()
}

// giveKeyStoreIdentity is the driver's upgrade of an earlier release's store: a key store identity,
// recorded on the backends first, then in the store's header (same epoch, fenced), then the old
// markers removed. Members take the header as an update of the current epoch.
func (c *Controller) giveKeyStoreIdentity(ctx context.Context) error {
	h := c.book.header()
	if h.KeyStore != "" {
		return nil
	}
	ks, err := newKeyStoreID()
	if err != nil {
		return err
	}
	if err := c.book.identify(ctx, ks); err != nil {
		return err
	}
	c.log.Info("fleet: the key store has its identity now", "key_store", ks, "epoch", h.Epoch)
	c.removeLegacy(ctx)
	return nil
}

// runContext is the context a runner lives in: the controller's, or the driver's lead.
func (c *Controller) runContext() context.Context {
	if c.fleet == nil {
		return c.baseCtx
	}
	c.fleet.leadMu.Lock()
	defer c.fleet.leadMu.Unlock()
	if c.fleet.leadCtx != nil {
		return c.fleet.leadCtx
	}
	ctx, cancel := context.WithCancel(c.baseCtx)
	cancel() // not driving: a runner must not start
	return ctx
}

// barrier waits until every registered member, live or not, acknowledged epoch: a step that
// changes where a key may be served is taken only once nobody can still serve an older route.
// A member whose lease expired is waited for (status names it) until it returns or an operator
// forgets it.
func (c *Controller) barrier(ctx context.Context, epoch uint64) error {
	if c.fleet == nil {
		return nil
	}
	m := c.fleet
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	logged := time.Time{}
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ms, err := m.f.Members(cctx)
		cancel()
		if err == nil {
			var behind []string
			self := false
			for _, x := range ms {
				self = self || x.Name == m.f.Member()
				if x.AppliedEpoch < epoch {
					behind = append(behind, x.Name)
				}
			}
			if !self && m.applied.Load() < epoch {
				behind = append(behind, m.f.Member())
			}
			sort.Strings(behind)
			m.waiting.Store(&behind)
			if len(behind) == 0 {
				return nil
			}
			if time.Since(logged) > 10*time.Second {
				logged = time.Now()
				c.log.Warn("fleet: waiting for members to acknowledge the epoch", "epoch", epoch, "members", behind)
			}
		}
		select {
		case <-ctx.Done():
			w := m.waiting.Load()
			if w != nil && len(*w) > 0 {
				return fmt.Errorf("fleet: waiting for %v to acknowledge epoch %d: %w", *w, epoch, ctx.Err())
			}
			return fmt.Errorf("fleet: store unreachable while waiting for acknowledgements of epoch %d: %w", epoch, ctx.Err())
		case <-t.C:
		}
	}
}

// peers returns the other live members' last published records.
func (m *member) peers() []MemberInfo {
	p := m.members.Load()
	if p == nil {
		return nil
	}
	var out []MemberInfo
	for _, x := range *p {
		if x.Live && x.Name != m.f.Member() {
			out = append(out, x)
		}
	}
	return out
}

// peerProbation are the other live members' probation windows.
func (m *member) peerProbation() []ProbationStats {
	peers := m.peers()
	out := make([]ProbationStats, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.Probation)
	}
	return out
}

// peerShadow are the other live members' shadow counters.
func (m *member) peerShadow() []ShadowStats {
	peers := m.peers()
	out := make([]ShadowStats, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.Shadow)
	}
	return out
}

// FleetSize is the number of live members (1 without a fleet): health's xksProxyFleetSize.
func (c *Controller) FleetSize() int {
	if c.fleet == nil {
		return 1
	}
	n := 0
	if p := c.fleet.members.Load(); p != nil {
		for _, x := range *p {
			if x.Live {
				n++
			}
		}
	}
	return max(n, 1)
}

// Ready reports whether this replica may serve: in fleet mode, once it applied an epoch (from
// the store or its local copy). Without a fleet, always.
func (c *Controller) Ready() bool { return c.fleet == nil || c.fleet.ready() }

// IsDriver reports whether this replica drives the migration (always true without a fleet).
func (c *Controller) IsDriver() bool { return c.fleet == nil || c.fleet.isDriver() }

// Driver names the elected driver and its advertised admin address (fleet mode).
func (c *Controller) Driver(ctx context.Context) (name, address string, err error) {
	if c.fleet == nil {
		return "", "", nil
	}
	return c.fleet.f.Driver(ctx)
}

// Forget removes a member whose lease expired from the fleet, so phase changes stop waiting
// for it. Refused while it is alive.
func (c *Controller) Forget(ctx context.Context, name string) error {
	if c.fleet == nil {
		return fmt.Errorf("%w: not in fleet mode", ErrWrongState)
	}
	if err := c.fleet.f.Forget(ctx, name); err != nil {
		return err
	}
	c.log.Warn("fleet: member forgotten by the operator", "member", name)
	c.fleet.pokeNow()
	return nil
}

func (s ShadowStats) add(o ShadowStats) ShadowStats {
	return ShadowStats{Match: s.Match + o.Match, Mismatch: s.Mismatch + o.Mismatch, Errors: s.Errors + o.Errors, Dropped: s.Dropped + o.Dropped}
}

// mustDrive refuses control operations on a member that is not the driver.
func (c *Controller) mustDrive() error {
	if c.fleet != nil && !c.fleet.isDriver() {
		return ErrNotDriver
	}
	return nil
}

// curEpoch is the journal's epoch.
func (c *Controller) curEpoch() uint64 {
	return c.book.header().Epoch
}

// FleetStatus is the fleet part of Status.
type FleetStatus struct {
	Member         string         `json:"member"`
	Driver         string         `json:"driver,omitempty"`
	Driving        bool           `json:"driving"`
	StoreReachable bool           `json:"store_reachable"`
	Ready          bool           `json:"ready"`
	AppliedEpoch   uint64         `json:"applied_epoch"`
	Members        []MemberStatus `json:"members"`
	// WaitingFor names the members a phase change waits for (behind on the epoch, or expired).
	WaitingFor []string `json:"waiting_for,omitempty"`
}

// MemberStatus is one member as `cutover status` lists it.
type MemberStatus struct {
	Name           string        `json:"name"`
	AppliedEpoch   uint64        `json:"applied_epoch"`
	Primary        string        `json:"primary"`
	Fallback       string        `json:"fallback,omitempty"`
	Live           bool          `json:"live"`
	LeaseAge       time.Duration `json:"lease_age_ns"` // since its last heartbeat
	RequestsPerSec float64       `json:"requests_per_sec"`
	Driver         bool          `json:"driver,omitempty"`
	Version        string        `json:"version,omitempty"`
}

func (c *Controller) fleetStatus(now time.Time) *FleetStatus {
	if c.fleet == nil {
		return nil
	}
	m := c.fleet
	fs := &FleetStatus{Member: m.f.Member(), Driving: m.isDriver(), StoreReachable: m.reachable.Load(),
		Ready: m.ready(), AppliedEpoch: m.applied.Load()}
	if d := m.driverName.Load(); d != nil {
		fs.Driver = *d
	}
	if fs.Driving {
		fs.Driver = fs.Member
	}
	if p := m.members.Load(); p != nil {
		for _, x := range *p {
			ms := MemberStatus{Name: x.Name, AppliedEpoch: x.AppliedEpoch, Primary: x.Primary, Fallback: x.Fallback,
				Live: x.Live, RequestsPerSec: x.RequestsPerSec, Driver: x.Name == fs.Driver, Version: x.Version}
			if !x.Heartbeat.IsZero() {
				ms.LeaseAge = max(0, now.Sub(x.Heartbeat))
			}
			fs.Members = append(fs.Members, ms)
		}
	}
	if w := m.waiting.Load(); w != nil && c.curState().inMigration() {
		fs.WaitingFor = *w
	}
	return fs
}

func derefOr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// SetAdminAddress sets the admin URL this member advertises for forwarded operator calls, when
// it is known only once the admin listener is bound (a configured address takes precedence in
// the store).
func (c *Controller) SetAdminAddress(u string) {
	if c.fleet != nil {
		c.fleet.address.Store(&u)
	}
}
