package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The ledger owns the journal: the state machine's header, the per-key records, the created-key
// notes, what changed since the last save, and the in-memory marks of the copies in flight.
// Nothing else reads or writes them; every part asks the ledger.
//
// Its locks, in the order they are taken:
//   - writeMu orders the journal's writes (a move, a flush, a key store identity, an adoption):
//     a move holds it across its network writes (markers, store) so that no other write comes
//     between them.
//   - mu guards the journal in memory and is never held across a network call. The helpers
//     named ...Locked expect it held.
//
// The request path reads the state without a lock (state).
type ledger struct {
	log           *slog.Logger
	m             *metrics
	now           func() time.Time
	store         Storage
	rec           recorder      // the backends' markers: a move is recorded there before it is journaled
	recordTimeout time.Duration // bounds that record

	writeMu sync.Mutex
	mu      sync.Mutex
	j       *journal
	unsaved unsaved
	created map[string]side      // CreatedDuring (source) ∪ CreatedOnTarget (target): dedupe, and where
	changed chan struct{}        // closed and replaced when the state changed (and its route was applied)
	cur     atomic.Pointer[live] // what the request path reads without a lock
	// onCreated wakes the backfill: a key was created while the target serves.
	onCreated chan struct{}
	marks     keyMarks
	tally     tally // the key records counted (status, metrics)
}

// recorder writes the backends' markers (markerWriter).
type recorder interface {
	// record writes m and returns once one backend holds it (the other in the background).
	record(ctx context.Context, m *Marker) error
	// note asks for m to be written to the backends that lack it, in the background.
	note(m *Marker)
}

func newLedger(log *slog.Logger, m *metrics, now func() time.Time, store Storage, rec recorder, recordTimeout time.Duration) *ledger {
	return &ledger{log: log, m: m, now: now, store: store, rec: rec, recordTimeout: recordTimeout,
		unsaved: unsaved{keys: map[string]bool{}}, created: map[string]side{}, changed: make(chan struct{}),
		onCreated: make(chan struct{}, 1), marks: keyMarks{pending: map[string]string{}, completed: map[string]bool{}}, tally: newTally()}
}

// adopt makes j the journal (loaded at start, or read from the fleet store by a member that
// starts driving or becomes ready). What was not saved of the previous one is dropped.
func (l *ledger) adopt(j *journal) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.j = j
	l.tally.recount(j.Keys)
	l.rebuildCreatedLocked()
	l.unsaved = unsaved{keys: map[string]bool{}}
	l.publishLocked()
	l.m.setState(j.State, j.Epoch)
	l.m.setKeys(l.tally.byPR)
}

func (l *ledger) rebuildCreatedLocked() {
	clear(l.created)
	for _, id := range l.j.CreatedDuring {
		if l.created[id] == sideNone {
			l.created[id] = sideSource
		}
	}
	for _, id := range l.j.CreatedOnTarget {
		if l.created[id] == sideNone {
			l.created[id] = sideTarget
		}
	}
}

// loaded reports whether a journal was adopted.
func (l *ledger) loaded() bool { return l.cur.Load() != nil }

// live is what the request path reads without a lock: the state, and the keys kept on a
// backend for good (nil: none).
type live struct {
	state State
	kept  map[string]string // key id → the backend that serves it
}

// publishLocked makes the journal's state and kept keys what the request path reads.
func (l *ledger) publishLocked() {
	v := &live{state: l.j.State}
	if len(l.j.Kept) > 0 {
		v.kept = make(map[string]string, len(l.j.Kept))
		for _, k := range l.j.Kept {
			v.kept[k.ID] = k.On
		}
	}
	l.cur.Store(v)
}

// keptOn names the backend that serves keyID for good, "" for a key that moves (the request
// path asks: no lock, no allocation).
func (l *ledger) keptOn(keyID string) string {
	v := l.cur.Load()
	if v == nil || v.kept == nil {
		return ""
	}
	return v.kept[keyID]
}

// keep records that keyID, which cannot be exported, stays served by on for good (reason says
// why). Saved with the header by the next flush; the request path routes it there at once.
func (l *ledger) keep(keyID, on, reason string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.j.Kept {
		if k.ID == keyID {
			return nil
		}
	}
	if len(l.j.Kept) >= MaxKept {
		return fmt.Errorf("cutover: more than %d keys cannot be exported: keeping them on %s would make the journal's header too large; they block the switch", MaxKept, on)
	}
	l.j.Kept = append(l.j.Kept, KeptKey{ID: keyID, On: on, Reason: reason})
	l.unsaved.header = true
	l.publishLocked()
	return nil
}

