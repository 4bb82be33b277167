package cutover

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/cosmian"
)

// The marker is the backends' own record of the last epoch: one object per backend, written
// through KMIP as the keys' owner after every transition, read back at start-up. A proxy whose
// journal is lost (a pod re-created on an emptyDir, a wiped disk) would otherwise start as
// "serving the configured source, epoch 1" after a migration already moved the keys, strand
// the keys created on the target and let a repeated CreateKey mint a second key under one id.
// The marker is a PreActive AES key with random, meaningless material and no grants, so no
// XKS caller can use it; its tags carry the record. It never migrates (excluded like the
// health-check key) and never leaves a backend.

// DefaultMarkerID is the unique identifier of the marker object on every backend.
const DefaultMarkerID = "xksproxy-cutover-marker"

// DefaultMarkerTimeout bounds one marker read or write.
const DefaultMarkerTimeout = 5 * time.Second

// ErrMarkerAhead is wrapped by New's error when the backends record a later epoch than the
// journal (or the journal is missing and they record any migration).
var ErrMarkerAhead = errors.New("the backends record a later cutover epoch than the journal")

// ErrMarkerUnreadable is wrapped by New's error when the journal is missing and a backend's
// marker cannot be read, so a migration cannot be ruled out.
var ErrMarkerUnreadable = errors.New("backend cutover marker unreadable")

// Marker tag names; one tag per field, "name:value".
const (
	markerTag       = "xksproxy-cutover-marker"
	markerEpoch     = "xksproxy-epoch:"
	markerState     = "xksproxy-state:"
	markerPrimary   = "xksproxy-primary:"
	markerFallback  = "xksproxy-fallback:"
	markerSource    = "xksproxy-source:"
	markerTarget    = "xksproxy-target:"
	markerUpdatedAt = "xksproxy-updated:"
)

// Marker is what a backend records about the migration state of the key store.
type Marker struct {
	Backend           string    `json:"backend"` // where it was read (not stored)
	Epoch             uint64    `json:"epoch"`
	State             State     `json:"state"`
	Primary, Fallback string    `json:"-"`
	Source, Target    string    `json:"-"`
	UpdatedAt         time.Time `json:"updated_at"`
}

func (m *Marker) tags() []string {
	t := []string{markerTag,
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
	return fmt.Sprintf("epoch %d, state %s, %s, migration %s → %s%s", m.Epoch, m.State, route, m.Source, m.Target, at)
}

// readMarker returns b's marker, nil if it has none.
func (c *Controller) readMarker(ctx context.Context, b *backend) (*Marker, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.MarkerTimeout)
	defer cancel()
	a, err := b.k.GetAttributes(ctx, c.cfg.MarkerID)
	if errors.Is(err, cosmian.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := parseMarker(b.name, a.Tags)
	if err != nil {
		return nil, fmt.Errorf("object %s on %s is not a valid cutover marker: %v", c.cfg.MarkerID, b.name, err)
	}
	return m, nil
}

// writeMarker replaces b's marker with m.
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
		UID: c.cfg.MarkerID, ReplaceExisting: true, Material: material,
		Attributes: cosmian.KeyAttributes{Tags: m.tags()},
	})
	return err
}

