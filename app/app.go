// Package app assembles a running xksproxy: the proxy (request path) and, when two or more
// backends are configured, the cutover controller (control path). The two packages do not import
// each other; this is the one place where they meet (seam.go): the controller's request-path
// side is the proxy's Migration, and the proxy is what the controller's Run drives.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"

	"github.com/xksproxy/xksproxy/certs"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/proxy"
	"github.com/xksproxy/xksproxy/sigv4"
)

// Config is a proxy configuration plus an optional migration controller.
type Config struct {
	Proxy proxy.Config
	// Cutover enables migrations; nil for a single-backend edge. Its Router and Forwarder are
	// filled in by New.
	Cutover *cutover.Config
	// Fleet, with Cutover, makes this process one member of a fleet of replicas that migrate
	// as one: the journal lives in etcd (Cutover.JournalPath keeps only a local copy of the
	// last applied epoch, served when etcd is unreachable at start), one elected member drives
	// the migration, every member applies and acknowledges each epoch. nil: one process with
	// the file journal.
	Fleet *fleet.Config
	// FleetAdmin, with Fleet, lets any member take operator calls for the driver.
	FleetAdmin FleetAdmin
	Logger     *slog.Logger
	// Certs, when set, is the certificate source behind Proxy.TLS: App.Run runs it (file
	// polling, ACME renewals) and App.ReloadTLS re-reads its files. nil: Proxy.TLS is static.
	Certs certs.Source
	// CertMetrics exports certificate expiry and SigV4 credential ages (already registered on
	// Proxy.Registry); App.SetCredentials keeps the ages current. May be nil.
	CertMetrics *certs.Metrics
}

// App is a wired proxy and controller.
type App struct {
	Proxy   *proxy.Proxy
	Cutover *cutover.Controller // nil without migrations
	log     *slog.Logger
	certs   certs.Source
	certM   *certs.Metrics
	fleet   fleet.Store // nil without a fleet
	// adminTLS: the admin listener has TLS; advertised: [fleet] advertise_admin is set.
	adminTLS, advertised bool
}

// closeFleet leaves the fleet: the member's lease is revoked (its record goes, its
// registration stays) and the store connection closes.
func (a *App) closeFleet() {
	if a.fleet != nil {
		_ = a.fleet.Close()
		a.fleet = nil
	}
}

// ErrNothingToReload is returned by ReloadTLS when the certificate does not come from files.
var ErrNothingToReload = errors.New("app: the certificate source has no files to reload")

// ReloadTLS re-reads the certificate and key files (tls.mode = "files") now, as on SIGHUP. A
// replacement that does not parse, does not match its key or has expired is refused: the
// current certificate stays in service and the error is returned. Other modes return
// ErrNothingToReload (ACME renews by itself; self-signed never changes).
func (a *App) ReloadTLS() error {
	r, ok := a.certs.(interface{ Reload() error })
	if !ok {
		return ErrNothingToReload
	}
	return r.Reload()
}

// SetCredentials replaces the SigV4 credential sets of one prefix without dropping
// connections, and the credential-age series of that prefix (sets with a zero Created have
// none).
func (a *App) SetCredentials(prefix string, creds []sigv4.Credential, ages []certs.CredentialAge) error {
	if err := a.Proxy.SetCredentials(prefix, creds); err != nil {
		return err
	}
	known := make([]certs.CredentialAge, 0, len(ages))
	for _, c := range ages {
		if !c.Created.IsZero() {
			known = append(known, c)
		}
	}
	return a.certM.SetCredentialAges(prefix, known)
}

// New builds the controller and loads its journal, then builds the proxy on the route the
// journal names (the journal, not the configuration, decides which backend serves), and
// connects them. Nothing runs until Run.
func New(cfg Config) (*App, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &App{log: log, certs: cfg.Certs, certM: cfg.CertMetrics, adminTLS: cfg.Proxy.Admin.TLS != nil,
		advertised: cfg.Fleet != nil && cfg.Fleet.Address != ""}
	pc := cfg.Proxy
	if cfg.Fleet != nil && cfg.Cutover == nil {
		return nil, errors.New("app: fleet mode needs the cutover controller (two backends and a [cutover] section)")
	}
	if cfg.Cutover != nil {
		oc, err := openController(cfg, &pc, nil, a.adminAddr, log)
		if err != nil {
			return nil, err
		}
		a.Cutover, a.fleet = oc.ctrl, oc.store
		pc.Migration = newSeam(oc.parts)
	}
	p, err := proxy.New(pc)
	if err != nil {
		if a.Cutover != nil {
			_ = a.Cutover.Close()
		}
		a.closeFleet()
		return nil, err
	}
	a.Proxy = p
	return a, nil
}

// adminAddr is the proxy's bound admin listener (nil before it listens); the fleet forwarder
// reads it at call time.
func (a *App) adminAddr() net.Addr {
	if a.Proxy == nil {
		return nil
	}
	return a.Proxy.AdminAddr()
}

