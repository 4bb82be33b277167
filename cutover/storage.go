package cutover

import (
	"context"
	"time"
)

// Storage persists the controller's journal. Two implementations: the single-process file
// journal (journal_path, the default) and the fleet store (package fleet, etcd), where several
// controllers share one journal and only the elected driver writes it.
//
// Writes are incremental: a Change carries only what moved since the last Save, so the cost of
// a Save grows with the keys that changed, never with the size of the migration.
type Storage interface {
	// Load returns the stored journal, or nil and no error when none was ever written.
	Load(ctx context.Context) (*Snapshot, error)
	// Save stores one change. A fenced store (fleet mode) refuses with ErrFenced a header or
	// key write from a member that is not the driver, or whose PrevEpoch is no longer the
	// stored epoch; created-key notes are accepted from any member.
	Save(ctx context.Context, ch Change) error
	// Where names the storage in messages: a file path or an etcd key prefix.
	Where() string
}

// Header is the journal without its per-key records: epoch, state, route names, options, times.
// It is small (well under a kilobyte) whatever the number of keys.
type Header struct {
	Version int `json:"version"`
	// KeyStore is the key store's identity: random, made with the first journal, recorded in
	// every marker. A journal or store state of another key store is refused.
	KeyStore  string    `json:"key_store,omitempty"`
	Epoch     uint64    `json:"epoch"`
	State     State     `json:"state"`
	Source    string    `json:"source"`
	Target    string    `json:"target"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// SwitchedAt is when traffic moved to the target (zero before).
	SwitchedAt time.Time `json:"switched_at,omitzero"`
	// ProbationPassed is set once the probation window ended without breach.
	ProbationPassed bool         `json:"probation_passed,omitempty"`
	Options         StartOptions `json:"options"`
	Reason          string       `json:"reason,omitempty"` // rollback reason
	// Kept are keys that cannot be exported, served for good by the backend named (Selection's
	// UnmovableKeep): their route survives finalize and the next migrations.
	Kept      []KeptKey `json:"kept,omitempty"`
	LastError string    `json:"last_error,omitempty"` // why the machine stopped, if it did
	// Paused: the operator paused the background work (`cutover pause`) until a resume; a
	// driver elected meanwhile stays paused.
	Paused bool `json:"paused,omitempty"`
}

// Route is the route this header's state serves (the state table's routes): primary and
// fallback backend names.
func (h *Header) Route() (primary, fallback string) {
	p, f := routeSides(h.State)
	return h.name(p), h.name(f)
}

// Primary names the backend that serves in this header's state.
func (h *Header) Primary() string {
	p, _ := h.Route()
	return p
}

func (h *Header) name(s side) string {
	switch s {
	case sideSource:
		return h.Source
	case sideTarget:
		return h.Target
	}
	return ""
}

// CreatedKey is one key id noticed in a CreateKey during a migration.
type CreatedKey struct {
	ID string `json:"id"`
	// OnTarget: created while the target served (it must reach the source before a rollback).
	OnTarget bool `json:"on_target,omitempty"`
	// By is what earlier releases wrote as the key's creator (the CreateKey caller's principal).
	// Anyone who can write the store can write it: it is read so that their records still
	// decode, and ignored. Never written.
	By string `json:"by,omitempty"`
}

// Snapshot is a whole stored journal.
type Snapshot struct {
	Header  Header
	Keys    map[string]*KeyProgress
	Created []CreatedKey
}

// Change is one incremental write.
type Change struct {
	// PrevEpoch is the epoch the writer holds: a fenced store writes only while it is still the
	// stored one (a transition stores Header.Epoch = PrevEpoch+1 in the same fenced write).
	PrevEpoch uint64
	// Header, when not nil, replaces the stored header.
	Header *Header
	// ResetKeys deletes every key record and created note before Keys and Created apply (a new
	// migration starts).
	ResetKeys bool
	// Keys are records to store; a nil value deletes that key's record.
	Keys map[string]*KeyProgress
	// Created are new created-key notes (add only).
	Created []CreatedKey
}

// KeptKey is a key that cannot be exported and stays served by backend On.
type KeptKey struct {
	ID     string `json:"id"`
	On     string `json:"on"`
	Reason string `json:"reason,omitempty"`
}

// MaxKept bounds the keys kept on a backend for good: they live in the journal's header, which
// every epoch writes whole.
const MaxKept = 1000
