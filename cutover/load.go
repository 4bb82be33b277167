package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// loader reads the journal at start-up and judges it against the configuration and the backends'
// markers (checkMarkers) before the ledger adopts it: the journal, not the configuration, decides
// which backend serves, and it is served only if the backends' own records agree with it.
type loader struct {
	src, tgt string
	store    Storage      // the journal: the file, or the fleet store
	file     *fileStorage // in fleet mode, the local copy of the last applied epoch
	markers  *markerWriter
	book     *ledger
	log      *slog.Logger
	now      func() time.Time
}

func (c *loader) loadJournal(ctx context.Context) error {
	snap, err := c.store.Load(ctx)
	if err != nil {
		return err
	}
	var j *journal
	if snap != nil {
		j = journalFrom(snap)
	} else if j, err = c.freshJournal(); err != nil {
		return err
	}
	// The journal is served only if the backends' own records agree with it; with no journal,
	// they say whether a migration happened without it.
	act, err := c.markers.checkMarkers(ctx, j, snap != nil, c.store.Where())
	if err != nil {
		return err
	}
	if err := c.settleMarkers(ctx, j, act, func() error {
		if snap != nil && act != markersRecord && act != markersUpgrade {
			return nil
		}
		return c.store.Save(ctx, Change{PrevEpoch: j.Epoch, Header: &j.Header})
	}); err != nil {
		return err
	}
	return c.adopt(j)
}

// settleMarkers writes what checkMarkers asked for around store, which stores j: a record is
// written on the backends before j is stored (as every transition is), a fresh key store's
// marker after.
func (c *loader) settleMarkers(ctx context.Context, j *journal, act markerAction, store func() error) error {
	switch act {
	case markersRecord:
		if err := c.markers.record(ctx, markerOf(j)); err != nil {
			return fmt.Errorf("%w; refusing to start on a record the backends do not hold: retry once one of them answers", err)
		}
	case markersUpgrade:
		if err := c.markers.record(ctx, markerOf(j)); err != nil {
			// The journal keeps no identity the backends do not hold: the next start upgrades.
			c.log.Warn("cutover: cannot record the key store's identity on the backends yet; the next start retries", "err", truncate(err.Error()))
			j.KeyStore = ""
			return nil
		}
	}
	if err := store(); err != nil {
		return err
	}
	switch act {
	case markersNote:
		c.markers.note(markerOf(j))
	case markersUpgrade:
		c.markers.removeLegacy(ctx)
	}
	return nil
}

// freshJournal is the journal of a key store that never migrated: epoch 1, the source serves,
// and a new key store identity.
func (c *loader) freshJournal() (*journal, error) {
	ks, err := newKeyStoreID()
	if err != nil {
		return nil, err
	}
	now := c.now().UTC()
	return &journal{Header: Header{Version: journalVersion, KeyStore: ks, Epoch: 1, State: StateServing,
		Source: c.src, Target: c.tgt, StartedAt: now, UpdatedAt: now},
		Keys: map[string]*KeyProgress{}}, nil
}

// adopt checks a loaded journal against the configuration and makes it current.
func (c *loader) adopt(j *journal) error {
	if err := fits(j, c.src, c.tgt, c.store.Where()); err != nil {
		return err
	}
	c.book.adopt(j)
	return nil
}

// fits checks a stored journal against the configuration's sides, src → tgt.
func fits(j *journal, src, tgt, where string) error {
	if err := j.validate(); err != nil {
		return corrupt(where, "%v", err)
	}
	if j.State.inMigration() {
		if j.Source != src || j.Target != tgt {
			return fmt.Errorf("journal %s: a migration %s → %s is in state %s but the configuration names %s → %s; restore that configuration, then finish or roll back the migration",
				where, j.Source, j.Target, j.State, src, tgt)
		}
	} else if a, _ := j.Route(); a != src && a != tgt {
		return fmt.Errorf("journal %s: backend %q is serving (state %s, epoch %d) but the configuration has no backend of that name; refusing to route elsewhere",
			where, a, j.State, j.Epoch)
	}
	return nil
}

