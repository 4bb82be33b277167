package cutover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// journalVersion is the only on-disk format this package reads or writes.
const journalVersion = 1

// maxJournalSize bounds what Load reads: the journal holds ids and short
// reasons, never material, so even 100k keys stay far below this.
const maxJournalSize = 64 << 20

// KeyProgress is the journaled progress of one key. It never holds material.
type KeyProgress struct {
	Phase  Phase  `json:"phase"`
	Result string `json:"result"`          // ok | skipped | conflict | error
	Error  string `json:"error,omitempty"` // reason, for conflict/error
	// Existing: the target already held the identical key (copy skipped).
	Existing bool `json:"existing,omitempty"`
}

// Phase is the step of a key's migration a KeyProgress records.
type Phase string

// Per-key phases and results.
const (
	PhaseCopy   Phase = "copy"
	PhaseVerify Phase = "verify"

	ResultOK       = "ok"
	ResultSkipped  = "skipped" // identical key already on the target
	ResultConflict = "conflict"
	ResultError    = "error"
	// ResultKept: the key cannot be exported and stays served by the source for good
	// (Selection.Unmovable = UnmovableKeep; Header.Kept routes it).
	ResultKept = "kept"
)

// journal is the persisted state machine: the header (see Header; its fields are the file's
// first fields) and the per-key records.
type journal struct {
	Header
	Keys map[string]*KeyProgress `json:"keys"`
	// CreatedDuring are ids seen in CreateKey while the source was primary
	// (they must be copied before the switch).
	CreatedDuring []string `json:"created_during,omitempty"`
	// CreatedOnTarget are ids seen in CreateKey after the switch: they exist
	// only on the target and must be copied back before a rollback.
	CreatedOnTarget []string `json:"created_on_target,omitempty"`
	// LegacyCreatedBy is what earlier releases recorded as each new key's creator (the
	// CreateKey caller's principal). A caller's word is never a source of rights: it is read so
	// that those journals still load, then dropped, and never written again.
	LegacyCreatedBy map[string]string `json:"created_by,omitempty"`
}

// ErrCorruptJournal is wrapped by Load's error when the journal cannot be trusted.
var ErrCorruptJournal = errors.New("corrupt journal")

func corrupt(path, format string, args ...any) error {
	return fmt.Errorf("journal %s: corrupt: %s; refusing to start (move it aside to start fresh): %w",
		path, fmt.Sprintf(format, args...), ErrCorruptJournal)
}

// loadJournal reads path. ok is false when the file does not exist.
func loadJournal(path string) (j *journal, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("journal %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return nil, false, fmt.Errorf("journal %s: %w", path, err)
	}
	if len(data) > maxJournalSize {
		return nil, false, corrupt(path, "larger than %d bytes", maxJournalSize)
	}
	j, err = parseJournal(data)
	if err != nil {
		return nil, false, corrupt(path, "%v", err)
	}
	return j, true, nil
}

// parseJournal decodes and validates a journal file's bytes: a snapshot (the journal as one
// JSON object), then the changes appended since, one JSON object per line. An incomplete last
// change is a write the crash interrupted before it returned: it is dropped.
func parseJournal(data []byte) (*journal, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty file")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	// Read the version first so an unknown version is reported as such,
	// not as an unknown field of version 1.
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if v.Version == nil {
		return nil, errors.New("no version field")
	}
	if *v.Version != journalVersion {
		return nil, fmt.Errorf("unknown version %d (this build reads version %d)", *v.Version, journalVersion)
	}
	j := new(journal)
	if err := strictJSON(raw, j); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if j.Keys == nil {
		j.Keys = map[string]*KeyProgress{}
	}
	j.LegacyCreatedBy = nil
	for n := 1; dec.More(); n++ {
		var rec json.RawMessage
		err := dec.Decode(&rec)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("appended change %d: invalid JSON: %v", n, err)
		}
		var ch changeLine
		if err := strictJSON(rec, &ch); err != nil || ch.Change == nil {
			return nil, fmt.Errorf("appended change %d: not a change record (%v)", n, err)
		}
		if h := ch.Change.Header; h != nil && h.Version != journalVersion {
			return nil, fmt.Errorf("appended change %d: unknown version %d", n, h.Version)
		}
		j.apply(ch.Change)
	}
	if err := j.validate(); err != nil {
		return nil, err
	}
	return j, nil
}

