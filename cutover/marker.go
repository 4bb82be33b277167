package cutover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// ErrMarkerAhead is wrapped by New's error when the backends record a later epoch than the
// journal (or the journal is missing and they record any migration).
var ErrMarkerAhead = errors.New("the backends record a later cutover epoch than the journal")

// ErrMarkerContradicts is wrapped by New's error (and logged by a fleet member that refuses an
// epoch from the store) when the journal or the store holds a state the backends never
// recorded: a later epoch than theirs, the same epoch with another route, or another key store.
var ErrMarkerContradicts = errors.New("the backends' cutover markers contradict the journal")

// ErrMarkerUnreadable is wrapped by New's error when the journal is missing and a backend's
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

// readMarker returns b's marker of key store ks, nil if it has none.
func (c *Controller) readMarker(ctx context.Context, b *backend, ks string) (*Marker, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.MarkerTimeout)
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
func (c *Controller) discoverMarkers(ctx context.Context, b *backend) ([]*Marker, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*c.cfg.MarkerTimeout)
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
func (c *Controller) writeMarker(ctx context.Context, b *backend, m *Marker) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.MarkerTimeout)
	defer cancel()
	material := make([]byte, 32)
	defer clear(material)
	if _, err := rand.Read(material); err != nil {
		return err
	}
	// No activation date: the object stays PreActive, unusable for any cryptographic call.
	_, err := b.k.Import(ctx, cosmian.ImportRequest{
		UID: markerID(m.KeyStore), ReplaceExisting: true, Material: material,
		Attributes: cosmian.KeyAttributes{Tags: m.tags()},
	})
	return err
}

// markerAction is what start-up must write on the backends after checkMarkers.
type markerAction int

const (
	markersAgree   markerAction = iota // nothing: they record j
	markersNote                        // j is a fresh key store's: write its marker in the background
	markersRecord                      // j continues from their record: write it before storing j, or refuse
	markersUpgrade                     // j gets a key store identity: write it, then store j and remove the old markers; on failure keep the old journal
)

// found is what start-up read of the markers on both backends.
type found struct {
	all      []*Marker
	readable int      // backends whose markers could be read
	failed   []string // "backend: error" for the others
}

func (c *Controller) discoverAll(ctx context.Context) found {
	var f found
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range []*backend{c.sides.src, c.sides.tgt} {
		wg.Go(func() {
			ms, err := c.discoverMarkers(ctx, b)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				f.failed = append(f.failed, b.name+": "+truncate(err.Error()))
				return
			}
			f.readable++
			f.all = append(f.all, ms...)
		})
	}
	wg.Wait()
	sort.Strings(f.failed)
	return f
}

// newest is the marker with the highest epoch among those of key store ks.
func (f found) newest(ks string) *Marker {
	var n *Marker
	for _, m := range f.all {
		if m.KeyStore == ks && (n == nil || m.order() > n.order()) {
			n = m
		}
	}
	return n
}

// keyStores lists the key stores the markers name ("" for an earlier release's), sorted.
func (f found) keyStores() []string {
	var ks []string
	for _, m := range f.all {
		if !slices.Contains(ks, m.KeyStore) {
			ks = append(ks, m.KeyStore)
		}
	}
	sort.Strings(ks)
	return ks
}

