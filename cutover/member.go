package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Fleet mode, the member side: every replica's controller runs these loops.
//   - watch: the stored header; each newer epoch, once the backends' markers confirm it, is
//     applied with the proxy's atomic route swap, kept in the local copy (the file journal) and
//     acknowledged; key records and created-key notes of the driver and the other members join
//     this member's ledger (the driver's catch-up and backfill copy them).
//   - heartbeat: about once a second, the member record (applied epoch, route, request rate,
//     own probation window and shadow counters) under the member's lease, then the member
//     list (status, fleet size, aggregated probation and shadow, phase barriers).
//   - campaign: one member is elected driver; it reloads the journal, resumes the migration
//     and is the only one that writes it (every write fenced) until it loses the lead.
//
// A member is a peer of the controller's parts, not a view into the controller: it reaches the
// journal through peerLedger, the markers through markerChecks, and asks the controller only to
// adopt a stored journal and to start or stop driving (driverHost).

// heartbeatEvery is the member record's period: at most one etcd write per replica per second
// in steady state.
const heartbeatEvery = time.Second

// peerLedger is what a member reads and writes of the journal (the ledger).
type peerLedger interface {
	header() Header
	take(h *Header, driver bool) bool
	takeKey(ev KeyEvent)
	takeCreated(n CreatedKey)
	resync(snap *Snapshot)
	announce()
	identify(ctx context.Context, ks string) error
}

// markerChecks is what a member asks of the backends' markers.
type markerChecks interface {
	verifyHeader(ctx context.Context, h *Header, ks string) error
	removeLegacy(ctx context.Context)
}

// driverHost is what a member asks of the controller: to take a journal read from the store as
// its own (checked against the configuration), to run the migration in the lead's context, and
// to stop it when the lead is lost.
type driverHost interface {
	adopt(j *journal) error
	// firstJournal writes the store's first journal (judged against the backends' markers, as
	// at start), or loads the one another member wrote first.
	firstJournal(ctx context.Context) (*Snapshot, error)
	resume(lead context.Context) error
	stopDriving()
}

type member struct {
	f         Fleet
	book      peerLedger
	markers   markerChecks
	host      driverHost
	shadow    *shadower  // followed by a member that does not drive; its counters are published
	probation *probation // its window is published
	pace      *pace      // its live signals are published
	log       *slog.Logger
	m         *metrics
	now       func() time.Time
	epochs    applier                // the epochs this member applied
	view      roster                 // the fleet as last read
	lead      lead                   // while this member drives
	held      atomic.Pointer[Header] // a stored header the markers did not confirm yet
	address   atomic.Pointer[string] // admin URL to advertise, when known only at run time
	poke      chan struct{}
}

func newMember(f Fleet, book peerLedger, markers markerChecks, host driverHost, sh *shadower, pr *probation,
	ln *link, file *fileStorage, m *metrics, log *slog.Logger, now func() time.Time) *member {
	return &member{f: f, book: book, markers: markers, host: host, shadow: sh, probation: pr, log: log, m: m, now: now,
		epochs: applier{link: ln, file: file, m: m, log: log}, view: roster{self: f.Member()}, poke: make(chan struct{}, 1)}
}

func (m *member) isDriver() bool { return m.lead.driving() }

// ready: this member applied an epoch (from the store or its local copy).
func (m *member) ready() bool { return m.epochs.applied() > 0 }

// run starts the member loops in goroutines Run owns.
func (m *member) run(ctl *control) {
	ctl.spawn(func(ctx context.Context) { m.f.Watch(ctx, func(ev WatchEvent) { m.onEvent(ctx, ev) }) })
	ctl.spawn(m.heartbeatLoop)
	ctl.spawn(m.campaignLoop)
	m.pokeNow()
}

// loaded records the epoch Load adopted: the proxy is built on its route, its first application.
func (m *member) loaded(epoch uint64, primary, fallback string) {
	m.epochs.loaded(epoch, primary, fallback)
}

// leadContext is the driver's lead (nil when not driving): the runner lives in it.
func (m *member) leadContext() context.Context { return m.lead.context() }

func (m *member) pokeNow() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

