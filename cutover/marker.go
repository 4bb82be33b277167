package cutover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
)

// The marker is the backends' own record of the last epoch: one object per backend, written
// through KMIP as the keys' owner before every transition is journaled, read back at start-up
// and, in fleet mode, before a member applies an epoch it read from the store. A proxy whose
// journal is lost (a pod re-created on an emptyDir, a wiped disk) would otherwise start as
// "serving the configured source, epoch 1" after a migration already moved the keys, strand
// the keys created on the target and let a repeated CreateKey mint a second key under one id;
// and a journal or a fleet store that someone else edited would route where the backends never
// went.
//
// The marker is a PreActive AES key with random, meaningless material and no grants, so no
// XKS caller can use it; its tags carry the record. It is the proxy's own object, out of every
// caller's reach: its id holds the key store's random identity (markerID), which no caller
// knows, the proxy refuses XKS calls for it, and it is found by a tag only the keys' owner can
// set through KMIP (XKS CreateKey tags a key aws-xks and nothing else). A customer key that
// happens to be named like an earlier release's fixed marker id is migrated like any other.

// markerIDPrefix starts every marker's unique identifier; the key store identity follows.
const markerIDPrefix = "xksproxy-marker-"

// LegacyMarkerID is the fixed unique identifier earlier releases wrote their marker under. Such
// an object (found by its marker tag, never by this name) is read once to upgrade, then removed.
const LegacyMarkerID = "xksproxy-cutover-marker"

// DefaultMarkerTimeout bounds one marker read or write.
const DefaultMarkerTimeout = 5 * time.Second

// ErrMarkerAhead is wrapped by Load's error when the backends record a later epoch than the
// journal (or the journal is missing and they record any migration).
var ErrMarkerAhead = errors.New("the backends record a later cutover epoch than the journal")

// ErrMarkerContradicts is wrapped by Load's error (and logged by a fleet member that refuses an
// epoch from the store) when the journal or the store holds a state the backends never
// recorded: a later epoch than theirs, the same epoch with another route, or another key store.
var ErrMarkerContradicts = errors.New("the backends' cutover markers contradict the journal")

// ErrMarkerUnreadable is wrapped by Load's error when the journal is missing and a backend's
// marker cannot be read, so a migration cannot be ruled out.
var ErrMarkerUnreadable = errors.New("backend cutover marker unreadable")

// Marker tag names; one tag per field, "name:value".
const (
	markerTag       = "xksproxy-cutover-marker"
	markerKeyStore  = "xksproxy-key-store:"
	markerEpoch     = "xksproxy-epoch:"
	markerState     = "xksproxy-state:"
	markerPrimary   = "xksproxy-primary:"
	markerFallback  = "xksproxy-fallback:"
	markerSource    = "xksproxy-source:"
	markerTarget    = "xksproxy-target:"
	markerUpdatedAt = "xksproxy-updated:"
	markerPending   = "xksproxy-pending"
)

// newKeyStoreID makes a key store identity: 128 random bits, hex.
func newKeyStoreID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// validKeyStoreID: 32 lower-case hex digits (what newKeyStoreID makes), or "" for a journal or
// marker of an earlier release.
func validKeyStoreID(s string) bool {
	if s == "" {
		return true
	}
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}

// markerID is the unique identifier of key store ks's marker on every backend.
func markerID(ks string) string { return markerIDPrefix + ks }

// Marker is what a backend records about the migration state of the key store.
type Marker struct {
	Backend           string    `json:"backend"` // where it was read (not stored)
	UID               string    `json:"-"`       // the object it was read from (not stored)
	KeyStore          string    `json:"key_store,omitempty"`
	Epoch             uint64    `json:"epoch"`
	State             State     `json:"state"`
	Primary, Fallback string    `json:"-"`
	Source, Target    string    `json:"-"`
	UpdatedAt         time.Time `json:"updated_at"`
	// Pending: written before the transition was journaled, and not yet confirmed after. A
	// pending marker one epoch ahead of a journal is a transition the process stopped in the
	// middle of (never served); a confirmed one is a journal older than the backends.
	Pending bool `json:"pending,omitempty"`
}

// order ranks markers as one backend may hold them over time: by epoch, confirmed after pending.
func (m *Marker) order() uint64 {
	if m.Pending {
		return 2 * m.Epoch
	}
	return 2*m.Epoch + 1
}

// markerOf is the marker that records j.
func markerOf(j *journal) *Marker {
	p, f := j.Route()
	return &Marker{KeyStore: j.KeyStore, Epoch: j.Epoch, State: j.State, Primary: p, Fallback: f,
		Source: j.Source, Target: j.Target, UpdatedAt: j.UpdatedAt}
}

