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

	address atomic.Pointer[string] // admin URL to advertise, when known only at run time
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

// run starts the member loops in goroutines Run owns.
func (m *member) run(ctl *control) {
	ctl.spawn(func(ctx context.Context) { m.f.Watch(ctx, func(ev WatchEvent) { m.onEvent(ctx, ev) }) })
	ctl.spawn(m.heartbeatLoop)
	ctl.spawn(m.campaignLoop)
	m.pokeNow()
}

// loaded records the epoch Load adopted: the proxy is built on its route, its first application.
func (m *member) loaded(epoch uint64, primary, fallback string) {
	m.applied.Store(epoch)
	m.route.Store(&[2]string{primary, fallback})
}

// leadContext is the driver's lead (nil when not driving): the runner lives in it.
func (m *member) leadContext() context.Context {
	m.leadMu.Lock()
	defer m.leadMu.Unlock()
	return m.leadCtx
}

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
	if err := m.c.control.link.setRoute(epoch, primary, fallback); err != nil {
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
func (m *member) onEvent(ctx context.Context, ev WatchEvent) {
	c := m.c
	switch {
	case ev.Resync:
		if m.isDriver() {
			return // the driver holds the newest journal; its own writes are fenced
		}
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		snap, err := c.store.Load(lctx)
		cancel()
		if err != nil || snap == nil {
			return
		}
		// The header first: a new migration's header clears the previous one's records,
		// and must not clear the ones just loaded.
		m.onHeader(ctx, &snap.Header)
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
		m.onHeader(ctx, ev.Header)
	}
}

func (m *member) onHeader(ctx context.Context, h *Header) {
	c := m.c
	if !h.State.valid() || h.Epoch == 0 || !validKeyStoreID(h.KeyStore) {
		return
	}
	if m.stale(h) {
		return
	}
	// Verified against the backends' markers before anything of it is taken; a header that
	// cannot be verified now waits (pending) and the heartbeat tries it again.
	vctx, cancel := context.WithTimeout(ctx, 3*c.cfg.MarkerTimeout)
	err := c.markers.verifyHeader(vctx, h, c.book.header().KeyStore)
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
			m.onHeader(ctx, h)
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
		err = c.markers.verifyHeader(lctx, &snap.Header, c.book.header().KeyStore)
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
	err = c.markers.verifyHeader(vctx, &snap.Header, c.book.header().KeyStore)
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
	if err := c.resume(lead); err != nil {
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
	if held, err := c.lock(context.Background()); err == nil {
		c.control.stopRunner(held)
		c.control.unlock(held)
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
	c.markers.removeLegacy(ctx)
	return nil
}

// adopt makes a journal read from the store current, once it fits the configuration.
func (c *Controller) adopt(j *journal) error {
	if err := fits(j, c.sides.src.name, c.sides.tgt.name, c.store.Where()); err != nil {
		return err
	}
	c.book.adopt(j)
	return nil
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