// apply applies epoch (its route, its local copy, the acknowledgement); a member that does not
// drive follows the state with its shadowing (the driver starts and stops its own).
func (m *member) apply(epoch uint64, primary, fallback string, st State) error {
	h := m.book.header()
	ok, err := m.epochs.apply(epoch, primary, fallback, &h)
	if err != nil || !ok {
		return err
	}
	if !m.isDriver() {
		if st == StateShadowing {
			m.shadow.start()
		} else {
			m.shadow.stop()
		}
	}
	m.pokeNow()
	return nil
}

// onEvent handles one change of the shared journal.
func (m *member) onEvent(ctx context.Context, ev WatchEvent) {
	switch {
	case ev.Resync:
		if m.isDriver() {
			return // the driver holds the newest journal; its own writes are fenced
		}
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		snap, err := m.f.Load(lctx)
		cancel()
		if err != nil || snap == nil {
			return
		}
		// The header first: a new migration's header clears the previous one's records,
		// and must not clear the ones just loaded.
		m.onHeader(ctx, &snap.Header)
		m.book.resync(snap)
	case ev.Key != nil:
		if m.isDriver() || validKeyID(ev.Key.ID) != nil {
			return // the driver's own records are its journal already
		}
		m.book.takeKey(*ev.Key)
	case ev.Created != nil:
		if validKeyID(ev.Created.ID) != nil {
			return
		}
		m.book.takeCreated(*ev.Created)
	case ev.Header != nil:
		m.onHeader(ctx, ev.Header)
	}
}

func (m *member) onHeader(ctx context.Context, h *Header) {
	if !h.State.valid() || h.Epoch == 0 || !validKeyStoreID(h.KeyStore) {
		return
	}
	if m.stale(h) {
		return
	}
	// Verified against the backends' markers before anything of it is taken; a header that
	// cannot be verified now waits (held) and the heartbeat tries it again.
	if err := m.markers.verifyHeader(ctx, h, m.book.header().KeyStore); err != nil {
		m.hold(h, err)
		return
	}
	m.release(h)
	if !m.book.take(h, m.isDriver()) {
		return
	}
	p, f := h.Route()
	if err := m.apply(h.Epoch, p, f, h.State); err != nil {
		m.log.Error("fleet: applying the stored epoch failed", "epoch", h.Epoch, "err", err)
	} else {
		m.log.Info("fleet: epoch applied", "epoch", h.Epoch, "state", h.State, "primary", p, "fallback", f)
	}
	m.book.announce()
}

// stale handles a header this member need not take: an older epoch, or the driver's own
// current one (its route re-applied if the swap has not happened yet). A non-driver takes the
// current epoch's header again: the driver updates it between epochs (last error, options).
func (m *member) stale(h *Header) bool {
	cur := m.book.header().Epoch
	switch {
	case h.Epoch > cur:
		return false
	case h.Epoch < cur:
		return true
	case !m.isDriver():
		return false
	}
	if m.epochs.applied() < cur {
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
				m.log.Log(context.Background(), lv, "fleet: not applying an epoch the backends' markers do not confirm; serving the last applied one",
					"epoch", h.Epoch, "state", h.State, "err", truncate(err.Error()))
				m.m.fleetRefused.Inc()
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
	last := m.now()
	m.view.counted = m.view.requests.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.poke:
		}
		now := m.now()
		if d := now.Sub(last); d >= heartbeatEvery/2 {
			m.view.measure(d)
			last = now
		}
		m.heartbeat(ctx, now)
		if h := m.held.Load(); h != nil {
			m.onHeader(ctx, h)
		}
	}
}