// loadFleet reads the shared journal at start. With the store unreachable it falls back to
// the local copy of the last epoch this replica applied; with neither, it is not ready. Whatever
// it serves, the backends' markers must agree with it (checkMarkers), as in a single process.
// applied says whether the proxy is to be built on the adopted journal's epoch (its first
// application); not when the member starts without store nor local copy (not ready).
func (c *loader) loadFleet(ctx context.Context) (applied bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	local, err := c.file.Load(ctx)
	if err != nil {
		return false, err
	}
	snap, err := c.store.Load(ctx)
	if err == nil && snap == nil {
		if local != nil && local.Header.Epoch > 1 {
			return false, fmt.Errorf("%s holds no journal but this replica applied epoch %d (state %s, %s serving) according to %s: refusing to start the fleet again at epoch 1; restore the store, or move %s aside if this key store's fleet is to start afresh",
				c.store.Where(), local.Header.Epoch, local.Header.State, local.Header.Primary(), c.file.Where(), c.file.Where())
		}
		if snap, err = c.createFleetJournal(ctx); err != nil {
			return false, err
		}
	}
	if err != nil {
		if local == nil {
			c.log.Warn("fleet: store unreachable and no local copy of an applied epoch; not ready until the store answers",
				"store", c.store.Where(), "err", err)
			j, ferr := c.freshJournal()
			if ferr != nil {
				return false, ferr
			}
			j.KeyStore = "" // unknown until the store answers; the markers judge what it says
			return false, c.adopt(j)
		}
		j := journalFrom(local)
		if _, err := c.markers.checkMarkers(ctx, j, true, c.file.Where()); err != nil {
			return false, err
		}
		c.log.Warn("fleet: store unreachable at start; serving the last applied epoch from the local copy",
			"store", c.store.Where(), "local", c.file.Where(), "epoch", j.Epoch, "state", j.State, "err", err)
		return true, c.adopt(j)
	}
	if local != nil && local.Header.Epoch > snap.Header.Epoch {
		return false, fmt.Errorf("%s is at epoch %d but this replica applied epoch %d (%s) according to %s: the store went back in time (restored from an old backup?); refusing to serve an older route",
			c.store.Where(), snap.Header.Epoch, local.Header.Epoch, local.Header.State, c.file.Where())
	}
	if local != nil && local.Header.KeyStore != "" && snap.Header.KeyStore != local.Header.KeyStore {
		return false, fmt.Errorf("%w: %s holds key store %q but this replica served key store %s according to %s: refusing to serve another key store's state; restore the store, or move %s aside if this replica joins another key store",
			ErrMarkerContradicts, c.store.Where(), snap.Header.KeyStore, local.Header.KeyStore, c.file.Where(), c.file.Where())
	}
	j := journalFrom(snap)
	// Legacy (no key store yet) is accepted as the markers allow; the driver gives it its
	// identity (drive).
	legacy := j.KeyStore == ""
	act, err := c.markers.checkMarkers(ctx, j, true, c.store.Where())
	if err != nil {
		return false, err
	}
	if legacy {
		j.KeyStore = "" // only the elected driver writes the identity
	} else if act == markersNote {
		c.markers.note(markerOf(j))
	}
	// The proxy is built on this epoch's route: that is its first application.
	return true, c.adopt(j)
}

// createFleetJournal writes the store's first journal: a fresh key store's, or one that goes on
// from what the backends' markers record (checkMarkers). Whichever member gets there first
// writes it; the others load it.
func (c *loader) createFleetJournal(ctx context.Context) (*Snapshot, error) {
	j, err := c.freshJournal()
	if err != nil {
		return nil, err
	}
	act, err := c.markers.checkMarkers(ctx, j, false, c.store.Where())
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