// advertiseAdmin gives the controller this member's admin URL, used in the store when [fleet]
// advertise_admin is not set: https when the listener has TLS (a member never forwards to http
// then). A listener on every address has no address the others could use.
func (a *App) advertiseAdmin(ad net.Addr) {
	scheme := "http://"
	if a.adminTLS {
		scheme = "https://"
	}
	a.Cutover.SetAdminAddress(scheme + ad.String())
	if t, ok := ad.(*net.TCPAddr); ok && t.IP.IsUnspecified() && a.fleet != nil && !a.advertised {
		a.log.Warn("fleet: the admin listener is on every address and [fleet] advertise_admin is not set: "+
			"the other replicas cannot forward operator calls to this one", "admin", ad.String())
	}
}

// Run serves until ctx is done. The controller runs once the proxy listens (it resumes a
// journaled migration then) and stops after the proxy has shut down.
func (a *App) Run(ctx context.Context) error {
	if a.certs != nil {
		// The certificate source (file polling, ACME renewals) lives exactly as long as the
		// proxy: stopped after the proxy has shut down.
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := a.certs.Run(cctx); err != nil {
				a.log.Error("tls: certificate source stopped", "err", err)
			}
		}()
		defer func() { cancel(); <-done }()
	}
	errc := make(chan error, 1)
	go func() { errc <- a.Proxy.Run(ctx) }()
	if a.Cutover == nil {
		return <-errc
	}
	select {
	case <-a.Proxy.Ready():
	case err := <-errc:
		_ = a.Cutover.Close()
		a.closeFleet()
		return err
	}
	if ad := a.Proxy.AdminAddr(); ad != nil {
		a.advertiseAdmin(ad)
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cdone := make(chan error, 1)
	go func() { cdone <- a.Cutover.Run(cctx, proxyRoute{a.Proxy}) }()
	err := <-errc
	cancel()
	if cerr := <-cdone; cerr != nil && err == nil {
		err = fmt.Errorf("app: cutover controller: %w", cerr)
	}
	a.closeFleet()
	return err
}

// openedController is a loaded controller, its fleet store, and its sides of the seam.
type openedController struct {
	ctrl  *cutover.Controller
	store fleet.Store // nil without a fleet
	parts *migrationParts
}

// close releases what openController opened, for a controller that will not run.
func (o *openedController) close() {
	_ = o.ctrl.Close()
	if o.store != nil {
		_ = o.store.Close()
	}
}

// openController builds the controller of cfg (and its fleet store), loads the journal, puts
// the proxy configuration pc on the route the journal names, and builds the operator handlers
// (local: adminapi over local, or over the controller when nil). On error nothing stays open.
func openController(cfg Config, pc *proxy.Config, local adminapi.Controller, adminAddr func() net.Addr, log *slog.Logger) (*openedController, error) {
	cc := *cfg.Cutover
	// Each backend has its own health-check key with its own material: never migrate it. Its
	// id is one no caller can name (proxy.HealthKeyID), so nothing a caller made is left
	// behind by this.
	// The pace keeps live p99 within the request's budget, and a rollback waits one budget out
	// for the CreateKeys sent under the previous route.
	cc.Pace.RequestBudget = cmp.Or(cc.Pace.RequestBudget, pc.Limits.Budget)
	cc.Select.Exclude = slices.Clone(cc.Select.Exclude)
	for _, b := range pc.Backends {
		cc.Select.Exclude = append(cc.Select.Exclude, proxy.HealthKeyID(pc.Health, b))
	}
	if cc.Registry == nil && pc.Registry != nil {
		cc.Registry = pc.Registry
	}
	o := &openedController{}
	if cfg.Fleet != nil {
		st, err := fleet.Open(*cfg.Fleet)
		if err != nil {
			return nil, err
		}
		cc.Fleet = st
		o.store = st
	}
	fail := func(err error) (*openedController, error) {
		if o.ctrl != nil {
			_ = o.ctrl.Close()
		}
		if o.store != nil {
			_ = o.store.Close()
		}
		return nil, err
	}
	ctrl, err := cutover.New(cc)
	if err != nil {
		return fail(err)
	}
	o.ctrl = ctrl
	r, err := ctrl.Load(context.Background())
	if err != nil {
		o.ctrl = nil // Load released what it opened
		return fail(err)
	}
	if r.Primary != "" { // "": a fleet member with no epoch yet (not ready)
		if r.Primary != pc.Route.Primary || r.Fallback != pc.Route.Fallback {
			log.Warn("the cutover journal overrides the configured route",
				"configured_primary", pc.Route.Primary, "journal_primary", r.Primary,
				"journal_fallback", r.Fallback, "epoch", r.Epoch)
		}
		pc.Route = proxy.Route{Epoch: r.Epoch, Primary: r.Primary, Fallback: r.Fallback}
	}
	if local == nil {
		local = ctrl
	}
	o.parts = &migrationParts{t: ctrl.Traffic(), admin: adminapi.Handler(local)}
	if cfg.Fleet != nil {
		fa := cfg.FleetAdmin
		if fa.OwnNames == nil {
			fa.OwnNames = certNames(pc.Admin.TLS)
		}
		fw, err := newForwarder(ctrl, o.parts.admin, o.store.Member(), fa, pc.Admin.TLS != nil, adminAddr, log)
		if err != nil {
			return fail(err)
		}
		o.parts.admin = fw.operatorHandler()
		if fw.auth != nil {
			o.parts.peer = fw.peerHandler()
		}
	}
	return o, nil
}