// checkMarkers compares the backends' markers with the journal at start-up (the file journal, the
// fleet store's journal, or a fleet member's local copy of its last applied epoch). present says
// whether j was read; when it was not, j is the fresh epoch-1 journal about to be written, and
// checkMarkers may take the backends' key store and raise j past their epoch when that changes
// nothing (they record a finished migration and the configured source is the backend they say
// serves). It says what to write on the backends before j is (re)stored, or returns an error
// naming what it found and what to do.
func (c *Controller) checkMarkers(ctx context.Context, j *journal, present bool, where string) (markerAction, error) {
	f := c.discoverAll(ctx)
	if present {
		return c.checkPresent(j, f, where)
	}
	if len(f.failed) > 0 {
		return markersAgree, fmt.Errorf("cutover: journal %s is missing and the backends' markers cannot be read to rule out an earlier migration (%s); refusing to start as if none had happened: retry once they answer, or restore the journal from a backup: %w",
			where, strings.Join(f.failed, "; "), ErrMarkerUnreadable)
	}
	stores := f.keyStores()
	if len(stores) == 0 {
		return markersNote, nil // a key store that never migrated
	}
	ks := stores[len(stores)-1] // an earlier release's marker ("") only when no other exists
	if len(stores) > 1 && stores[0] != "" || len(stores) > 2 {
		var named []string
		for _, s := range stores {
			if s != "" {
				named = append(named, s)
			}
		}
		return markersAgree, fmt.Errorf("cutover: journal %s is missing and the backends hold the markers of %d key stores (%s): refusing to guess which this one is; restore the journal from a backup: %w",
			where, len(named), strings.Join(named, ", "), ErrMarkerAhead)
	}
	newest := f.newest(ks)
	terminal := !newest.State.inMigration() && newest.Fallback == ""
	if terminal && newest.Primary == c.sides.src.name {
		// The backends say the configured source serves alone: a journal one epoch past theirs,
		// recorded on them first, is what the lost one would have said, minus finished history.
		c.log.Warn("cutover: journal missing; continuing from the epoch the backends record",
			"journal", where, "backend", newest.Backend, "epoch", newest.Epoch, "state", newest.State, "serving", newest.Primary)
		if ks != "" {
			j.KeyStore = ks
		}
		j.Epoch = newest.Epoch + 1
		return markersRecord, nil
	}
	fresh := fmt.Sprintf("cutover: journal %s is missing but backend %s records %s; starting afresh would serve %s at epoch 1",
		where, newest.Backend, newest.describe(), c.sides.src.name)
	var how string
	switch {
	case terminal:
		how = fmt.Sprintf("restore the journal from a backup, or, to go on from %s, configure [cutover] source = %q (and [route] primary = %q) and start again",
			newest.Primary, newest.Primary, newest.Primary)
	default:
		how = fmt.Sprintf("the migration's per-key progress was in that journal: restore it from a backup and start again to resume or roll back the migration; never start it afresh while %s holds keys the other side may lack",
			newest.Primary)
	}
	return markersAgree, fmt.Errorf("%s; refusing to start: %s (a marker left by a test environment is removed by destroying object %s on %s and %s as the keys' owner): %w",
		fresh, how, newest.UID, c.sides.src.name, c.sides.tgt.name, ErrMarkerAhead)
}