// state is the current state, without a lock (the request path reads it).
func (l *ledger) state() State { return l.cur.Load().state }

// header is a copy of the journal's header.
func (l *ledger) header() Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.j.Header
}

// moved is a move the ledger took: the epoch and route to apply.
type moved struct {
	from, to          State
	epoch             uint64
	primary, fallback string
}

// move takes the move ev names in the state table, bumping the epoch: the backends record it
// first (one is enough), then the journal, so the journal is never ahead of the backends'
// record, and the caller applies the route only after (a route neither backend recorded is
// never served). mutate edits the header before it is written; the table's key effect is applied
// to the records. On failure nothing changed but the created-key notes appended meanwhile.
// The caller holds the controller's control lock.
func (l *ledger) move(ev event, mutate func(h *Header)) (moved, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	from := l.j.State
	to, keys, err := next(from, ev)
	if err != nil {
		l.mu.Unlock()
		return moved{}, err
	}
	old := l.j.clone()
	l.j.State = to
	l.j.Epoch++
	l.j.UpdatedAt = l.now().UTC()
	switch keys {
	case keysReset:
		// What the last migration completed or left half-copied says nothing of this one's keys
		// (the same id may be a new key now, the sides may be swapped).
		l.setKeysLocked(map[string]*KeyProgress{})
		l.j.CreatedDuring, l.j.CreatedOnTarget = nil, nil
		clear(l.created)
		l.marks.reset()
	case keysFailed:
		for id := range l.tally.failed {
			l.deleteKeyLocked(id)
		}
	}
	if mutate != nil {
		mutate(&l.j.Header)
	}
	ch := l.unsaved.take(l.j)
	ch.PrevEpoch = old.Epoch
	hdr := l.j.Header
	ch.Header = &hdr
	diffJournal(old, l.j, &ch)
	mk := markerOf(l.j)
	mk.Pending = true
	l.mu.Unlock()
	// The backends and the store are written without mu (network calls): the request-path
	// hooks only append created-key notes meanwhile, which the revert below keeps.
	rctx, cancel := context.WithTimeout(context.Background(), l.recordTimeout)
	err = l.rec.record(rctx, mk)
	cancel()
	if err == nil {
		err = l.save(ch)
	}
	l.mu.Lock()
	if err != nil {
		l.j.Header = old.Header
		if ch.ResetKeys {
			l.setKeysLocked(old.Keys)
			l.j.CreatedDuring, l.j.CreatedOnTarget = old.CreatedDuring, old.CreatedOnTarget
			l.rebuildCreatedLocked()
		} else {
			for id := range ch.Keys {
				if k, ok := old.Keys[id]; ok {
					l.putKeyLocked(id, k)
				} else {
					l.deleteKeyLocked(id)
				}
			}
		}
		l.unsaved.requeue(Change{Created: ch.Created})
		l.mu.Unlock()
		l.log.Error("cutover: recording the transition failed (backends or journal); transition not taken", "from", from, "event", ev, "to", to, "err", err)
		return moved{}, err
	}
	mv := moved{from: from, to: to, epoch: l.j.Epoch}
	mv.primary, mv.fallback = l.j.Route()
	l.publishLocked()
	l.m.setState(to, mv.epoch)
	l.m.setKeys(l.tally.byPR)
	l.rec.note(markerOf(l.j)) // confirmed, in the background
	l.mu.Unlock()
	l.log.Info("cutover transition", "from", from, "event", ev, "to", to, "epoch", mv.epoch, "primary", mv.primary, "fallback", mv.fallback)
	return mv, nil
}