func (m *member) heartbeat(ctx context.Context, now time.Time) {
	epoch, p, f := m.epochs.current()
	rec := MemberRecord{
		Address:      derefOr(m.address.Load()),
		AppliedEpoch: epoch, Primary: p, Fallback: f, Heartbeat: now.UTC(),
		RequestsPerSec: m.view.rate(),
		Probation:      m.probation.local(now),
		Shadow:         m.shadow.snapshot(),
	}
	if m.pace != nil {
		rec.Pace = m.pace.report()
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := m.f.Publish(cctx, rec)
	var ms []MemberInfo
	if err == nil {
		ms, err = m.f.Members(cctx)
	}
	if err != nil {
		if m.view.reachable.Swap(false) {
			m.log.Warn("fleet: store unreachable; serving the last applied epoch, no phase change until it is back",
				"epoch", rec.AppliedEpoch, "err", err)
		}
		m.m.fleetStoreUp.Set(0)
		return
	}
	if !m.view.reachable.Swap(true) {
		m.log.Info("fleet: store reachable", "store", m.f.Where())
	}
	m.m.fleetStoreUp.Set(1)
	m.view.members.Store(&ms)
	m.m.setMembers(ms)
	if name, _, err := m.f.Driver(cctx); err == nil {
		m.view.driverName.Store(&name)
	}
	if m.ready() {
		return
	}
	// Not ready yet (started without store nor local copy): the store answers now. A store that
	// holds no journal yet gets its first one here, as at a start with the store up: a fleet
	// whose members all started before etcd would otherwise wait for a member to restart.
	lctx, lcancel := context.WithTimeout(ctx, 15*time.Second)
	snap, err := m.f.Load(lctx)
	if err == nil && snap == nil {
		if snap, err = m.host.firstJournal(lctx); err != nil {
			m.log.Warn("fleet: the store holds no journal and the first one cannot be written yet; retrying", "err", truncate(err.Error()))
		}
	}
	if err == nil && snap != nil {
		err = m.markers.verifyHeader(lctx, &snap.Header, m.book.header().KeyStore)
		if err != nil {
			lcancel()
			m.hold(&snap.Header, err)
			return
		}
	}
	lcancel()
	if err == nil && snap != nil {
		if err := m.host.adopt(journalFrom(snap)); err != nil {
			m.log.Error("fleet: the stored journal does not fit the configuration", "err", err)
			return
		}
		p, f := snap.Header.Route()
		_ = m.apply(snap.Header.Epoch, p, f, snap.Header.State)
	}
}

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
	ctx, cancel := context.WithTimeout(lead, 30*time.Second)
	snap, err := m.f.Load(ctx)
	cancel()
	if err != nil || snap == nil {
		m.log.Error("fleet: elected but the journal cannot be read; resigning", "err", err)
		return
	}
	err = m.markers.verifyHeader(lead, &snap.Header, m.book.header().KeyStore)
	if errors.Is(err, ErrMarkerUnreadable) {
		m.log.Warn("fleet: elected but the backends' markers cannot be read to confirm the journal; resigning, will stand again", "err", err)
		return
	}
	if err == nil {
		err = m.host.adopt(journalFrom(snap))
	}
	if err != nil {
		m.log.Error("fleet: elected but the stored journal does not fit the configuration or the backends' markers; not driving", "err", err)
		<-lead.Done()
		return
	}
	if err := m.identify(lead); err != nil {
		m.log.Warn("fleet: the store's journal has no key store identity yet (an earlier release's); will retry when next elected", "err", err)
	}
	m.lead.begin(lead)
	m.m.fleetDriver.Set(1)
	m.m.fleetDriverChanges.Inc()
	m.log.Info("fleet: driving the migration", "member", m.f.Member(), "epoch", snap.Header.Epoch, "state", snap.Header.State)
	p, f := snap.Header.Route()
	if err := m.apply(snap.Header.Epoch, p, f, snap.Header.State); err != nil {
		m.log.Error("fleet: applying the stored epoch failed", "err", err)
	}
	if err := m.host.resume(lead); err != nil {
		m.log.Error("fleet: resuming the migration failed", "err", err)
	}
	<-lead.Done()
	m.log.Warn("fleet: lost the lead; no longer driving", "member", m.f.Member())
	m.lead.end()
	m.m.fleetDriver.Set(0)
	// The runner lives in lead: it has stopped or is stopping.
	m.host.stopDriving()
}

// identify is the driver's upgrade of an earlier release's store: a key store identity,
// recorded on the backends first, then in the store's header (same epoch, fenced), then the old
// markers removed. Members take the header as an update of the current epoch.
func (m *member) identify(ctx context.Context) error {
	h := m.book.header()
	if h.KeyStore != "" {
		return nil
	}
	ks, err := newKeyStoreID()
	if err != nil {
		return err
	}
	if err := m.book.identify(ctx, ks); err != nil {
		return err
	}
	m.log.Info("fleet: the key store has its identity now", "key_store", ks, "epoch", h.Epoch)
	m.markers.removeLegacy(ctx)
	return nil
}

