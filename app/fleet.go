package app

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/fleet"
	"github.com/xksproxy/xksproxy/fleet/peerauth"
	"github.com/xksproxy/xksproxy/proxy"
)

// FleetAdmin configures how an operator call made on a member that does not drive reaches the
// driver. The member checks the operator's token itself, then forwards the call WITHOUT it,
// signed with the fleet secret, to the address the driver advertises in etcd; the driver
// verifies the signature and signs its reply, and the member relays only a reply whose
// signature verifies. Nothing read from etcd (which others than the operator may be able to
// write) can thus obtain the token or forge a reply.
type FleetAdmin struct {
	// Secret is the fleet secret, the same on every member (at least 32 bytes). nil: a member
	// that does not drive forwards nothing and names the driver to call instead.
	Secret []byte
	// RootCAs verify the driver's admin certificate when it advertises https (nil: the system
	// roots).
	RootCAs *x509.CertPool
	// ServerName is the name the driver's admin certificate must carry. "": the advertised host
	// or any DNS name of this member's own admin certificate (every replica of a fleet serves
	// the same XKS host name, and peers are often reached by an address no certificate names).
	ServerName string
	// OwnNames are the DNS names of this member's own admin certificate; nil: New reads them
	// from Proxy.Admin.TLS (FromFile gives them for ACME, whose certificate is chosen by SNI).
	OwnNames []string
	// Skew bounds how far a signed call's time may be from the driver's clock (default 30s).
	Skew time.Duration
	Now  func() time.Time
}

const (
	// maxForwardBody bounds an operator call's body (the admin API's own bound is smaller).
	maxForwardBody = 64 << 10
	// maxForwardReply bounds a relayed reply: the admin client's own bound (a plan of 100k keys).
	maxForwardReply = 64 << 20
	// statusForwardTimeout bounds a forwarded GET; control calls get adminapi.ControlTimeout.
	statusForwardTimeout = 30 * time.Second
	peerCutoverPath      = proxy.PeerPrefix + "cutover/"
)

// fleetCtrl is what the fleet admin needs of *cutover.Controller.
type fleetCtrl interface {
	IsDriver() bool
	Driver(ctx context.Context) (name, address string, err error)
	Forget(ctx context.Context, name string) error
	Status() cutover.Status
}

var _ fleetCtrl = (*cutover.Controller)(nil)

// forwarder serves the cutover admin API on one member of a fleet: on the driver, locally; on
// any other member, by a signed call to the driver (operator), and, on the driver, the signed
// calls other members forward (peer).
type forwarder struct {
	ctrl   fleetCtrl
	local  http.Handler // adminapi.Handler of this member's controller
	auth   *peerauth.Auth
	member string
	log    *slog.Logger
	peers  peerDialer
	skew   time.Duration
}

func newForwarder(ctrl fleetCtrl, local http.Handler, member string, fa FleetAdmin, adminTLS bool, adminAddr func() net.Addr, log *slog.Logger) (*forwarder, error) {
	f := &forwarder{ctrl: ctrl, local: local, member: member, log: log, skew: cmp.Or(fa.Skew, peerauth.DefaultSkew),
		peers: peerDialer{adminTLS: adminTLS, adminAddr: adminAddr, roots: fa.RootCAs, serverName: fa.ServerName, ownNames: fa.OwnNames}}
	if fa.Secret != nil {
		a, err := peerauth.New(peerauth.Config{Secret: fa.Secret, Member: member, Skew: fa.Skew, Now: fa.Now})
		if err != nil {
			return nil, fmt.Errorf("app: fleet secret: %w", err)
		}
		f.auth = a
	}
	return f, nil
}

// operatorHandler is mounted at /v1/cutover/ behind the admin token: `forget` acts through the
// store here; everything else is served by the driver. With no reachable driver, status answers
// with this member's own view and actions are refused with 503.
func (f *forwarder) operatorHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cutover/forget", f.forget)
	mux.HandleFunc("/v1/cutover/", f.operator)
	return mux
}

func (f *forwarder) forget(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Name == "" {
		writeAdminErr(w, http.StatusBadRequest, "body must be {\"name\": \"MEMBER\"}")
		return
	}
	err := f.ctrl.Forget(r.Context(), req.Name)
	if err == nil {
		adminapi.WriteJSON(w, http.StatusOK, f.ctrl.Status())
		return
	}
	if _, ok := adminapi.StatusOf(err); !ok {
		err = &adminapi.StatusError{Status: http.StatusServiceUnavailable, Msg: err.Error()} // the store did not answer
	}
	adminapi.WriteError(w, err) // a member alive: 409; unknown: 404 (the controller's errors carry them)
}