func (m *Marker) tags() []string {
	t := []string{markerTag,
		markerKeyStore + m.KeyStore,
		markerEpoch + strconv.FormatUint(m.Epoch, 10),
		markerState + string(m.State),
		markerPrimary + m.Primary,
		markerSource + m.Source,
		markerTarget + m.Target,
		markerUpdatedAt + m.UpdatedAt.UTC().Format(time.RFC3339),
	}
	if m.Fallback != "" {
		t = append(t, markerFallback+m.Fallback)
	}
	if m.Pending {
		t = append(t, markerPending)
	}
	return t
}

// parseMarker reads a marker back from an object's tags.
func parseMarker(backend string, tags []string) (*Marker, error) {
	m := &Marker{Backend: backend}
	seen := false
	for _, t := range tags {
		var err error
		switch {
		case t == markerTag:
			seen = true
		case t == markerPending:
			m.Pending = true
		case strings.HasPrefix(t, markerKeyStore):
			m.KeyStore = t[len(markerKeyStore):]
			if !validKeyStoreID(m.KeyStore) {
				err = errors.New("not a key store identity")
			}
		case strings.HasPrefix(t, markerEpoch):
			m.Epoch, err = strconv.ParseUint(t[len(markerEpoch):], 10, 64)
		case strings.HasPrefix(t, markerState):
			m.State = State(t[len(markerState):])
		case strings.HasPrefix(t, markerPrimary):
			m.Primary = t[len(markerPrimary):]
		case strings.HasPrefix(t, markerFallback):
			m.Fallback = t[len(markerFallback):]
		case strings.HasPrefix(t, markerSource):
			m.Source = t[len(markerSource):]
		case strings.HasPrefix(t, markerTarget):
			m.Target = t[len(markerTarget):]
		case strings.HasPrefix(t, markerUpdatedAt):
			m.UpdatedAt, err = time.Parse(time.RFC3339, t[len(markerUpdatedAt):])
		}
		if err != nil {
			return nil, fmt.Errorf("tag %.60q: %v", t, err)
		}
	}
	switch {
	case !seen:
		return nil, fmt.Errorf("the object has no %q tag (not written by xksproxy)", markerTag)
	case m.Epoch == 0:
		return nil, errors.New("no epoch")
	case !m.State.valid():
		return nil, fmt.Errorf("unknown state %.40q", m.State)
	case m.Primary == "":
		return nil, errors.New("no serving backend")
	}
	return m, nil
}

// describe renders a marker for an operator.
func (m *Marker) describe() string {
	route := "serving " + m.Primary
	if m.Fallback != "" {
		route += " with fallback " + m.Fallback
	}
	at := ""
	if !m.UpdatedAt.IsZero() {
		at = ", written " + m.UpdatedAt.UTC().Format(time.RFC3339)
	}
	ks := "an earlier release's marker"
	if m.KeyStore != "" {
		ks = "key store " + m.KeyStore
	}
	if m.Pending {
		ks += ", transition not confirmed"
	}
	return fmt.Sprintf("epoch %d, state %s, %s, migration %s → %s (%s%s)", m.Epoch, m.State, route, m.Source, m.Target, ks, at)
}

// sameRecord reports whether m records exactly h's epoch, state and route.
func (m *Marker) sameRecord(h *Header) bool {
	p, f := h.Route()
	return m.Epoch == h.Epoch && m.State == h.State && m.Primary == p && m.Fallback == f &&
		m.Source == h.Source && m.Target == h.Target
}

// agreement judges a journal header h (from the file, the fleet store or its local copy) against
// the newest marker m of its key store. They agree when m records h itself, or when m is the
// next epoch, still pending and one legal move away: the transition was recorded on the
// backends (always first) and the process stopped before it was journaled, so its route was
// never served and the next transition takes that epoch again. Anything else is a state the
// backends never went through (a journal older than theirs is ErrMarkerAhead).
func agreement(h *Header, m *Marker) error {
	switch {
	case m.Epoch == h.Epoch && m.sameRecord(h):
		return nil
	case m.Epoch == h.Epoch+1 && m.Pending && canMove(h.State, m.State) &&
		(m.Source == h.Source && m.Target == h.Target || h.State == StateServing || h.State == StateRolledBack || h.State == StateFinalized):
		return nil
	case m.Epoch > h.Epoch:
		return fmt.Errorf("%w: the journal records epoch %d (state %s) but backend %s records %s", ErrMarkerAhead, h.Epoch, h.State, m.Backend, m.describe())
	case m.Epoch == h.Epoch:
		pr, fb := h.Route()
		return fmt.Errorf("%w: epoch %d is state %s (serving %s%s) in the journal but backend %s records %s",
			ErrMarkerContradicts, h.Epoch, h.State, pr, withFallback(fb), m.Backend, m.describe())
	default:
		return fmt.Errorf("%w: the journal records epoch %d (state %s) but the newest epoch the backends record is %d (%s, on %s): the backends never went through this journal's state (a journal edited by hand, or from another installation)",
			ErrMarkerContradicts, h.Epoch, h.State, m.Epoch, m.describe(), m.Backend)
	}
}

