package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xksproxy/xksproxy/config"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/proxy"
)

// Live is a running xksproxy that outlives its configurations: a reload (SIGHUP) builds the
// parts the new file describes, checks them, starts them on the same listening sockets, swaps
// them in and drains the old ones (the proxy of each configuration drains its own connections:
// proxy/drain.go); the controller in service is kept unless the file changes it. A reload that
// cannot be applied leaves everything running as it was and says why, key by key.
type Live struct {
	cfg    LiveConfig
	log    *slog.Logger
	m      *liveMetrics
	keep   *keeper
	routes routeFan
	seam   *seam // the proxies' Migration; nil parts before a controller exists

	mu       sync.Mutex // orders reloads, pair changes, the journal's release and resumption
	file     *config.File
	ac       Config
	gen      *generation
	ctl      *running // nil without migrations, and while the journal is released
	released bool
	mayRun   bool // StartController was called: controllers run as soon as they are opened
	relayMu  sync.Mutex
	relayed  [][2]string // CreateKeys answered while released
	runCtx   context.Context
	draining sync.WaitGroup // old generations finishing their connections
	failed   chan error     // the proxy in service stopped by itself (a listener failed)
}

// LiveConfig configures a Live.
type LiveConfig struct {
	Path    string // the configuration file, read again on each reload
	Version string // e.g. "xksproxy 1.2.3"
	Logger  *slog.Logger
	// Level is the logger's level: [log] level applies on each reload.
	Level *slog.LevelVar
	// Sockets are the process's listening sockets, lent to each configuration's proxy.
	Sockets *Sockets
	// Setup turns a loaded file into an App configuration (FromFile and what serve adds).
	Setup func(ctx context.Context, f *config.File) (Config, error)
	// Acquire, when set, runs before the first controller reads the journal: the process this
	// one replaces lets go of it then (a binary upgrade).
	Acquire func(ctx context.Context) error
	// Registry holds the metrics that outlive a configuration (reloads, the controller's);
	// each configuration's registry exports them too. Default: a new one.
	Registry *prometheus.Registry
}

// generation is one configuration's proxy and certificate source, running.
type generation struct {
	p      *proxy.Proxy
	ac     Config
	cancel context.CancelFunc
	done   chan error
}

// NewLive builds the first configuration's parts from f (already loaded and checked): the
// controller loads the journal (after Acquire), the proxy is built on its route. Nothing
// listens until Run.
func NewLive(ctx context.Context, cfg LiveConfig, f *config.File) (*Live, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	l := &Live{cfg: cfg, log: cfg.Logger, keep: &keeper{reg: cfg.Registry}, seam: &seam{}, failed: make(chan error, 1)}
	l.m = newLiveMetrics(l.keep)
	ac, err := cfg.Setup(ctx, f)
	if err != nil {
		return nil, err
	}
	if cfg.Acquire != nil {
		if err := cfg.Acquire(ctx); err != nil {
			return nil, err
		}
	}
	l.file, l.ac = f, ac
	if ac.Cutover != nil {
		if l.ctl, err = l.openController(ac, nil); err != nil {
			return nil, err
		}
	}
	l.m.loaded(f, "start")
	return l, nil
}

// openController opens the controller of ac (on the pair its journal names, or pair) and makes
// it the seam's; its Run starts with startController.
func (l *Live) openController(ac Config, pair []string) (*running, error) {
	src, tgt := journalPair(ac, l.log)
	if len(pair) == 2 {
		src, tgt = pair[0], pair[1]
	}
	cc, err := withPair(ac, src, tgt)
	if err != nil {
		return nil, err
	}
	cc.Registry = l.keep
	ac.Cutover = cc
	pc := ac.Proxy
	o, err := openController(ac, &pc, &pairSwitch{l: l}, l.adminAddr, l.log)
	if err != nil {
		return nil, err
	}
	l.seam.cur.Store(o.parts)
	return &running{o: o, route: pc.Route}, nil
}

// startController runs r's controller, driving the proxies in service.
func (l *Live) startController(r *running) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(l.runCtx))
	r.cancel, r.done = cancel, make(chan error, 1)
	if ad := l.adminAddr(); ad != nil && l.ac.Fleet != nil {
		scheme := "http://"
		if l.ac.Proxy.Admin.TLS != nil {
			scheme = "https://"
		}
		r.o.ctrl.SetAdminAddress(scheme + ad.String())
	}
	go func() { r.done <- r.o.ctrl.Run(ctx, &l.routes) }()
}

