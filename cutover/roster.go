package cutover

import (
	"sync/atomic"
	"time"
)

// roster is the fleet as this member last read it (the heartbeat): every registered member and
// its record, whether the store answered, the members a phase change waits for, the elected
// driver; and this member's own request rate, which it publishes.
type roster struct {
	self       string
	members    atomic.Pointer[[]MemberInfo]
	reachable  atomic.Bool
	waiting    atomic.Pointer[[]string] // members a phase change waits for
	driverName atomic.Pointer[string]   // the elected driver, as last read
	requests   atomic.Uint64            // XKS requests observed, for requests/s
	counted    uint64                   // requests at the last measure (heartbeat loop only)
	rps        atomic.Uint64            // requests/s × 1000
}

// count notes one XKS request this member served.
func (r *roster) count() { r.requests.Add(1) }

// measure computes the request rate over d, the time since the last measure.
func (r *roster) measure(d time.Duration) {
	n := r.requests.Load()
	r.rps.Store(uint64(float64(n-r.counted) / d.Seconds() * 1000))
	r.counted = n
}

func (r *roster) rate() float64 { return float64(r.rps.Load()) / 1000 }

// peers returns the other live members' last published records.
func (r *roster) peers() []MemberInfo {
	p := r.members.Load()
	if p == nil {
		return nil
	}
	var out []MemberInfo
	for _, x := range *p {
		if x.Live && x.Name != r.self {
			out = append(out, x)
		}
	}
	return out
}

// peerProbation are the other live members' probation windows.
func (r *roster) peerProbation() []ProbationStats {
	peers := r.peers()
	out := make([]ProbationStats, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.Probation)
	}
	return out
}

// peerPace are the other live members' pace reports, each with the member's name.
func (r *roster) peerPace() []MemberPace {
	peers := r.peers()
	out := make([]MemberPace, 0, len(peers))
	for _, p := range peers {
		mp := p.Pace
		mp.Member = p.Name
		out = append(out, mp)
	}
	return out
}

// peerShadow are the other live members' shadow counters.
func (r *roster) peerShadow() []ShadowStats {
	peers := r.peers()
	out := make([]ShadowStats, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.Shadow)
	}
	return out
}

// applied reports whether every registered member, as last read, applied epoch or a newer one
// (false before the first read).
func (r *roster) applied(epoch uint64) bool {
	p := r.members.Load()
	if p == nil {
		return false
	}
	for _, x := range *p {
		if x.AppliedEpoch < epoch {
			return false
		}
	}
	return true
}

// size is the number of live members (at least 1: this one): health's xksProxyFleetSize.
func (r *roster) size() int {
	n := 0
	if p := r.members.Load(); p != nil {
		for _, x := range *p {
			if x.Live {
				n++
			}
		}
	}
	return max(n, 1)
}

func (s ShadowStats) add(o ShadowStats) ShadowStats {
	return ShadowStats{Match: s.Match + o.Match, Mismatch: s.Mismatch + o.Mismatch, Errors: s.Errors + o.Errors, Dropped: s.Dropped + o.Dropped,
		CrossOK: s.CrossOK + o.CrossOK, CrossFailed: s.CrossFailed + o.CrossFailed}
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

// status is this member's view of the fleet; waiting names the members a phase change waits
// for while a migration is under way.
func (m *member) status(now time.Time, inMigration bool) *FleetStatus {
	r := &m.view
	fs := &FleetStatus{Member: r.self, Driving: m.isDriver(), StoreReachable: r.reachable.Load(),
		Ready: m.ready(), AppliedEpoch: m.epochs.applied()}
	if d := r.driverName.Load(); d != nil {
		fs.Driver = *d
	}
	if fs.Driving {
		fs.Driver = fs.Member
	}
	if p := r.members.Load(); p != nil {
		for _, x := range *p {
			ms := MemberStatus{Name: x.Name, AppliedEpoch: x.AppliedEpoch, Primary: x.Primary, Fallback: x.Fallback,
				Live: x.Live, RequestsPerSec: x.RequestsPerSec, Driver: x.Name == fs.Driver, Version: x.Version}
			if !x.Heartbeat.IsZero() {
				ms.LeaseAge = max(0, now.Sub(x.Heartbeat))
			}
			fs.Members = append(fs.Members, ms)
		}
	}
	if w := r.waiting.Load(); w != nil && inMigration {
		fs.WaitingFor = *w
	}
	return fs
}
