package cutover

import (
	"context"
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
// (Controller.MayLack), and a member that did not know the key was copied would let the source
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
}

// MemberInfo is a registered member as the store sees it.
type MemberInfo struct {
	MemberRecord
	// Live: its lease is alive. An expired member stays registered until it returns or an
	// operator forgets it; phase changes wait for it.
	Live bool `json:"live"`
}