func (l *Live) adminAddr() net.Addr {
	if p := l.routes.current(); p != nil {
		return p.AdminAddr()
	}
	return nil
}

// startGeneration builds and starts the proxy of ac on the sockets, on route (zero: ac's).
func (l *Live) startGeneration(ac Config, route proxy.Route) (*generation, error) {
	pc := ac.Proxy
	pc.ListenFunc = l.cfg.Sockets.Listen
	if route.Primary != "" {
		pc.Route = route
	}
	if ac.Cutover != nil {
		pc.Migration = l.seam
	}
	if err := l.keep.into(pc.Registry); err != nil {
		return nil, err
	}
	p, err := proxy.New(pc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(l.runCtx))
	g := &generation{p: p, ac: ac, cancel: cancel, done: make(chan error, 1)}
	var certsDone chan struct{}
	if ac.Certs != nil {
		certsDone = make(chan struct{})
		go func() {
			defer close(certsDone)
			if err := ac.Certs.Run(ctx); err != nil && ctx.Err() == nil {
				l.log.Error("tls: certificate source stopped", "err", err)
			}
		}()
	}
	pctx, pcancel := context.WithCancel(ctx)
	go func() {
		err := p.Run(pctx)
		if pctx.Err() == nil { // not stopped by a reload or the end: it failed
			select {
			case l.failed <- fmt.Errorf("app: the proxy stopped: %w", err):
			default:
			}
		}
		cancel()
		if certsDone != nil {
			<-certsDone
		}
		g.done <- err
	}()
	g.cancel = pcancel
	select {
	case <-p.Ready():
		return g, nil
	case err := <-g.done:
		select {
		case <-l.failed: // reported here, not to Run
		default:
		}
		return nil, err
	}
}

// Run serves until ctx ends: the first configuration's proxy on the sockets, then the
// controller (it resumes a journaled migration). It returns once every proxy drained and the
// controller wrote its last progress.
func (l *Live) Run(ctx context.Context, ready func()) error {
	l.mu.Lock()
	l.runCtx = ctx
	var route proxy.Route
	if l.ctl != nil {
		route = l.ctl.route
	}
	g, err := l.startGeneration(l.ac, route)
	if err != nil {
		if l.ctl != nil {
			l.ctl.o.close()
		}
		l.mu.Unlock()
		return err
	}
	l.gen = g
	if err := l.routes.add(g.p); err != nil {
		l.mu.Unlock()
		return err
	}
	l.mu.Unlock()
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
		return l.stop()
	case err = <-l.failed:
		return errors.Join(err, l.stop())
	}
}

// StartController starts the controller once the process may write the journal: at start, at
// once; after a binary upgrade, once the process it replaced stopped serving.
func (l *Live) StartController() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mayRun = true
	if l.ctl != nil && l.ctl.cancel == nil {
		l.startController(l.ctl)
	}
}

// runController runs r's controller, unless the process may not write the journal yet
// (StartController then runs it).
func (l *Live) runController(r *running) {
	if l.mayRun {
		l.startController(r)
	}
}

// stop ends everything: the proxies drain, then the controller stops.
func (l *Live) stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.gen != nil {
		l.gen.cancel()
		if err := <-l.gen.done; err != nil {
			errs = append(errs, err)
		}
	}
	l.draining.Wait()
	if l.ctl != nil {
		if err := l.ctl.stop(); err != nil {
			errs = append(errs, fmt.Errorf("app: cutover controller: %w", err))
		}
		l.ctl = nil
	}
	return errors.Join(errs...)
}

// Proxy is the proxy in service (for tests and the upgrade's readiness).
func (l *Live) Proxy() *proxy.Proxy { return l.routes.current() }

// Controller is the controller in service (nil without migrations or while released).
func (l *Live) Controller() *cutover.Controller {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctl == nil {
		return nil
	}
	return l.ctl.o.ctrl
}

// maxRelayed bounds the CreateKey notes kept while the journal is released.
const maxRelayed = 100000

// Release stops the controller so that another process may load the journal (a binary
// upgrade): it writes nothing more until Resume. Reloads are refused meanwhile. Each CreateKey
// this process answers from now on goes to created (the new process journals it) and is kept
// for Resume.
func (l *Live) Release(created func(keyID, backend string)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	l.relayed = nil
	relay := func(keyID, backend string) {
		l.relayMu.Lock()
		if len(l.relayed) < maxRelayed {
			l.relayed = append(l.relayed, [2]string{keyID, backend})
		}
		l.relayMu.Unlock()
		if created != nil {
			created(keyID, backend)
		}
	}
	l.seam.relay.Store(&relay)
	if l.ctl == nil {
		return nil
	}
	err := l.ctl.stop()
	l.ctl = nil
	l.log.Info("upgrade: the journal is released to the new process")
	return err
}

