package cutover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

// changeLine is one appended change in the journal file.
type changeLine struct {
	Change *changeRecord `json:"change"`
}

type changeRecord struct {
	Header    *Header                 `json:"header,omitempty"`
	ResetKeys bool                    `json:"reset_keys,omitempty"`
	Keys      map[string]*KeyProgress `json:"keys,omitempty"` // null deletes
	Created   []CreatedKey            `json:"created,omitempty"`
}

func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// apply makes j what it is after ch.
func (j *journal) apply(ch *changeRecord) {
	if ch.Header != nil {
		j.Header = *ch.Header
	}
	if ch.ResetKeys {
		j.Keys = map[string]*KeyProgress{}
		j.CreatedDuring, j.CreatedOnTarget = nil, nil
	}
	for id, k := range ch.Keys {
		if k == nil {
			delete(j.Keys, id)
			continue
		}
		kk := *k
		j.Keys[id] = &kk
	}
	for _, n := range ch.Created {
		j.addCreated(n)
	}
}

// addCreated records a created-key note (the caller dedupes). A note's legacy By is ignored.
func (j *journal) addCreated(n CreatedKey) {
	if n.OnTarget {
		j.CreatedOnTarget = append(j.CreatedOnTarget, n.ID)
	} else {
		j.CreatedDuring = append(j.CreatedDuring, n.ID)
	}
}

// snapshot converts j for a Storage.
func (j *journal) snapshot() *Snapshot {
	s := &Snapshot{Header: j.Header, Keys: make(map[string]*KeyProgress, len(j.Keys))}
	for id, k := range j.Keys {
		kk := *k
		s.Keys[id] = &kk
	}
	for _, id := range j.CreatedDuring {
		s.Created = append(s.Created, CreatedKey{ID: id})
	}
	for _, id := range j.CreatedOnTarget {
		s.Created = append(s.Created, CreatedKey{ID: id, OnTarget: true})
	}
	return s
}

// journalFrom converts a stored snapshot.
func journalFrom(s *Snapshot) *journal {
	j := &journal{Header: s.Header, Keys: make(map[string]*KeyProgress, len(s.Keys))}
	for id, k := range s.Keys {
		kk := *k
		j.Keys[id] = &kk
	}
	seen := map[string]bool{}
	for _, n := range s.Created {
		if !seen[n.ID] {
			seen[n.ID] = true
			j.addCreated(n)
		}
	}
	return j
}

// ReadJournalHeader reads the header of the file journal at path without taking the journal
// (nil and no error when there is none). The app reads in it which pair a migration in flight
// migrates, to build the controller for that pair.
func ReadJournalHeader(path string) (*Header, error) {
	j, ok, err := loadJournal(path)
	if err != nil || !ok {
		return nil, err
	}
	h := j.Header
	return &h, nil
}

// InMigration reports whether the header's state belongs to a migration that has not ended.
func (h *Header) InMigration() bool { return h.State.inMigration() }

// minCompact is the appended size below which the journal file is never rewritten.
const minCompact = 1 << 20

// fileStorage is the single-process journal: a snapshot file (rewritten atomically) followed
// by appended changes, each fsynced. Its cost per Save is the size of the change; the whole
// file is rewritten only when the appended changes outgrow the snapshot (amortised constant
// cost per key) or a new migration resets the keys.
type fileStorage struct {
	journalFile
	mu         sync.Mutex
	mirror     *journal // what the file holds (nil before Load)
	app        *os.File // append handle on the current snapshot
	snapBytes  int64
	logBytes   int64
	resnap     bool // the last append failed: the next Save rewrites the file
	closed     bool // the controller is done with it: no write reopens the file
	minCompact int64
}

func newFileStorage(path string) *fileStorage {
	return &fileStorage{journalFile: journalFile{path: path}, minCompact: minCompact}
}

func (f *fileStorage) Where() string { return f.path }

func (f *fileStorage) Load(context.Context) (*Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removeStale()
	j, ok, err := loadJournal(f.path)
	if err != nil || !ok {
		return nil, err
	}
	f.mirror = j
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", f.path, err)
	}
	f.snapBytes, f.logBytes = st.Size(), 0
	return j.snapshot(), nil
}

func (f *fileStorage) Save(_ context.Context, ch Change) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("journal %s: closed (the controller stopped)", f.path)
	}
	rec := &changeRecord{Header: ch.Header, ResetKeys: ch.ResetKeys, Keys: ch.Keys, Created: ch.Created}
	if f.mirror == nil {
		if ch.Header == nil {
			return fmt.Errorf("journal %s: first write without a header", f.path)
		}
		f.mirror = &journal{Keys: map[string]*KeyProgress{}}
		f.resnap = true
	}
	f.mirror.apply(rec)
	if f.resnap || ch.ResetKeys || f.app == nil || f.logBytes > max(f.snapBytes, f.minCompact) {
		return f.rewrite()
	}
	line, err := json.Marshal(changeLine{Change: rec})
	if err != nil {
		return fmt.Errorf("journal %s: encode: %w", f.path, err)
	}
	line = append(line, '\n')
	if _, err := f.app.Write(line); err != nil {
		f.resnap = true
		return fmt.Errorf("journal %s: append: %w", f.path, err)
	}
	if err := f.app.Sync(); err != nil {
		f.resnap = true
		return fmt.Errorf("journal %s: fsync: %w", f.path, err)
	}
	f.logBytes += int64(len(line))
	return nil
}

// rewrite replaces the file with a snapshot of the mirror and reopens the append handle.
func (f *fileStorage) rewrite() error {
	if f.app != nil {
		f.app.Close()
		f.app = nil
	}
	f.resnap = true
	n, err := f.write(f.mirror)
	if err != nil {
		return err
	}
	app, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("journal %s: %w", f.path, err)
	}
	f.app, f.snapBytes, f.logBytes, f.resnap = app, int64(n), 0, false
	return nil
}

// close releases the append handle; later writes are refused.
func (f *fileStorage) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.app != nil {
		f.app.Close()
		f.app = nil
	}
}
