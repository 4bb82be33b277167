package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/xksproxy/xksproxy/cosmian"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/xks"
)

// The controller in service under a Live: at most one writes the journal at a time. It outlives
// reloads that do not change it; one that does is replaced only while no migration is in
// flight (the old one stops, then the new one loads the journal). A start or plan that names
// another pair builds the controller of that pair the same way.

// running is a loaded controller and its Run.
type running struct {
	o      *openedController
	route  proxy.Route // the route its Load gave
	cancel context.CancelFunc
	done   chan error
}

// stop ends the controller's Run (its last progress written, the journal closed) and closes its
// fleet store; a controller whose Run has not started (after an upgrade, until the previous
// process has gone) releases what its Load opened.
func (r *running) stop() error {
	if r.cancel == nil {
		r.o.close()
		return nil
	}
	r.cancel()
	err := <-r.done
	if r.o.store != nil {
		_ = r.o.store.Close()
	}
	return err
}

// routeFan is the proxy as the controller drives it (cutover.Proxy) across reloads: a route goes
// to every proxy in service (two during a reload), a forward to the newest.
type routeFan struct {
	mu sync.Mutex
	ps []*proxy.Proxy
}

var _ cutover.Proxy = (*routeFan)(nil)

func (f *routeFan) SetRoute(epoch uint64, primary, fallback string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first error
	for _, p := range f.ps {
		if err := p.SetRoute(proxy.Route{Epoch: epoch, Primary: primary, Fallback: fallback}); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (f *routeFan) Forward(ctx context.Context, backend string, op xks.Operation, keyID string, body []byte) (int, []byte, error) {
	f.mu.Lock()
	if len(f.ps) == 0 {
		f.mu.Unlock()
		return 0, nil, errors.New("app: no proxy in service")
	}
	p := f.ps[len(f.ps)-1]
	f.mu.Unlock()
	return p.Forward(ctx, backend, op, keyID, body)
}

// add puts p in service, on the newest proxy's route when that is as new as p's (the controller
// applied it while p started); a controller that just loaded the journal built p on a newer one.
func (f *routeFan) add(p *proxy.Proxy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.ps); n > 0 {
		if r := f.ps[n-1].Route(); r.Epoch >= p.Route().Epoch {
			if err := p.SetRoute(r); err != nil {
				return err
			}
		}
	}
	f.ps = append(f.ps, p)
	return nil
}

func (f *routeFan) remove(p *proxy.Proxy) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, q := range f.ps {
		if q == p {
			f.ps = append(f.ps[:i], f.ps[i+1:]...)
			return
		}
	}
}

// current is the newest proxy in service (nil before the first).
func (f *routeFan) current() *proxy.Proxy {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ps) == 0 {
		return nil
	}
	return f.ps[len(f.ps)-1]
}

// kmipClients are the backends' KMIP clients of an App configuration, by name.
func kmipClients(ac Config) map[string]*cosmian.Client {
	out := map[string]*cosmian.Client{}
	for name, r := range ac.Proxy.KeyInfo.Readers {
		if c, ok := r.(*cosmian.Client); ok {
			out[name] = c
		}
	}
	return out
}

// withPair returns ac's controller configuration migrating source → target.
func withPair(ac Config, source, target string) (*cutover.Config, error) {
	k := kmipClients(ac)
	for _, n := range []string{source, target} {
		if k[n] == nil {
			return nil, fmt.Errorf("%w: backend %q has no ckms_config (KMIP access as the keys' owner): it cannot be migrated from or to", cutover.ErrWrongState, n)
		}
	}
	cc := *ac.Cutover
	if cc.Source.Name != source {
		cc.Source = cutover.Backend{Name: source, KMIP: k[source], ACL: cutover.ACLBoth}
	}
	if cc.Target.Name != target {
		acl := ac.Cutover.Target.ACL
		if target == ac.Cutover.Source.Name {
			acl = cutover.ACLBoth
		}
		cc.Target = cutover.Backend{Name: target, KMIP: k[target], ACL: acl}
	}
	return &cc, nil
}

// journalPair is the pair the controller is built with: the journal's while a migration is in
// flight (it decides, not the configuration); else the configured one, with the backend that
// serves as the source when the configuration names it on neither side (a migration started
// with --source and --target finished there). In fleet mode the store holds the journal: the
// configured pair.
func journalPair(ac Config, log *slog.Logger) (source, target string) {
	src, tgt := ac.Cutover.Source.Name, ac.Cutover.Target.Name
	if ac.Fleet != nil {
		return src, tgt
	}
	h, err := cutover.ReadJournalHeader(ac.Cutover.JournalPath)
	if err != nil || h == nil {
		return src, tgt // Load says what is wrong with it
	}
	if h.InMigration() {
		if h.Source != src || h.Target != tgt {
			log.Info("cutover: the journal's migration in flight names its pair", "source", h.Source, "target", h.Target,
				"configured_source", src, "configured_target", tgt, "state", h.State)
		}
		return h.Source, h.Target
	}
	if a := h.Primary(); a != src && a != tgt {
		return a, tgt
	}
	return src, tgt
}
