package cutover

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// markerWriter records each epoch on both backends. A transition writes its marker first,
// synchronously, and goes on once one backend holds it (record); the other is written in the
// background, retried until it succeeds or a newer epoch replaces it, so a transition never
// waits for a backend that is down (a rollback away from a failing target must not). Writes to
// one backend are serialized and never go back to an older epoch.
type markerWriter struct {
	*markerBook
	wake chan struct{}
	stop chan struct{}

	inflight sync.WaitGroup // record's writes
	mu       sync.Mutex
	want     *Marker
	written  map[string]uint64 // backend → order() of the marker it holds
	failing  map[string]bool   // the last attempt failed
	locks    map[string]*sync.Mutex
}

func newMarkerWriter(b *markerBook) *markerWriter {
	w := &markerWriter{markerBook: b, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		written: map[string]uint64{}, failing: map[string]bool{}, locks: map[string]*sync.Mutex{}}
	for _, b := range []*backend{b.src, b.tgt} {
		w.locks[b.name] = &sync.Mutex{}
	}
	return w
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
	bs := []*backend{w.src, w.tgt}
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
	err := w.writeMarker(ctx, b, m)
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
	for _, b := range []*backend{w.src, w.tgt} {
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
				w.log.Warn("cutover: recording the epoch on the backend failed; retrying", "backend", b.name, "epoch", m.Epoch, "err", truncate(err.Error()))
			}
		})
	}
	wg.Wait()
	return !failed.Load()
}

// loop writes in the background until close; Run runs it.
func (w *markerWriter) loop() {
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

// settle waits for record's writes (Load leaves none running).
func (w *markerWriter) settle() { w.inflight.Wait() }

// close waits for record's writes and stops the loop, which writes what is pending once more;
// Run calls it once, then waits for the loop.
func (w *markerWriter) close() {
	w.settle()
	close(w.stop)
}