// checkPresent is checkMarkers for a journal that was read.
func (c *Controller) checkPresent(j *journal, f found, where string) (markerAction, error) {
	if len(f.failed) > 0 {
		// The journal is there; a backend that cannot be read now is not evidence against it
		// (if neither can be read, nothing is served anyway). What can be read is checked.
		c.log.Warn("cutover: cannot read a backend's cutover markers; checking the journal against the others", "failed", f.failed)
	}
	if j.KeyStore == "" {
		// A journal of an earlier release: its markers had no key store either. One the
		// backends record under a key store means the journal is older than the upgrade.
		for _, m := range f.all {
			if m.KeyStore != "" {
				return markersAgree, fmt.Errorf("cutover: journal %s was written by an earlier release (no key store identity) but backend %s records %s: the journal predates the backends' state (restored from an old backup?); refusing to serve it: use the newest journal: %w",
					where, m.Backend, m.describe(), ErrMarkerAhead)
			}
		}
		if m := f.newest(""); m != nil && m.Epoch > j.Epoch {
			return markersAgree, fmt.Errorf("cutover: journal %s records epoch %d (state %s) but backend %s records %s: the journal is older than the backends (restored from an old backup, or another proxy with its own journal migrated them); refusing to serve an older route: use the newest journal, or run the replicas in fleet mode: %w",
				where, j.Epoch, j.State, m.Backend, m.describe(), ErrMarkerAhead)
		}
		ks, err := newKeyStoreID()
		if err != nil {
			return markersAgree, err
		}
		c.log.Info("cutover: upgrading the journal: this key store gets its identity", "journal", where, "key_store", ks)
		j.KeyStore = ks
		return markersUpgrade, nil
	}
	newest := f.newest(j.KeyStore)
	if newest == nil {
		if others := f.keyStores(); len(others) > 0 && f.readable == 2 {
			return markersAgree, fmt.Errorf("cutover: journal %s belongs to key store %s but backends %s and %s record only other key stores (%s): this journal is not these backends' (copied from another installation?); refusing to serve it: %w",
				where, j.KeyStore, c.sides.src.name, c.sides.tgt.name, strings.Join(others, ", "), ErrMarkerContradicts)
		}
		if j.Epoch > 1 && f.readable == 2 {
			return markersAgree, fmt.Errorf("cutover: journal %s records epoch %d (state %s) of key store %s but neither %s nor %s holds a marker of it: the backends never recorded this journal's migration (their markers were removed, or the journal is not theirs); refusing to serve it: restore the markers' backends, or move the journal aside to start from what the backends record: %w",
				where, j.Epoch, j.State, j.KeyStore, c.sides.src.name, c.sides.tgt.name, ErrMarkerContradicts)
		}
		return markersNote, nil // a fresh key store's first marker may not have been written yet
	}
	if err := agreement(&j.Header, newest); err != nil {
		how := "use the newest journal"
		if errors.Is(err, ErrMarkerContradicts) {
			how = "restore the journal this proxy wrote, or move it aside to start from what the backends record"
		}
		return markersAgree, fmt.Errorf("cutover: journal %s: %w; refusing to serve it: %s", where, err, how)
	}
	if newest.Epoch == j.Epoch {
		return markersNote, nil // and the backend that may lack it gets it
	}
	return markersAgree, nil
}

// markerWriter records each epoch on both backends. A transition writes its marker first,
// synchronously, and goes on once one backend holds it (record); the other is written in the
// background, retried until it succeeds or a newer epoch replaces it, so a transition never
// waits for a backend that is down (a rollback away from a failing target must not). Writes to
// one backend are serialized and never go back to an older epoch.
type markerWriter struct {
	c    *Controller
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	stopOnce sync.Once
	started  atomic.Bool
	inflight sync.WaitGroup // record's writes
	mu       sync.Mutex
	want     *Marker
	written  map[string]uint64 // backend → order() of the marker it holds
	failing  map[string]bool   // the last attempt failed
	locks    map[string]*sync.Mutex
}

func newMarkerWriter(c *Controller) *markerWriter {
	w := &markerWriter{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		written: map[string]uint64{}, failing: map[string]bool{}, locks: map[string]*sync.Mutex{}}
	for _, b := range []*backend{c.sides.src, c.sides.tgt} {
		w.locks[b.name] = &sync.Mutex{}
	}
	return w
}

// run writes in the background until close; Controller.Run starts it.
func (w *markerWriter) run() {
	if !w.started.CompareAndSwap(false, true) {
		return
	}
	go w.loop()
}

