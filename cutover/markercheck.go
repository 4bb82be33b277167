package cutover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// The markers judged against a journal: at start-up (checkMarkers, for the file journal, the fleet
// store's journal or a member's local copy) and, in fleet mode, before a member applies an epoch
// it read from the store (verifyHeader).

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

func (c *markerBook) discoverAll(ctx context.Context) found {
	var f found
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range []*backend{c.src, c.tgt} {
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
func (c *markerBook) checkMarkers(ctx context.Context, j *journal, present bool, where string) (markerAction, error) {
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
	if terminal && newest.Primary == c.src.name {
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
		where, newest.Backend, newest.describe(), c.src.name)
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
		fresh, how, newest.UID, c.src.name, c.tgt.name, ErrMarkerAhead)
}

// checkPresent is checkMarkers for a journal that was read.
func (c *markerBook) checkPresent(j *journal, f found, where string) (markerAction, error) {
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
				where, j.KeyStore, c.src.name, c.tgt.name, strings.Join(others, ", "), ErrMarkerContradicts)
		}
		if j.Epoch > 1 && f.readable == 2 {
			return markersAgree, fmt.Errorf("cutover: journal %s records epoch %d (state %s) of key store %s but neither %s nor %s holds a marker of it: the backends never recorded this journal's migration (their markers were removed, or the journal is not theirs); refusing to serve it: restore the markers' backends, or move the journal aside to start from what the backends record: %w",
				where, j.Epoch, j.State, j.KeyStore, c.src.name, c.tgt.name, ErrMarkerContradicts)
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

// verifyHeader is what a member checks before it applies an epoch read from the store: the same
// key store, and a record the backends hold (agreement). Someone who can write the store cannot
// make a member route where the backends never went. ErrMarkerUnreadable: the markers could not
// be read now (retried).
func (c *markerBook) verifyHeader(ctx context.Context, h *Header, ks string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*c.timeout)
	defer cancel()
	if ks != "" && h.KeyStore != ks {
		return fmt.Errorf("%w: the store names key store %q, this member serves key store %s", ErrMarkerContradicts, h.KeyStore, ks)
	}
	if h.KeyStore == "" {
		return c.verifyLegacyHeader(ctx, h)
	}
	var newest *Marker
	var failed []string
	for _, b := range []*backend{c.src, c.tgt} {
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
func (c *markerBook) verifyLegacyHeader(ctx context.Context, h *Header) error {
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