// operator serves one operator call (its token already checked by the admin listener).
func (f *forwarder) operator(w http.ResponseWriter, r *http.Request) {
	if f.ctrl.IsDriver() {
		f.local.ServeHTTP(w, r)
		return
	}
	status := r.Method == http.MethodGet
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	name, addr, err := f.ctrl.Driver(ctx)
	cancel()
	if err != nil || name == "" || name == f.member {
		if status {
			f.local.ServeHTTP(w, r) // this member's view: epoch, route, members
			return
		}
		msg := "no driver is elected right now; retry shortly"
		if err != nil {
			msg = "the fleet store is unreachable: " + err.Error()
		}
		writeAdminErr(w, http.StatusServiceUnavailable, msg)
		return
	}
	if fleet.ValidMemberName(name) != nil {
		// Read from etcd: quoted to the operator only once it is a plain member name.
		f.log.Warn("fleet: the store names a driver that is not a valid member name; not forwarding")
		if status {
			f.local.ServeHTTP(w, r)
			return
		}
		writeAdminErr(w, http.StatusServiceUnavailable, "the fleet store names a driver that is not a valid member name: check the election keys in etcd")
		return
	}
	if f.auth == nil {
		if status {
			f.local.ServeHTTP(w, r)
			return
		}
		// The driver's advertised address is not quoted: it comes from etcd, and an operator
		// who sent the token there would hand it to whoever wrote it.
		writeAdminErr(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"this replica (%s) does not drive the migration and forwards nothing without a fleet secret: "+
				"send the call to the driver, %s, directly, or set [fleet] secret_file (the same secret on every replica)", f.member, name))
		return
	}
	target, err := f.peers.check(addr)
	if err != nil {
		f.log.Warn("fleet: not forwarding an operator call to the driver", "driver", name, "path", r.URL.Path, "reason", err.Error())
		if status {
			f.local.ServeHTTP(w, r)
			return
		}
		writeAdminErr(w, http.StatusBadGateway, fmt.Sprintf("not forwarded to the driver %s: %v", name, err))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
	if err != nil {
		writeAdminErr(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	f.forward(w, r, name, target, body)
}

// forward relays one call to the driver at target and its reply back. A control call (anything
// but a GET) may take minutes there (a rollback copies keys back before it answers): this
// listener's write deadline, set when the request was read, is lifted as the driver's own is,
// or the operator would see EOF for a call that went on to complete.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, driver string, target *url.URL, body []byte) {
	status := r.Method == http.MethodGet
	timeout := statusForwardTimeout
	if !status {
		timeout = adminapi.ControlTimeout + 20*time.Second
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(adminapi.ControlTimeout + 30*time.Second))
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	u := *target
	u.Path, u.RawPath, u.RawQuery = peerCutoverPath+strings.TrimPrefix(r.URL.Path, "/v1/cutover/"), "", r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		writeAdminErr(w, http.StatusBadGateway, "forwarding to the driver "+driver+" failed: "+err.Error())
		return
	}
	// A fresh request: only these headers travel, never the operator's Authorization.
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	call, err := f.auth.Sign(req, driver, body)
	if err != nil {
		writeAdminErr(w, http.StatusInternalServerError, "signing the forwarded call failed: "+err.Error())
		return
	}
	client, done := f.peers.client(target.Hostname())
	defer done()
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which comes from etcd
		}
		var oe *net.OpError
		if status && errors.As(err, &oe) && oe.Op == "dial" {
			f.log.Warn("fleet: the driver is unreachable; answering with this member's view", "driver", driver, "err", err.Error())
			f.local.ServeHTTP(w, r)
			return
		}
		f.log.Warn("fleet: forwarding an operator call to the driver failed", "driver", driver, "path", r.URL.Path, "err", err.Error())
		writeAdminErr(w, http.StatusBadGateway, "forwarding to the driver "+driver+" failed: "+err.Error())
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardReply+1))
	if err == nil && len(data) > maxForwardReply {
		err = fmt.Errorf("reply larger than %d bytes", maxForwardReply)
	}
	if err != nil {
		writeAdminErr(w, http.StatusBadGateway, "reading the driver "+driver+"'s reply failed: "+err.Error())
		return
	}
	ct := resp.Header.Get("Content-Type")
	if err := f.auth.VerifyReply(call, resp.StatusCode, ct, data, resp.Header.Get(peerauth.HeaderSignature)); err != nil {
		f.log.Error("fleet: the driver's advertised admin address answered without a valid fleet signature; nothing relayed",
			"driver", driver, "status", resp.StatusCode, "path", r.URL.Path)
		writeAdminErr(w, http.StatusBadGateway, fmt.Sprintf(
			"the address the driver %s advertises in etcd did not prove it is a member of this fleet (HTTP %d without a valid fleet signature); nothing was relayed. "+
				"If %s is genuine, its log says why it refused the call (a different fleet secret, clocks more than %s apart); otherwise someone rewrote its registry entry in etcd",
			driver, resp.StatusCode, driver, f.skew))
		return
	}
	if ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(data)
}