// note asks for m to be written to the backends that lack it.
func (w *markerWriter) note(m *Marker) {
	w.mu.Lock()
	if w.want == nil || m.order() > w.want.order() || m.order() == w.want.order() && m.KeyStore != w.want.KeyStore {
		w.want = m
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// record writes m to both backends at once and returns when one holds it, or with an error
// naming both failures when neither does (the transition is then not taken), or when ctx ends
// first. The writes outlive ctx: the one that loses the race goes on in the background (bounded
// by the marker timeout, as every write is), and close waits for it. (Cancelling it with ctx
// made it count as a failing backend, which the last write at shutdown skips: a transition made
// just before a shutdown left the slower backend without its record.)
func (w *markerWriter) record(ctx context.Context, m *Marker) error {
	w.note(m)
	bs := []*backend{w.c.sides.src, w.c.sides.tgt}
	res := make(chan error, len(bs))
	wctx := context.WithoutCancel(ctx)
	for _, b := range bs {
		w.inflight.Go(func() { res <- w.writeOne(wctx, b, m) })
	}
	var errs []error
	for range bs {
		select {
		case err := <-res:
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			return fmt.Errorf("cutover: recording epoch %d on the backends failed: %w", m.Epoch, errors.Join(errs...))
		}
	}
	return fmt.Errorf("cutover: recording epoch %d on the backends failed: %w", m.Epoch, errors.Join(errs...))
}

// writeOne writes m to b unless b already holds m's epoch or a newer one.
func (w *markerWriter) writeOne(ctx context.Context, b *backend, m *Marker) error {
	l := w.locks[b.name]
	l.Lock()
	defer l.Unlock()
	w.mu.Lock()
	have := w.written[b.name]
	w.mu.Unlock()
	if have > m.order() {
		return nil
	}
	err := w.c.writeMarker(ctx, b, m)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failing[b.name] = err != nil
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	w.written[b.name] = max(w.written[b.name], m.order())
	return nil
}

// pending returns the marker to write and the backends still lacking it.
func (w *markerWriter) pending(skipFailing bool) (*Marker, []*backend) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want == nil {
		return nil, nil
	}
	var bs []*backend
	for _, b := range []*backend{w.c.sides.src, w.c.sides.tgt} {
		if w.written[b.name] < w.want.order() && !(skipFailing && w.failing[b.name]) {
			bs = append(bs, b)
		}
	}
	return w.want, bs
}

// writeAll writes m to bs concurrently; it reports whether every write succeeded.
func (w *markerWriter) writeAll(m *Marker, bs []*backend) bool {
	var wg sync.WaitGroup
	var failed atomic.Bool
	for _, b := range bs {
		wg.Go(func() {
			if err := w.writeOne(context.Background(), b, m); err != nil {
				failed.Store(true)
				w.c.log.Warn("cutover: recording the epoch on the backend failed; retrying", "backend", b.name, "epoch", m.Epoch, "err", truncate(err.Error()))
			}
		})
	}
	wg.Wait()
	return !failed.Load()
}

func (w *markerWriter) loop() {
	defer close(w.done)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := time.Second
	for {
		select {
		case <-w.stop:
			// Last chance for a transition made just before shutdown; a backend that was
			// failing is not waited for again.
			if m, bs := w.pending(true); len(bs) > 0 {
				w.writeAll(m, bs)
			}
			return
		case <-w.wake:
		case <-retry.C:
		}
		m, bs := w.pending(false)
		if len(bs) == 0 {
			continue
		}
		if w.writeAll(m, bs) {
			backoff = time.Second
			continue
		}
		retry.Reset(backoff)
		backoff = min(backoff*2, 30*time.Second)
	}
}

// close waits for record's writes, writes what is pending once more and stops; safe to call
// twice (Close may be).
func (w *markerWriter) close() {
	w.inflight.Wait()
	w.stopOnce.Do(func() { close(w.stop) })
	if w.started.Load() {
		<-w.done
	}
}

// removeLegacy destroys the markers of an earlier release (fixed id, no key store) once this
// key store's own are written, so that the id they held is free for a customer key. Only an
// object that carries the marker tag and no key store is removed: what the tag marks is ours.
func (c *Controller) removeLegacy(ctx context.Context) {
	for _, b := range []*backend{c.sides.src, c.sides.tgt} {
		ms, err := c.discoverMarkers(ctx, b)
		if err != nil {
			continue
		}
		for _, m := range ms {
			if m.KeyStore != "" {
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, c.cfg.MarkerTimeout)
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