// barrier waits until every registered member, live or not, acknowledged epoch: a step that
// changes where a key may be served is taken only once nobody can still serve an older route.
// A member whose lease expired is waited for (status names it) until it returns or an operator
// forgets it.
func (m *member) barrier(ctx context.Context, epoch uint64) error {
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
			if !self && m.epochs.applied() < epoch {
				behind = append(behind, m.f.Member())
			}
			sort.Strings(behind)
			m.view.waiting.Store(&behind)
			m.view.members.Store(&ms) // what status shows is what was just read
			if len(behind) == 0 {
				return nil
			}
			if time.Since(logged) > 10*time.Second {
				logged = time.Now()
				m.log.Warn("fleet: waiting for members to acknowledge the epoch", "epoch", epoch, "members", behind)
			}
		}
		select {
		case <-ctx.Done():
			w := m.view.waiting.Load()
			if w != nil && len(*w) > 0 {
				return fmt.Errorf("fleet: waiting for %v to acknowledge epoch %d: %w", *w, epoch, ctx.Err())
			}
			return fmt.Errorf("fleet: store unreachable while waiting for acknowledgements of epoch %d: %w", epoch, ctx.Err())
		case <-t.C:
		}
	}
}

// forget removes a member whose lease expired, so phase changes stop waiting for it.
func (m *member) forget(ctx context.Context, name string) error {
	if err := m.f.Forget(ctx, name); err != nil {
		return err
	}
	m.log.Warn("fleet: member forgotten by the operator", "member", name)
	m.pokeNow()
	return nil
}

// applier applies epochs on this member: the proxy's route swap, the local copy of the epoch
// (written before the acknowledgement: a restart without the store serves this epoch, never an
// older one), and the acknowledgement (the applied epoch the heartbeat publishes). Epochs only
// move forward: a member never serves a route older than one it acknowledged.
type applier struct {
	mu    sync.Mutex // orders applications
	link  *link
	file  *fileStorage
	m     *metrics
	log   *slog.Logger
	epoch atomic.Uint64 // the newest epoch applied (0: none yet)
	route atomic.Pointer[[2]string]
}

// loaded records the epoch the proxy is built on.
func (a *applier) loaded(epoch uint64, primary, fallback string) {
	a.route.Store(&[2]string{primary, fallback})
	a.epoch.Store(epoch)
}

func (a *applier) applied() uint64 { return a.epoch.Load() }

// current is the applied epoch and its route.
func (a *applier) current() (epoch uint64, primary, fallback string) {
	r := a.route.Load()
	if r == nil {
		r = &[2]string{}
	}
	return a.epoch.Load(), r[0], r[1]
}

// apply swaps the proxy's route to epoch's, keeps the local copy of h (when it is that epoch's)
// and acknowledges; ok is false for an epoch older than the applied one (nothing done).
func (a *applier) apply(epoch uint64, primary, fallback string, h *Header) (ok bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if epoch < a.epoch.Load() {
		return false, nil
	}
	if err := a.link.setRoute(epoch, primary, fallback); err != nil {
		return false, err
	}
	if h.Epoch == epoch {
		if err := a.file.Save(context.Background(), Change{PrevEpoch: epoch, Header: h}); err != nil {
			a.log.Error("fleet: writing the local copy of the applied epoch failed", "epoch", epoch, "err", err)
		}
	}
	a.route.Store(&[2]string{primary, fallback})
	a.epoch.Store(epoch)
	a.m.fleetApplied.Set(float64(epoch))
	return true, nil
}

// lead is the driver's leadership: the context the runner lives in while this member drives.
type lead struct {
	driver atomic.Bool
	mu     sync.Mutex
	ctx    context.Context
}

func (l *lead) driving() bool { return l.driver.Load() }

func (l *lead) begin(ctx context.Context) {
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
	l.driver.Store(true)
}

func (l *lead) end() {
	l.driver.Store(false)
	l.mu.Lock()
	l.ctx = nil
	l.mu.Unlock()
}

func (l *lead) context() context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ctx
}

func derefOr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