// validate checks what a stored journal (file or fleet store) must hold to be trusted.
func (j *journal) validate() error {
	if !j.State.valid() {
		return fmt.Errorf("unknown state %q", j.State)
	}
	if j.Epoch == 0 {
		return errors.New("epoch is 0")
	}
	if !validKeyStoreID(j.KeyStore) {
		return fmt.Errorf("key store %.40q is not a key store identity", j.KeyStore)
	}
	if j.Source == "" || (j.State != StateServing && j.Target == "") {
		return errors.New("missing source or target backend name")
	}
	if j.Source == j.Target {
		return fmt.Errorf("source and target are both %q", j.Source)
	}
	if len(j.Kept) > MaxKept {
		return fmt.Errorf("%d kept keys (at most %d)", len(j.Kept), MaxKept)
	}
	for _, k := range j.Kept {
		if validKeyID(k.ID) != nil || k.On == "" {
			return errors.New("a kept key without an id or a backend")
		}
	}
	for id, k := range j.Keys {
		if id == "" || k == nil {
			return errors.New("empty key entry")
		}
		if k.Phase != PhaseCopy && k.Phase != PhaseVerify {
			return fmt.Errorf("key %q: unknown phase %q", id, k.Phase)
		}
		switch k.Result {
		case ResultOK, ResultSkipped, ResultConflict, ResultError, ResultKept:
		default:
			return fmt.Errorf("key %q: unknown result %q", id, k.Result)
		}
	}
	return nil
}

// journalFile writes the journal atomically: temp file in the same
// directory, fsync, rename over the old one, fsync the directory. A crash at
// any point leaves either the old or the new complete file.
type journalFile struct {
	path string
	// beforeRename is a test hook simulating a crash between write and rename.
	beforeRename func() error
}

func (f *journalFile) tempPrefix() string { return "." + filepath.Base(f.path) + ".tmp-" }

// removeStale deletes temp files a crash may have left behind.
func (f *journalFile) removeStale() {
	dir := filepath.Dir(f.path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), f.tempPrefix()) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// write replaces the file with j and returns the bytes written. The snapshot is compact JSON:
// at 100 000 keys indentation alone would add a quarter to every rewrite.
func (f *journalFile) write(j *journal) (int, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return 0, fmt.Errorf("journal %s: encode: %w", f.path, err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, f.tempPrefix())
	if err != nil {
		return 0, fmt.Errorf("journal %s: %w", f.path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return 0, fmt.Errorf("journal %s: %w", f.path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return 0, fmt.Errorf("journal %s: write: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("journal %s: fsync: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("journal %s: %w", f.path, err)
	}
	if f.beforeRename != nil {
		if err := f.beforeRename(); err != nil {
			return 0, fmt.Errorf("journal %s: %w", f.path, err)
		}
	}
	if err := os.Rename(name, f.path); err != nil {
		return 0, fmt.Errorf("journal %s: rename: %w", f.path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return 0, fmt.Errorf("journal %s: fsync dir: %w", f.path, err)
		}
	}
	return len(data), nil
}

// clone deep-copies j so it can be encoded outside the controller's lock.
func (j *journal) clone() *journal {
	c := *j
	c.Keys = make(map[string]*KeyProgress, len(j.Keys))
	for id, k := range j.Keys {
		kk := *k
		c.Keys[id] = &kk
	}
	c.CreatedDuring = append([]string(nil), j.CreatedDuring...)
	c.CreatedOnTarget = append([]string(nil), j.CreatedOnTarget...)
	c.Kept = append([]KeptKey(nil), j.Kept...)
	return &c
}