// announce wakes the waiters on the state (wait): after a move's route was applied (or refused).
func (l *ledger) announce() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// wait blocks until the state is one of states, or ctx ends.
func (l *ledger) wait(ctx context.Context, states []State) (State, error) {
	for {
		l.mu.Lock()
		s, ch := l.j.State, l.changed
		l.mu.Unlock()
		if slices.Contains(states, s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

// edit changes the header within the epoch (options, last error, probation passed): saved by the
// next flush.
func (l *ledger) edit(mutate func(h *Header)) {
	l.mu.Lock()
	mutate(&l.j.Header)
	l.unsaved.header = true
	l.mu.Unlock()
}

// setError records why the machine is stuck without changing state.
func (l *ledger) setError(msg string) { l.edit(func(h *Header) { h.LastError = msg }) }

// setKey records a key's progress; "the target already held it" sticks.
func (l *ledger) setKey(id string, kp KeyProgress) {
	l.mu.Lock()
	if old, ok := l.j.Keys[id]; ok && old.Existing {
		kp.Existing = true
	}
	l.putKeyLocked(id, &kp)
	l.unsaved.keys[id] = true
	l.mu.Unlock()
}

// key is a key's progress.
func (l *ledger) key(id string) (KeyProgress, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.j.Keys[id]
	if !ok {
		return KeyProgress{}, false
	}
	return *k, true
}

// keyIDs lists, sorted, the journaled keys whose progress keep accepts (nil: all).
func (l *ledger) keyIDs(keep func(KeyProgress) bool) []string {
	l.mu.Lock()
	ids := make([]string, 0, len(l.j.Keys))
	for id, k := range l.j.Keys {
		if keep == nil || keep(*k) {
			ids = append(ids, id)
		}
	}
	l.mu.Unlock()
	sort.Strings(ids)
	return ids
}

// split tells the journaled ids of ids from the others, keeping their order.
func (l *ledger) split(ids []string) (known, unknown []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if _, ok := l.j.Keys[id]; ok {
			known = append(known, id)
		} else {
			unknown = append(unknown, id)
		}
	}
	return known, unknown
}

// failures lists the keys whose copy or verification failed, sorted.
func (l *ledger) failures() []KeyFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failuresLocked()
}

func (l *ledger) failuresLocked() []KeyFailure {
	var out []KeyFailure
	for id := range l.tally.failed {
		k := l.j.Keys[id]
		out = append(out, KeyFailure{KeyID: id, Phase: k.Phase, Result: k.Result, Reason: k.Error})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

// createdKeys are copies of the created-key notes: on the source while it served (during), and
// on the target while it served (onTarget).
func (l *ledger) createdKeys() (during, onTarget []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.j.CreatedDuring), slices.Clone(l.j.CreatedOnTarget)
}

// createdOnTarget reports whether id was created on the target while it served.
func (l *ledger) createdOnTarget(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.j.CreatedOnTarget, id)
}

// isCreated reports whether id has a created-key note: a key made during the migration, which
// the migration is still placing on the other side (or has placed).
func (l *ledger) isCreated(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.created[id] != sideNone
}

// mayLack reports whether the backend on side s may not hold keyID yet. The target holds every
// key the copy reported copied and every key created on it; the source holds every key the
// migration found there and every key the source answered a CreateKey for.
func (l *ledger) mayLack(keyID string, s side) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case sideTarget:
		if k, ok := l.j.Keys[keyID]; ok && copied(*k, true) {
			return false
		}
	case sideSource:
		if _, ok := l.j.Keys[keyID]; ok {
			return false
		}
	}
	return l.created[keyID] != s
}

// holds reports whether the migration's records say the backend on side s holds keyID: a key
// the copy reported copied is on both sides, a key created during the migration on the side
// that answered its CreateKey, and on both once this process completed its copy. false means
// the records do not know (it may or may not be there).
func (l *ledger) holds(keyID string, s side) bool {
	l.mu.Lock()
	k, copiedKey := l.j.Keys[keyID]
	on := l.created[keyID]
	l.mu.Unlock()
	if copiedKey && copied(*k, true) || on == s {
		return true
	}
	return on != sideNone && l.marks.isCompleted(keyID)
}

// noteCreated records a created-key note for id, once: decide says, from the state, what the
// note is (or that none is needed). It reports the state decide saw and whether a note was
// added. decide runs under mu.
func (l *ledger) noteCreated(id string, decide func(State) (CreatedKey, bool)) (State, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.j.State
	if l.created[id] != sideNone {
		return st, false
	}
	n, ok := decide(st)
	if !ok {
		return st, false
	}
	l.addCreatedLocked(n)
	l.unsaved.created = append(l.unsaved.created, n)
	return st, true
}

// addCreatedLocked records a created-key note (noticed here or, in fleet mode, by another
// member) once.
func (l *ledger) addCreatedLocked(n CreatedKey) {
	if l.created[n.ID] != sideNone {
		return
	}
	l.created[n.ID] = sideSource
	if n.OnTarget {
		l.created[n.ID] = sideTarget
	}
	l.j.addCreated(n)
	if st := l.j.State; st == StateSwitched || st == StateFinalized {
		select {
		case l.onCreated <- struct{}{}:
		default:
		}
	}
}

// createdSignal is the backfill's wake-up: a key was created while the target serves.
func (l *ledger) createdSignal() <-chan struct{} { return l.onCreated }

