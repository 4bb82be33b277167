// Package fleet lets several xksproxy replicas migrate as one. Each replica's cutover
// controller keeps its journal in a shared store instead of a local file; one replica is
// elected driver and runs the migration; every replica registers as a member under a lease,
// applies each epoch the driver stores with the proxy's atomic route swap, and acknowledges it
// in its member record. Phase changes wait for every registered member's acknowledgement.
//
// The store is etcd v3 (Etcd). The contract with the cutover package is the Store interface:
// cutover.Storage (the fenced, incremental journal) plus cutover.Fleet (election, members,
// watch). A Kubernetes Lease/ConfigMap backend can implement the same interface later.
//
// Key layout under Config.KeyPrefix (default "/xksproxy/"), all values JSON, none larger than
// a few kilobytes whatever the number of keys:
//
//	header            the journal header (epoch, state, source, target, options, times)
//	epoch             the epoch alone, compared by every fenced write
//	keys/<id>         one record per migrated key (phase, result, reason)
//	created/<id>      one note per key id seen in a CreateKey, by any member
//	election/<lease>  the driver election (etcd concurrency); the winner's create revision
//	                  fences every header and key write
//	members/<name>    the member's heartbeat record, under its lease
//	registry/<name>   the member's registration and last acknowledged epoch, without lease:
//	                  an expired member is not forgotten until an operator says so
package fleet

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
)

// Store is a fleet coordination backend.
type Store interface {
	cutover.Storage
	cutover.Fleet
	// Reachable reports whether the last call to the store succeeded.
	Reachable() bool
	// Close resigns, revokes the member's lease and closes the connection.
	Close() error
}

// Config connects one member to the fleet store.
type Config struct {
	// Endpoints are the etcd client URLs (required), e.g. "https://etcd-0:2379".
	Endpoints []string
	// Member is this replica's name, unique in the fleet (default: the host name).
	Member string
	// KeyPrefix is the key space of one key store's fleet (default "/xksproxy/").
	KeyPrefix string
	// LeaseTTL bounds how long a dead member stays live and a dead driver keeps the lead
	// (default 10s; at least 2s, etcd's minimum).
	LeaseTTL time.Duration
	// DialTimeout bounds connecting to etcd (default 5s).
	DialTimeout time.Duration
	// RequestTimeout bounds each etcd call (default 5s).
	RequestTimeout time.Duration
	// CAFile, CertFile, KeyFile: TLS to etcd (CA alone: server TLS; with a pair: mutual TLS).
	CAFile, CertFile, KeyFile string
	// Username and Password: etcd authentication (both or neither).
	Username, Password string
	// Address is the admin URL this member advertises so that operator calls made to another
	// replica can be forwarded to the driver (e.g. "http://10.0.0.5:9443").
	Address string
	// Version is published in the member record.
	Version string
	// MinLeaseTTL lowers the LeaseTTL floor, for tests with a fast embedded etcd only.
	MinLeaseTTL time.Duration
	Logger      *slog.Logger
	Now         func() time.Time
}

// Defaults.
const (
	DefaultKeyPrefix      = "/xksproxy/"
	DefaultLeaseTTL       = 10 * time.Second
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	minLeaseTTL           = 2 * time.Second
	maxMemberName         = 128
)

// CheckAndSetDefaults validates c and fills defaults.
func (c *Config) CheckAndSetDefaults() error {
	if len(c.Endpoints) == 0 {
		return errors.New("fleet: at least one etcd endpoint is required")
	}
	for _, e := range c.Endpoints {
		if e == "" || strings.ContainsAny(e, " \t\n") {
			return fmt.Errorf("fleet: invalid etcd endpoint %q", e)
		}
	}
	if c.Member == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("fleet: member name not set and the host name is unknown: %v", err)
		}
		c.Member = h
	}
	if err := ValidMemberName(c.Member); err != nil {
		return fmt.Errorf("fleet: member: %w", err)
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if !strings.HasPrefix(c.KeyPrefix, "/") {
		return fmt.Errorf("fleet: key prefix %q must start with /", c.KeyPrefix)
	}
	if !strings.HasSuffix(c.KeyPrefix, "/") {
		c.KeyPrefix += "/"
	}
	floor := minLeaseTTL
	if c.MinLeaseTTL > 0 {
		floor = c.MinLeaseTTL
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseTTL < floor {
		return fmt.Errorf("fleet: lease TTL %s below etcd's minimum %s", c.LeaseTTL, floor)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("fleet: cert_file and key_file go together")
	}
	if (c.Username == "") != (c.Password == "") {
		return errors.New("fleet: username and password go together")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// ValidMemberName accepts member names usable as one etcd key segment and a metric label value
// (the config package calls it for [fleet] member).
func ValidMemberName(s string) error {
	if s == "" || len(s) > maxMemberName {
		return fmt.Errorf("name of length %d (want 1 to %d)", len(s), maxMemberName)
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.'", s)
		}
	}
	return nil
}