// peerHandler is mounted at proxy.PeerPrefix + "cutover/", without the admin token: it serves
// the calls other members forward, once their fleet signature verified, and signs its reply.
func (f *forwarder) peerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxForwardBody))
		if err != nil {
			writeAdminErr(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		p, err := f.auth.Verify(r, body)
		if err != nil {
			from := r.Header.Get(peerauth.HeaderFrom)
			if len(from) > 128 {
				from = from[:128]
			}
			f.log.Warn("fleet: forwarded admin call refused", "reason", err.Error(), "claimed_member", from,
				"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			code := http.StatusUnauthorized
			if errors.Is(err, peerauth.ErrBusy) {
				code = http.StatusServiceUnavailable
			}
			writeAdminErr(w, code, "forwarded call refused by "+f.member+" (its log says why)")
			return
		}
		in := r.Clone(r.Context())
		in.URL.Path, in.URL.RawPath = "/v1/cutover/"+strings.TrimPrefix(r.URL.Path, peerCutoverPath), ""
		in.Body = io.NopCloser(bytes.NewReader(body))
		in.ContentLength = int64(len(body))
		rw := &signedReply{under: w, header: http.Header{}}
		switch {
		case f.ctrl.IsDriver():
			f.local.ServeHTTP(rw, in)
		case r.Method == http.MethodGet:
			f.local.ServeHTTP(rw, in) // the driver changed meanwhile: this member's view
		default:
			writeAdminErr(rw, http.StatusServiceUnavailable, f.member+" no longer drives the migration; retry (the call goes to the new driver)")
		}
		rw.send(f.auth, p)
	})
}

// signedReply buffers a reply so that its signature covers the whole body. Unwrap lets the
// admin API lift the listener's write deadline for long control calls.
type signedReply struct {
	under  http.ResponseWriter
	header http.Header
	status int
	body   bytes.Buffer
	over   bool
}

func (s *signedReply) Header() http.Header { return s.header }

func (s *signedReply) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *signedReply) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	if s.body.Len()+len(b) > maxForwardReply {
		s.over = true
		return 0, errors.New("app: reply too large to forward")
	}
	return s.body.Write(b)
}

func (s *signedReply) Unwrap() http.ResponseWriter { return s.under }

func (s *signedReply) send(a *peerauth.Auth, p *peerauth.Peer) {
	status, ct, body := s.status, s.header.Get("Content-Type"), s.body.Bytes()
	if status == 0 {
		status = http.StatusOK
	}
	if s.over {
		ct = "application/json"
		status, body = adminapi.ErrorReply(fmt.Errorf("reply larger than %d bytes: call the driver directly", maxForwardReply))
	}
	h := s.under.Header()
	if ct != "" {
		h.Set("Content-Type", ct)
	}
	h.Set("Cache-Control", "no-store")
	h.Set(peerauth.HeaderSignature, a.SignReply(p, status, ct, body))
	s.under.WriteHeader(status)
	_, _ = s.under.Write(body)
}

// writeAdminErr answers an operator or peer call with the admin API's own error reply (one
// renderer for both: adminapi.WriteError).
func writeAdminErr(w http.ResponseWriter, status int, msg string) {
	adminapi.WriteError(w, &adminapi.StatusError{Status: status, Msg: msg})
}