// setListed records the size of the current work list (progress).
func (l *ledger) setListed(n int) {
	l.mu.Lock()
	l.tally.listed = n
	l.mu.Unlock()
}

// fill sets the journal's part of a status (the route, the key counts and failures) and
// reports whether probation passed.
func (l *ledger) fill(s *Status) (probationPassed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j := l.j
	primary, fallback := j.Route()
	s.JournalState = JournalState{
		Epoch: j.Epoch, State: j.State, Source: j.Source, Target: j.Target,
		Primary: primary, Fallback: fallback,
		StartedAt: j.StartedAt, UpdatedAt: j.UpdatedAt, SwitchedAt: j.SwitchedAt,
		Options: j.Options, Reason: j.Reason, LastError: j.LastError,
	}
	s.CreatedDuring = len(j.CreatedDuring)
	s.CreatedOnTarget = slices.Clone(j.CreatedOnTarget)
	c := l.tally.counts
	s.Keys.Copied, s.Keys.Skipped, s.Keys.Verified = c.Copied, c.Skipped, c.Verified
	s.Keys.Errors, s.Keys.Conflicts, s.Keys.Kept = c.Errors, c.Conflicts, c.Kept
	s.Failures = l.failuresLocked()
	s.FailuresTotal = len(s.Failures)
	s.Keys.Total = max(l.tally.listed, len(j.Keys))
	s.Keys.Pending = max(0, s.Keys.Total-s.Keys.Copied-s.Keys.Errors-s.Keys.Conflicts-s.Keys.Kept)
	s.Kept = slices.Clone(j.Kept)
	return j.ProbationPassed
}

// flush writes what changed since the last save; all false (a fleet member that does not drive)
// writes only the created-key notes.
func (l *ledger) flush(all bool) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	ch := l.unsaved.take(l.j)
	if !all {
		ch.Header, ch.Keys = nil, nil
	}
	if ch.Header == nil && len(ch.Keys) == 0 && len(ch.Created) == 0 {
		l.mu.Unlock()
		return nil
	}
	l.m.setKeys(l.tally.byPR)
	l.mu.Unlock()
	if err := l.save(ch); err != nil {
		l.mu.Lock()
		if !errors.Is(err, ErrFenced) {
			l.unsaved.requeue(ch)
		} else {
			l.unsaved.requeue(Change{Created: ch.Created})
		}
		l.mu.Unlock()
		return err
	}
	return nil
}

// save writes ch to the store with a bounded wait.
func (l *ledger) save(ch Change) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.store.Save(ctx, ch)
}

// identify gives a journal of an earlier release its key store identity: recorded on the backends
// first, then in the store's header (same epoch; fenced in fleet mode), then in memory.
func (l *ledger) identify(ctx context.Context, ks string) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	h := l.j.Header
	l.mu.Unlock()
	if h.KeyStore != "" {
		return nil
	}
	h.KeyStore = ks
	rctx, cancel := context.WithTimeout(ctx, l.recordTimeout)
	err := l.rec.record(rctx, markerOf(&journal{Header: h}))
	cancel()
	if err != nil {
		return err
	}
	if err := l.save(Change{PrevEpoch: h.Epoch, Header: &h}); err != nil {
		return err
	}
	l.mu.Lock()
	l.j.KeyStore = ks
	l.mu.Unlock()
	return nil
}

// take applies a stored header a fleet member verified against the markers: a newer epoch, or
// (for a member that does not drive) the current epoch's header again, which the driver updates
// between epochs. It reports whether the header was taken (its route is then to be applied).
func (l *ledger) take(h *Header, driver bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.j.Epoch
	if h.Epoch <= cur && (driver || h.Epoch < cur) {
		return false // taken meanwhile
	}
	if l.j.KeyStore != "" && h.KeyStore != l.j.KeyStore {
		return false // the identity cannot change under a member (verifyHeader refuses it)
	}
	if h.StartedAt != l.j.StartedAt && h.State == StateCopying {
		// A new migration: the previous one's notes are gone from the store too.
		l.j.CreatedDuring, l.j.CreatedOnTarget = nil, nil
		clear(l.created)
		l.setKeysLocked(map[string]*KeyProgress{})
	}
	l.j.Header = *h
	l.publishLocked()
	l.m.setState(h.State, h.Epoch)
	return true
}

// takeKey applies a key record the driver wrote.
func (l *ledger) takeKey(ev KeyEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.j.Keys == nil {
		l.setKeysLocked(map[string]*KeyProgress{})
	}
	if ev.Progress == nil {
		l.deleteKeyLocked(ev.ID)
	} else {
		l.putKeyLocked(ev.ID, ev.Progress)
	}
}