// checkMarkers compares the backends' markers with the journal at start-up. present says
// whether j was read from disk; when it was not, j is the fresh epoch-1 journal about to be
// written, and checkMarkers may raise its epoch to the backends' when that changes nothing
// (they record a finished migration and the configured source is the backend they say
// serves). Otherwise a marker ahead of the journal refuses the start, naming what it found.
func (c *Controller) checkMarkers(j *journal, present bool) error {
	ctx := context.Background()
	var newest *Marker
	for _, b := range []*backend{c.src, c.tgt} {
		m, err := c.readMarker(ctx, b)
		if err != nil {
			if present {
				// The journal is there and is the authority; the marker is a backstop.
				c.log.Warn("cutover: cannot read the backend's cutover marker", "backend", b.name, "err", truncate(err.Error()))
				continue
			}
			return fmt.Errorf("cutover: journal %s is missing and backend %s cannot be read to rule out an earlier migration: %v; refusing to start as if none had happened: retry once %s answers, or restore the journal from a backup: %w",
				c.file.path, b.name, truncate(err.Error()), b.name, ErrMarkerUnreadable)
		}
		if m != nil && (newest == nil || m.Epoch > newest.Epoch) {
			newest = m
		}
	}
	if newest == nil || newest.Epoch <= j.Epoch && present {
		return nil
	}
	if present {
		return fmt.Errorf("cutover: journal %s records epoch %d (state %s) but backend %s records %s: the journal is older than the backends (restored from an old backup, or another proxy with its own journal migrated them); refusing to serve an older route: use the newest journal, or run the replicas in fleet mode: %w",
			c.file.path, j.Epoch, j.State, newest.Backend, newest.describe(), ErrMarkerAhead)
	}
	terminal := !newest.State.inMigration() && newest.Fallback == ""
	if terminal && newest.Primary == c.src.name {
		// The backends say the configured source serves alone: a fresh journal at their epoch
		// is what the lost one would have said, minus finished per-key history.
		c.log.Warn("cutover: journal missing; continuing from the epoch the backends record",
			"journal", c.file.path, "backend", newest.Backend, "epoch", newest.Epoch, "state", newest.State, "serving", newest.Primary)
		j.Epoch = newest.Epoch
		return nil
	}
	fresh := fmt.Sprintf("cutover: journal %s is missing but backend %s records %s; starting afresh would serve %s at epoch 1",
		c.file.path, newest.Backend, newest.describe(), c.src.name)
	var how string
	switch {
	case terminal:
		how = fmt.Sprintf("restore the journal from a backup, or, to go on from %s, configure [cutover] source = %q (and [route] primary = %q) and start again",
			newest.Primary, newest.Primary, newest.Primary)
	default:
		how = fmt.Sprintf("the migration's per-key progress was in that journal: restore it from a backup and start again to resume or roll back the migration; never start it afresh while %s holds keys the other side may lack",
			newest.Primary)
	}
	return fmt.Errorf("%s; refusing to start: %s (a marker left by a test environment is removed by destroying object %s on %s and %s as the keys' owner): %w",
		fresh, how, c.cfg.MarkerID, c.src.name, c.tgt.name, ErrMarkerAhead)
}

// markerWriter records each epoch on both backends in the background: a transition never
// waits for a backend that may be down (a rollback away from a failing target must not), a
// failed write is retried until it succeeds or a newer epoch replaces it, and one goroutine
// writes, so a backend's marker never goes back to an older epoch.
type markerWriter struct {
	c    *Controller
	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	stopOnce sync.Once
	mu       sync.Mutex
	want     *Marker
	written  map[string]uint64 // backend → epoch it holds
	failing  map[string]bool   // the last attempt failed
}

func newMarkerWriter(c *Controller) *markerWriter {
	w := &markerWriter{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		written: map[string]uint64{}, failing: map[string]bool{}}
	go w.loop()
	return w
}

// note asks for epoch's marker to be written; called after every transition.
func (w *markerWriter) note(j *journal) {
	p, f := routeOf(j)
	m := &Marker{Epoch: j.Epoch, State: j.State, Primary: p, Fallback: f, Source: j.Source, Target: j.Target, UpdatedAt: j.UpdatedAt}
	w.mu.Lock()
	if w.want == nil || m.Epoch > w.want.Epoch {
		w.want = m
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pending returns the marker to write and the backends still lacking it.
func (w *markerWriter) pending(skipFailing bool) (*Marker, []*backend) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want == nil {
		return nil, nil
	}
	var bs []*backend
	for _, b := range []*backend{w.c.src, w.c.tgt} {
		if w.written[b.name] < w.want.Epoch && !(skipFailing && w.failing[b.name]) {
			bs = append(bs, b)
		}
	}
	return w.want, bs
}

// writeAll writes m to bs concurrently; it reports whether every write succeeded.
func (w *markerWriter) writeAll(m *Marker, bs []*backend) bool {
	var wg sync.WaitGroup
	ok := true
	for _, b := range bs {
		wg.Go(func() {
			err := w.c.writeMarker(context.Background(), b, m)
			w.mu.Lock()
			defer w.mu.Unlock()
			w.failing[b.name] = err != nil
			if err != nil {
				ok = false
				w.c.log.Warn("cutover: recording the epoch on the backend failed; retrying", "backend", b.name, "epoch", m.Epoch, "err", truncate(err.Error()))
				return
			}
			w.written[b.name] = max(w.written[b.name], m.Epoch)
		})
	}
	wg.Wait()
	return ok
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

// close writes what is pending once more and stops; safe to call twice (Close may be).
func (w *markerWriter) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// markerDefaults fills the marker settings and keeps the marker out of every migration.
func (c *Config) markerDefaults() error {
	if c.MarkerID == "" {
		c.MarkerID = DefaultMarkerID
	}
	if err := validKeyID(c.MarkerID); err != nil {
		return fmt.Errorf("cutover: marker id: %w", err)
	}
	if c.MarkerTimeout <= 0 {
		c.MarkerTimeout = DefaultMarkerTimeout
	}
	c.Select.Exclude = append(c.Select.Exclude[:len(c.Select.Exclude):len(c.Select.Exclude)], c.MarkerID)
	return nil
}