func withFallback(f string) string {
	if f == "" {
		return ""
	}
	return " with fallback " + f
}

// markerBook reads and writes the markers on the two backends, each call bounded by the marker
// timeout. It holds no state: markerWriter keeps what was written.
type markerBook struct {
	src, tgt *backend
	timeout  time.Duration
	log      *slog.Logger
	pace     *pace // a write takes a token, ahead of the background's (nil: none)
}

// readMarker returns b's marker of key store ks, nil if it has none.
func (c *markerBook) readMarker(ctx context.Context, b *backend, ks string) (*Marker, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	uid := markerID(ks)
	a, err := b.k.GetAttributes(ctx, uid)
	if errors.Is(err, cosmian.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := parseMarker(b.name, a.Tags)
	if err != nil {
		return nil, fmt.Errorf("object %s on %s is not a valid cutover marker: %v", uid, b.name, err)
	}
	if m.KeyStore != ks {
		return nil, fmt.Errorf("object %s on %s records key store %q, not %s", uid, b.name, m.KeyStore, ks)
	}
	m.UID = uid
	return m, nil
}

// discoverMarkers finds every marker on b, of any key store, by the owner-only marker tag: at
// start-up, before the journal says which key store this is (or when it is missing). An object
// that carries the tag but that the configured identity does not own is not ours and is skipped.
func (c *markerBook) discoverMarkers(ctx context.Context, b *backend) ([]*Marker, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*c.timeout)
	defer cancel()
	uids, err := b.k.Locate(ctx, cosmian.LocateRequest{Tags: []string{markerTag}, ObjectType: "SymmetricKey"})
	if err != nil {
		return nil, err
	}
	var out []*Marker
	for _, uid := range uids {
		a, err := b.k.GetAttributes(ctx, uid)
		if errors.Is(err, cosmian.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		m, err := parseMarker(b.name, a.Tags)
		if err != nil {
			c.log.Warn("cutover: an object carries the marker tag but is no marker; ignored", "backend", b.name, "uid", uid, "err", err)
			continue
		}
		if _, err := b.k.ListAccess(ctx, uid); err != nil {
			// The access list is the owner's alone: a marker someone else made is not ours.
			c.log.Warn("cutover: a marker the configured identity does not own; ignored", "backend", b.name, "uid", uid)
			continue
		}
		m.UID = uid
		out = append(out, m)
	}
	return out, nil
}

// writeMarker replaces b's marker of m's key store with m.
func (c *markerBook) writeMarker(ctx context.Context, b *backend, m *Marker) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	material := make([]byte, 32)
	defer clear(material)
	if _, err := rand.Read(material); err != nil {
		return err
	}
	if c.pace != nil {
		_ = c.pace.call(withClass(ctx, classUrgent))
	}
	// No activation date: the object stays PreActive, unusable for any cryptographic call.
	_, err := b.k.Import(ctx, cosmian.ImportRequest{
		UID: markerID(m.KeyStore), ReplaceExisting: true, Material: material,
		Attributes: cosmian.KeyAttributes{Tags: m.tags()},
	})
	return err
}

// removeLegacy destroys the markers of an earlier release (fixed id, no key store) once this
// key store's own are written, so that the id they held is free for a customer key. Only an
// object that carries the marker tag and no key store is removed: what the tag marks is ours.
func (c *markerBook) removeLegacy(ctx context.Context) {
	for _, b := range []*backend{c.src, c.tgt} {
		ms, err := c.discoverMarkers(ctx, b)
		if err != nil {
			continue
		}
		for _, m := range ms {
			if m.KeyStore != "" {
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, c.timeout)
			err := b.k.Destroy(dctx, m.UID, true)
			cancel()
			if err != nil {
				c.log.Warn("cutover: could not remove an earlier release's marker; it is ignored", "backend", b.name, "uid", m.UID, "err", truncate(err.Error()))
				continue
			}
			c.log.Info("cutover: removed an earlier release's marker", "backend", b.name, "uid", m.UID)
		}
	}
}

// markerDefaults fills the marker settings.
func (c *Config) markerDefaults() error {
	if c.MarkerTimeout <= 0 {
		c.MarkerTimeout = DefaultMarkerTimeout
	}
	return nil
}