// takeCreated applies a created-key note another member wrote.
func (l *ledger) takeCreated(n CreatedKey) {
	l.mu.Lock()
	l.addCreatedLocked(n)
	l.mu.Unlock()
}

// resync applies a reloaded store's notes and records, if they are of the same migration (the
// header was taken first: a new migration's clears the previous one's records).
func (l *ledger) resync(snap *Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if snap.Header.StartedAt != l.j.StartedAt {
		return
	}
	for _, n := range snap.Created {
		l.addCreatedLocked(n)
	}
	if snap.Keys != nil {
		l.setKeysLocked(snap.Keys)
	}
}

// unsaved is what changed since the last save: the header, key records, created-key notes.
type unsaved struct {
	header  bool
	keys    map[string]bool
	created []CreatedKey
}

// take returns the change that saves what is unsaved of j, and forgets it.
func (u *unsaved) take(j *journal) Change {
	ch := Change{PrevEpoch: j.Epoch, Created: u.created}
	if u.header {
		h := j.Header
		ch.Header = &h
	}
	if len(u.keys) > 0 {
		ch.Keys = make(map[string]*KeyProgress, len(u.keys))
		for id := range u.keys {
			if k, ok := j.Keys[id]; ok {
				kk := *k
				ch.Keys[id] = &kk
			} else {
				ch.Keys[id] = nil
			}
		}
		clear(u.keys)
	}
	u.header, u.created = false, nil
	return ch
}

// requeue marks a change that could not be saved as unsaved again.
func (u *unsaved) requeue(ch Change) {
	if ch.Header != nil {
		u.header = true
	}
	for id := range ch.Keys {
		u.keys[id] = true
	}
	u.created = append(ch.Created, u.created...)
}

// diffJournal adds to ch what a move changed between old and cur: a reset (a new migration),
// or the key records it touched. Moves are few, so this O(keys) walk is paid a handful of times
// per migration, never per flush.
func diffJournal(old, cur *journal, ch *Change) {
	reset := (len(cur.Keys) == 0 && len(old.Keys) > 0) ||
		len(cur.CreatedDuring) < len(old.CreatedDuring) || len(cur.CreatedOnTarget) < len(old.CreatedOnTarget)
	if reset {
		ch.ResetKeys = true
		ch.Keys = make(map[string]*KeyProgress, len(cur.Keys))
		for id, k := range cur.Keys {
			kk := *k
			ch.Keys[id] = &kk
		}
		ch.Created = cur.snapshot().Created
		return
	}
	for id, k := range cur.Keys {
		if o, ok := old.Keys[id]; !ok || *o != *k {
			if ch.Keys == nil {
				ch.Keys = map[string]*KeyProgress{}
			}
			kk := *k
			ch.Keys[id] = &kk
		}
	}
	for id := range old.Keys {
		if _, ok := cur.Keys[id]; !ok {
			if ch.Keys == nil {
				ch.Keys = map[string]*KeyProgress{}
			}
			ch.Keys[id] = nil
		}
	}
}

// keyMarks are, in memory only, the copies this process imported and is still granting
// (pending: for that moment a refusal there is not policy, GrantsPending) and the new keys whose
// copy to the other side it finished (completed: a rollback need not check them again; after a
// restart it checks every one).
type keyMarks struct {
	mu        sync.Mutex
	pending   map[string]string // id → the backend whose grants are being written
	completed map[string]bool
}

func (k *keyMarks) markPending(id, backend string) {
	k.mu.Lock()
	k.pending[id] = backend
	k.mu.Unlock()
}

// clearPending ends id's pending state on backend (and only there: a pending copy to the other
// side is not finished by this one).
func (k *keyMarks) clearPending(id, backend string) {
	k.mu.Lock()
	if k.pending[id] == backend {
		delete(k.pending, id)
	}
	k.mu.Unlock()
}

// grantsPending reports whether backend holds id as a copy whose rights are still being written.
func (k *keyMarks) grantsPending(id, backend string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.pending[id]
	return ok && b == backend
}

func (k *keyMarks) markCompleted(id string) {
	k.mu.Lock()
	k.completed[id] = true
	k.mu.Unlock()
}

func (k *keyMarks) isCompleted(id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.completed[id]
}

// reset forgets every mark: a new migration.
func (k *keyMarks) reset() {
	k.mu.Lock()
	clear(k.completed)
	clear(k.pending)
	k.mu.Unlock()
}
