package cutover

import (
	"context"
	"fmt"
	"time"
)

// Fleet coordinates several controllers (one per proxy replica) that share one Storage: one is
// elected driver and runs the migration; every member watches the stored header, applies each
// epoch with the same atomic route swap and acknowledges it in its member record. Package fleet
// implements it on etcd. A nil Fleet is the single-process controller.
type Fleet interface {
	// Storage: the fleet's shared journal, which only the elected driver writes (fenced).
	Storage
	// Member is this replica's name (unique in the fleet).
	Member() string
	// Campaign blocks until this member is elected driver or ctx ends. The returned context
	// ends when the leadership is lost (session expired, resigned, store unreachable).
	Campaign(ctx context.Context) (lead context.Context, err error)
	// Watch calls fn, in store order, for each header and created-key note stored after the
	// last Load, until ctx ends. It reconnects by itself; on a gap it reports Resync so that
	// the caller loads again.
	Watch(ctx context.Context, fn func(WatchEvent))
	// Publish stores this member's record under its lease (the heartbeat, about once a second).
	Publish(ctx context.Context, m MemberRecord) error
	// Members returns every registered member, live or expired, sorted by name.
	Members(ctx context.Context) ([]MemberInfo, error)
	// Forget removes a member whose lease expired; ErrMemberAlive while it is live.
	Forget(ctx context.Context, name string) error
	// Driver names the elected driver and the admin address it advertises ("" when none).
	Driver(ctx context.Context) (name, address string, err error)
}

// WatchEvent is one change seen by Fleet.Watch.
type WatchEvent struct {
	Header  *Header     // a new stored header
	Created *CreatedKey // a new created-key note
	Key     *KeyEvent   // a key record written or deleted by the driver
	// Resync: events may have been missed (compaction, long disconnect); load again.
	Resync bool
}

// KeyEvent is one key record of the stored journal as the driver wrote it: every member needs
// it, because whether the target holds a key decides whether a KeyNotFound there may fall back
// (Traffic.MayLack), and a member that did not know the key was copied would let the source
// answer for a key revoked or destroyed on the target.
type KeyEvent struct {
	ID       string
	Progress *KeyProgress // nil: the record was deleted
}

// MemberRecord is what one member publishes about itself.
type MemberRecord struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"` // admin URL others forward operator calls to
	Version string `json:"version,omitempty"`
	// AppliedEpoch is the newest epoch whose route this member applied (its acknowledgement).
	AppliedEpoch uint64    `json:"applied_epoch"`
	Primary      string    `json:"primary"`
	Fallback     string    `json:"fallback,omitempty"`
	Heartbeat    time.Time `json:"heartbeat"`
	// RequestsPerSec is the member's XKS request rate over its last heartbeat interval.
	RequestsPerSec float64 `json:"requests_per_sec"`
	// Probation is the member's own sliding window on the target while switched.
	Probation ProbationStats `json:"probation"`
	// Shadow counts the member's mirrored Decrypts since it started.
	Shadow ShadowStats `json:"shadow"`
	// Pace is what the member's live traffic says of the migration's load: the driver's pace
	// backs off on any member's pressure.
	Pace MemberPace `json:"pace"`
}

// MemberInfo is a registered member as the store sees it.
type MemberInfo struct {
	MemberRecord
	// Live: its lease is alive. An expired member stays registered until it returns or an
	// operator forgets it; phase changes wait for it.
	Live bool `json:"live"`
}

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
	return c.fleet.forget(ctx, name)
}

// SetAdminAddress sets the admin URL this member advertises for forwarded operator calls, when
// it is known only once the admin listener is bound (a configured address takes precedence in
// the store).
func (c *Controller) SetAdminAddress(u string) {
	if c.fleet != nil {
		c.fleet.address.Store(&u)
	}
}

// settled reports whether this member and every registered one, as last read, applied epoch or
// a newer one: none may route by an older epoch's route.
func (m *member) settled(epoch uint64) bool {
	return m.epochs.applied() >= epoch && m.view.applied(epoch)
}

// mustDrive refuses control operations on a member that is not the driver.
// mustDrive refuses a control call on a member that does not drive (nil: one process, which always drives).
func (m *member) mustDrive() error {
	if m != nil && !m.isDriver() {
		return ErrNotDriver
	}
	return nil
}

// barrier waits, in fleet mode, until every member acknowledged the current epoch (member.barrier).
func (c *Controller) barrier(ctx context.Context) error {
	if c.fleet == nil {
		return nil
	}
	return c.fleet.barrier(ctx, c.book.header().Epoch)
}

// settle waits, at most a few seconds, until every member acknowledged the epoch an operator
// call just took, so that its reply shows the fleet at that epoch (not as the last heartbeat
// read it). Best effort: the call's outcome does not depend on it.
func (c *Controller) settle(ctx context.Context) {
	if c.fleet == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = c.barrier(sctx)
}

// adopt makes a journal read from the fleet store current, once it fits the configuration (a
// member that starts driving, or becomes ready).
func (c *Controller) adopt(j *journal) error {
	if err := fits(j, c.sides.src.name, c.sides.tgt.name, c.store.Where()); err != nil {
		return err
	}
	c.book.adopt(j)
	c.sides.pace.setPaused(j.Paused) // a pause outlives a change of driver
	return nil
}

// firstJournal writes the fleet store's first journal for a member that started before the
// store answered (member.heartbeat), with the same checks as Load's.
func (c *Controller) firstJournal(ctx context.Context) (*Snapshot, error) {
	ld := &loader{src: c.sides.src.name, tgt: c.sides.tgt.name, store: c.store, file: c.file, markers: c.markers,
		book: c.book, log: c.log, now: c.cfg.Now}
	return ld.createFleetJournal(ctx)
}

// stopDriving stops the runner and the shadowing of a member that lost the lead.
func (c *Controller) stopDriving() {
	if held, err := c.control.lock(context.Background()); err == nil {
		c.control.stopRunner(held)
		c.control.unlock(held)
	}
	c.shadow.stop()
}