// Resume takes the journal back after an upgrade that failed: the controller loads it again and
// runs (the new process may have moved it on before it failed).
func (l *Live) Resume() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.released {
		return nil
	}
	l.released = false
	if l.ac.Cutover == nil {
		l.seam.relay.Store(nil)
		return nil
	}
	r, err := l.openController(l.ac, nil)
	if err != nil {
		return fmt.Errorf("app: resuming the journal after a failed upgrade: %w", err)
	}
	l.seam.relay.Store(nil)
	l.relayMu.Lock()
	notes := l.relayed
	l.relayed = nil
	l.relayMu.Unlock()
	t := r.o.ctrl.Traffic()
	for _, n := range notes {
		t.NoteCreateKey(n[0], n[1])
	}
	l.ctl = r
	l.runController(r)
	l.log.Info("upgrade: the journal is back with this process", "created_keys_meanwhile", len(notes))
	return nil
}

// NoteCreated journals a CreateKey the process this one replaced answered after it released the
// journal (before this controller runs, the note waits in its ledger).
func (l *Live) NoteCreated(keyID, backend string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctl != nil {
		l.ctl.o.ctrl.Traffic().NoteCreateKey(keyID, backend)
	}
}

// ConfigHash is the SHA-256 of the running configuration file's bytes.
func fileHash(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// keeper is the Registerer of the metrics that outlive a configuration: it remembers what was
// registered, so that each configuration's registry exports it too.
type keeper struct {
	reg *prometheus.Registry
	mu  sync.Mutex
	cs  []prometheus.Collector
}

func (k *keeper) Register(c prometheus.Collector) error {
	if err := k.reg.Register(c); err != nil {
		return err
	}
	k.mu.Lock()
	k.cs = append(k.cs, c)
	k.mu.Unlock()
	return nil
}

func (k *keeper) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := k.Register(c); err != nil {
			panic(err)
		}
	}
}

func (k *keeper) Unregister(c prometheus.Collector) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, x := range k.cs {
		if x == c {
			k.cs = append(k.cs[:i], k.cs[i+1:]...)
		}
	}
	return k.reg.Unregister(c)
}

// into registers what the keeper holds into a configuration's registry.
func (k *keeper) into(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.cs {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			return err
		}
	}
	return nil
}

// liveMetrics: the reloads and the configuration in service.
type liveMetrics struct {
	reloads *prometheus.CounterVec
	hash    *prometheus.GaugeVec
	at      prometheus.Gauge
	last    string // the hash label set now
}

// RegisterReloadMetrics registers the metrics of a Live's reloads on reg, as serve exports them
// (for what lists the exported metrics).
func RegisterReloadMetrics(reg prometheus.Registerer) { newLiveMetrics(reg) }

func newLiveMetrics(reg prometheus.Registerer) *liveMetrics {
	m := &liveMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xks_config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result: applied, refused (the file or a change it asks for), failed (the new parts did not start)."},
			[]string{"result"}),
		hash: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "xks_config_info",
			Help: "1 for the configuration file in service, by the SHA-256 of its bytes."}, []string{"sha256"}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{Name: "xks_config_loaded_timestamp_seconds",
			Help: "When the configuration in service was loaded (start or reload), Unix time."}),
	}
	for _, r := range []string{"applied", "refused", "failed"} {
		m.reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.reloads, m.hash, m.at)
	return m
}

func (m *liveMetrics) loaded(f *config.File, _ string) {
	h := fileHash(f.Path)
	if m.last != "" && m.last != h {
		m.hash.DeleteLabelValues(m.last)
	}
	m.last = h
	m.hash.WithLabelValues(h).Set(1)
	m.at.Set(float64(time.Now().UnixNano()) / 1e9)
}

// base is the file's name as messages give it.
func base(f *config.File) string { return filepath.Base(f.Path) }

// located is "FILE:LINE: key: msg" for key of f (the line when the file writes the key).
func located(f *config.File, key, format string, args ...any) error {
	return f.Locate(fmt.Errorf("%s: %s: %s", base(f), key, fmt.Sprintf(format, args...)))
}
