package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/fleet/peerauth"
	"github.com/xksproxy/xksproxy/internal/testpki"
)

const fleetToken = "operator-token-0123456789abcdef-0123456789"

var (
	fleetSecret  = []byte("fleet-secret-for-tests-0123456789abcdef")
	otherSecret  = []byte("another-fleets-secret-0123456789abcdef!")
	forgedStatus = `{"state":"finalized","forged":true}`
)

// fakeCtrl is the controller as the fleet admin sees it: who drives, at which address.
type fakeCtrl struct {
	mu         sync.Mutex
	driver     bool
	name, addr string
	err        error
}

func (c *fakeCtrl) IsDriver() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.driver }
func (c *fakeCtrl) Driver(context.Context) (string, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name, c.addr, c.err
}
func (c *fakeCtrl) Forget(context.Context, string) error { return cutover.ErrUnknownMember }
func (c *fakeCtrl) Status() cutover.Status               { return cutover.Status{} }
func (c *fakeCtrl) setDriver(name, addr string) {
	c.mu.Lock()
	c.name, c.addr = name, addr
	c.mu.Unlock()
}

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// member is one fleet member's admin listener as the proxy serves it: the peer path space
// without the token, everything else behind it.
type member struct {
	name string
	ctrl *fakeCtrl
	fw   *forwarder
	srv  *httptest.Server
	logs *logBuf
	hits chan string // paths the local admin API served
}

type memberOpts struct {
	secret    []byte
	tls       *tls.Config // the admin listener's TLS (nil: plain http)
	fa        FleetAdmin
	local     http.Handler // default: answers "<name> local <path>"
	writeTime time.Duration
	selfAddr  net.Addr // pretend the admin listener is bound there (default: where it is)
}

func startMember(t *testing.T, name string, driver bool, o memberOpts) *member {
	t.Helper()
	m := &member{name: name, ctrl: &fakeCtrl{driver: driver}, logs: &logBuf{}, hits: make(chan string, 16)}
	local := o.local
	if local == nil {
		local = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			select {
			case m.hits <- r.Method + " " + r.URL.Path:
			default:
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"member": name, "view": "local", "path": r.URL.Path, "body": string(b)})
		})
	}
	m.srv = httptest.NewUnstartedServer(nil)
	fa := o.fa
	fa.Secret = o.secret
	addr := func() net.Addr {
		if o.selfAddr != nil {
			return o.selfAddr
		}
		return m.srv.Listener.Addr()
	}
	fw, err := newForwarder(m.ctrl, local, name, fa, o.tls != nil, addr, slog.New(slog.NewTextHandler(m.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m.fw = fw
	op := fw.operatorHandler()
	var peer http.Handler = http.NotFoundHandler()
	if fw.auth != nil {
		peer = fw.peerHandler()
	}
	m.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, peerCutoverPath) {
			peer.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+fleetToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		op.ServeHTTP(w, r)
	})
	m.srv.Config.WriteTimeout = o.writeTime
	if o.tls != nil {
		m.srv.TLS = o.tls
		m.srv.StartTLS()
	} else {
		m.srv.Start()
	}
	t.Cleanup(m.srv.Close)
	return m
}

// call sends an operator call with the token to m.
func (m *member) call(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, m.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// attacker is a listener someone who can write etcd points the driver's address at: it keeps
// every request it receives and answers with a forged reply.
type attacker struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []*http.Request
	body [][]byte
}

func startAttacker(t *testing.T, tlsCfg *tls.Config) *attacker {
	t.Helper()
	a := &attacker{}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.seen = append(a.seen, r.Clone(context.Background()))
		a.body = append(a.body, b)
		a.mu.Unlock()
		// A forged reply, "signed" with what the attacker has: the request's own signature
		// and a MAC under a secret of its own.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(peerauth.HeaderSignature, r.Header.Get(peerauth.HeaderSignature))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(forgedStatus))
	}))
	if tlsCfg != nil {
		a.srv.TLS = tlsCfg
		a.srv.StartTLS()
	} else {
		a.srv.Start()
	}
	t.Cleanup(a.srv.Close)
	return a
}

func (a *attacker) requests() ([]*http.Request, [][]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...), append([][]byte(nil), a.body...)
}

// serverTLS is a server TLS configuration with a leaf of ca for hosts.
func serverTLS(t *testing.T, ca *testpki.CA, hosts ...string) *tls.Config {
	t.Helper()
	certPEM, keyPEM := ca.Leaf(t, 0, time.Now().Add(time.Hour), hosts...)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}

// TestAttackerAddressInEtcd: the driver's address in etcd points at a listener of someone who
// can write the fleet's prefix. Whatever that listener is, it never sees the operator's token,
// what it does see is good for nothing else, and the operator gets an error, not its reply.
func TestAttackerAddressInEtcd(t *testing.T) {
	fleetCA := testpki.NewCA(t, "fleet CA", time.Now().Add(time.Hour))
	otherCA := testpki.NewCA(t, "someone else's CA", time.Now().Add(time.Hour))
	tests := []struct {
		name        string
		memberTLS   bool        // the members' admin listeners have TLS (the fleet CA's "xks.example.com")
		attackerTLS *tls.Config // nil: plain http
		wantSeen    bool        // the attacker's listener receives the (signed, token-less) call
		wantMsg     string
	}{
		{"plain http on loopback, members without TLS", false, nil, true, "did not prove it is a member of this fleet"},
		{"https, certificate of another CA", true, serverTLS(t, otherCA, "xks.example.com"), false, "certificate does not verify"},
		{"https, fleet CA but another name", true, serverTLS(t, fleetCA, "evil.example.com"), false, "valid for none of"},
		{"https, a mis-issued fleet certificate", true, serverTLS(t, fleetCA, "xks.example.com"), true, "did not prove it is a member of this fleet"},
	}
	for _, tc := range tests {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				o := memberOpts{secret: fleetSecret, fa: FleetAdmin{RootCAs: fleetCA.Pool}}
				if tc.memberTLS {
					o.tls = serverTLS(t, fleetCA, "xks.example.com", "127.0.0.1")
					o.fa.OwnNames = []string{"xks.example.com"}
				}
				driver := startMember(t, "r1", true, o)
				nd := startMember(t, "r2", false, o)
				att := startAttacker(t, tc.attackerTLS)
				nd.ctrl.setDriver("r1", att.srv.URL) // the forged registry entry

				path, body := "/v1/cutover/finalize", `{"revoke_source_grants":true}`
				if method == http.MethodGet {
					path, body = "/v1/cutover/status", ""
				}
				code, reply := nd.call(t, method, path, body)
				if code != http.StatusBadGateway || !strings.Contains(reply, tc.wantMsg) {
					t.Fatalf("operator got %d %s; want 502 with %q", code, reply, tc.wantMsg)
				}
				if strings.Contains(reply, "forged") || strings.Contains(reply, att.srv.URL) {
					t.Fatalf("the reply relays the attacker's answer or quotes its address: %s", reply)
				}
				seen, bodies := att.requests()
				if tc.wantSeen != (len(seen) > 0) {
					t.Fatalf("attacker saw %d requests, want some: %v", len(seen), tc.wantSeen)
				}
				for i, r := range seen {
					dump := new(bytes.Buffer)
					_ = r.Header.Write(dump)
					dump.Write(bodies[i])
					dump.WriteString(r.URL.String())
					if r.Header.Get("Authorization") != "" || strings.Contains(dump.String(), fleetToken) ||
						strings.Contains(dump.String(), base64.StdEncoding.EncodeToString([]byte(fleetToken))) {
						t.Fatalf("the attacker saw the operator's token:\n%s", dump)
					}
					if strings.Contains(dump.String(), string(fleetSecret)) || strings.Contains(dump.String(), hex.EncodeToString(fleetSecret)) {
						t.Fatal("the attacker saw the fleet secret")
					}
					reuse(t, driver, r, bodies[i])
				}
				select {
				case h := <-driver.hits:
					if len(seen) == 0 {
						t.Fatalf("the driver served %s though nothing reached the attacker", h)
					}
				default:
				}
			})
		}
	}
}

// reuse plays what the attacker captured against the real driver: altered, it is refused; the
// exact call is accepted at most once (it is the operator's own call, to the member it was
// signed for) and refused as a replay after that.
func reuse(t *testing.T, driver *member, captured *http.Request, body []byte) {
	t.Helper()
	send := func(method, path string, b []byte) int {
		req, err := http.NewRequest(method, driver.srv.URL+path, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = captured.Header.Clone()
		resp, err := driver.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	path := captured.URL.Path
	other := peerCutoverPath + "rollback"
	if path == other {
		other = peerCutoverPath + "switch"
	}
	if c := send(captured.Method, other, body); c != http.StatusUnauthorized {
		t.Errorf("captured signature reused for %s: %d", other, c)
	}
	if c := send(captured.Method, path, append(append([]byte(nil), body...), ' ')); c != http.StatusUnauthorized {
		t.Errorf("captured signature reused with another body: %d", c)
	}
	if c := send(http.MethodPut, path, body); c != http.StatusUnauthorized {
		t.Errorf("captured signature reused with another method: %d", c)
	}
	first := send(captured.Method, path, body)
	if c := send(captured.Method, path, body); c != http.StatusUnauthorized {
		t.Errorf("captured call delivered twice: %d then %d", first, c)
	}
}

// TestForwardedCallRefused: a forwarded call without a valid signature is refused with 401 and
// the reason is in the driver's log, without the secret or the signature.
func TestForwardedCallRefused(t *testing.T) {
	now := time.Now()
	driverClock := func() time.Time { return now }
	driver := startMember(t, "r1", true, memberOpts{secret: fleetSecret, fa: FleetAdmin{Now: driverClock}})
	body := []byte(`{"reason":"test"}`)
	sign := func(secret []byte, to string, at time.Time) *http.Request {
		a, err := peerauth.New(peerauth.Config{Secret: secret, Member: "r2", Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, driver.srv.URL+peerCutoverPath+"rollback", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Sign(req, to, body); err != nil {
			t.Fatal(err)
		}
		return req
	}
	var replayed *http.Request
	tests := []struct {
		name   string
		req    func() *http.Request
		want   int
		reason string
	}{
		{"valid", func() *http.Request { replayed = sign(fleetSecret, "r1", now); return replayed }, http.StatusOK, ""},
		{"replayed", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, replayed.URL.String(), bytes.NewReader(body))
			r.Header = replayed.Header.Clone()
			return r
		}, http.StatusUnauthorized, "nonce already seen"},
		{"missing signature", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, driver.srv.URL+peerCutoverPath+"rollback", bytes.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+fleetToken) // the operator's token is no way in either
			return r
		}, http.StatusUnauthorized, "not a signed fleet call"},
		{"another fleet's secret", func() *http.Request { return sign(otherSecret, "r1", now) }, http.StatusUnauthorized, "signature does not verify"},
		{"addressed to another member", func() *http.Request { return sign(fleetSecret, "r3", now) }, http.StatusUnauthorized, "addressed to another member"},
		{"clock 31s behind", func() *http.Request { return sign(fleetSecret, "r1", now.Add(-31*time.Second)) }, http.StatusUnauthorized, "time outside the accepted skew"},
		{"body altered", func() *http.Request {
			r := sign(fleetSecret, "r1", now)
			r.Body = io.NopCloser(strings.NewReader(`{"reason":"evil"}`))
			r.ContentLength = -1
			return r
		}, http.StatusUnauthorized, "signature does not verify"},
		{"garbage signature", func() *http.Request {
			r := sign(fleetSecret, "r1", now)
			r.Header.Set(peerauth.HeaderSignature, "not-hex")
			return r
		}, http.StatusUnauthorized, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			sig := req.Header.Get(peerauth.HeaderSignature)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%d %s, want %d", resp.StatusCode, b, tc.want)
			}
			logs := driver.logs.String()
			if tc.reason != "" && (!strings.Contains(logs, "forwarded admin call refused") || !strings.Contains(logs, tc.reason)) {
				t.Fatalf("the driver's log lacks the reason %q:\n%s", tc.reason, logs)
			}
			for _, secret := range []string{string(fleetSecret), hex.EncodeToString(fleetSecret), base64.StdEncoding.EncodeToString(fleetSecret), fleetToken} {
				if strings.Contains(logs, secret) {
					t.Fatalf("a secret is in the driver's log:\n%s", logs)
				}
			}
			if len(sig) == 64 && strings.Contains(logs, sig) {
				t.Fatalf("a signature is in the driver's log:\n%s", logs)
			}
		})
	}
}

// TestForwardRule: the addresses a member refuses to forward to, before anything is sent.
func TestForwardRule(t *testing.T) {
	tests := []struct {
		name         string
		addr         string
		adminTLS     bool
		selfLoopback bool
		want         error
	}{
		{"https to a peer", "https://10.1.2.3:9465", true, false, nil},
		{"https to a peer by name", "https://xks-2.internal:9465/", true, false, nil},
		{"http while the admin listener has TLS", "http://10.1.2.3:9465", true, false, errHTTPWithTLS},
		{"http loopback while the admin listener has TLS", "http://127.0.0.1:9465", true, true, errHTTPWithTLS},
		{"http beyond loopback", "http://10.1.2.3:9465", false, true, errHTTPRemote},
		{"http between loopback listeners", "http://127.0.0.1:9465", false, true, nil},
		{"https loopback, single host", "https://127.0.0.1:9465", true, true, nil},
		{"loopback from a remote listener", "https://127.0.0.1:9465", true, false, errLocalAddress},
		{"localhost from a remote listener", "https://localhost:9465", true, false, errLocalAddress},
		{"IPv6 loopback from a remote listener", "https://[::1]:9465", true, false, errLocalAddress},
		{"unspecified address", "https://0.0.0.0:9465", true, false, errLocalAddress},
		{"none advertised", "", true, false, errNoAddress},
		{"user info", "https://u:p@10.1.2.3:9465", true, false, errBadAddress},
		{"a path", "https://10.1.2.3:9465/elsewhere", true, false, errBadAddress},
		{"a query", "https://10.1.2.3:9465?x=1", true, false, errBadAddress},
		{"another scheme", "ftp://10.1.2.3:9465", true, false, errBadAddress},
		{"no host", "https:///v1", true, false, errBadAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := checkDriverAddress(tc.addr, tc.adminTLS, tc.selfLoopback)
			if !errors.Is(err, tc.want) {
				t.Fatalf("checkDriverAddress(%q) = %v, %v; want %v", tc.addr, u, err, tc.want)
			}
			if err == nil && (u.Path != "" || u.User != nil) {
				t.Fatalf("kept more than scheme and host: %v", u)
			}
		})
	}
}

// TestHTTPForwardRefusedWithAdminTLS: a member whose admin listener has TLS sends nothing to an
// http:// address; status answers with its own view, an action with the reason.
func TestHTTPForwardRefusedWithAdminTLS(t *testing.T) {
	ca := testpki.NewCA(t, "fleet CA", time.Now().Add(time.Hour))
	driver := startMember(t, "r1", true, memberOpts{secret: fleetSecret}) // plain http
	nd := startMember(t, "r2", false, memberOpts{secret: fleetSecret, tls: serverTLS(t, ca, "127.0.0.1"), fa: FleetAdmin{RootCAs: ca.Pool}})
	nd.ctrl.setDriver("r1", driver.srv.URL)
	code, reply := nd.call(t, http.MethodPost, "/v1/cutover/switch", "")
	if code != http.StatusBadGateway || !strings.Contains(reply, "plain http while this replica's admin listener has TLS") {
		t.Fatalf("action: %d %s", code, reply)
	}
	code, reply = nd.call(t, http.MethodGet, "/v1/cutover/status", "")
	if code != http.StatusOK || !strings.Contains(reply, `"member":"r2"`) {
		t.Fatalf("status: %d %s, want r2's own view", code, reply)
	}
	select {
	case h := <-driver.hits:
		t.Fatalf("the driver served %s over plain http", h)
	default:
	}
	if !strings.Contains(nd.logs.String(), "not forwarding an operator call to the driver") {
		t.Errorf("the refusal is not logged:\n%s", nd.logs.String())
	}
}

// TestLoopbackAddressRefused: a member whose admin listener is not on loopback never dials a
// loopback address for the driver, named or resolved.
func TestLoopbackAddressRefused(t *testing.T) {
	ca := testpki.NewCA(t, "fleet CA", time.Now().Add(time.Hour))
	tc := serverTLS(t, ca, "localhost", "127.0.0.1")
	driver := startMember(t, "r1", true, memberOpts{secret: fleetSecret, tls: tc, fa: FleetAdmin{RootCAs: ca.Pool}})
	remote := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 9465}
	nd := startMember(t, "r2", false, memberOpts{secret: fleetSecret, tls: tc, fa: FleetAdmin{RootCAs: ca.Pool}, selfAddr: remote})
	for _, addr := range []string{driver.srv.URL, strings.Replace(driver.srv.URL, "127.0.0.1", "localhost", 1)} {
		nd.ctrl.setDriver("r1", addr)
		code, reply := nd.call(t, http.MethodPost, "/v1/cutover/switch", "")
		if code != http.StatusBadGateway || !strings.Contains(reply, "loopback") {
			t.Fatalf("%s: %d %s", addr, code, reply)
		}
	}
	// A name that resolves to loopback is refused when dialled.
	d := nd.fw.peers
	if err := d.control("tcp", "127.0.0.1:9465", nil); !errors.Is(err, errLocalAddress) {
		t.Fatalf("dial control: %v", err)
	}
	select {
	case h := <-driver.hits:
		t.Fatalf("the driver served %s", h)
	default:
	}
}

// TestNoFleetSecret: without a fleet secret nothing is forwarded; the operator is told which
// member drives, never at which address.
func TestNoFleetSecret(t *testing.T) {
	driver := startMember(t, "r1", true, memberOpts{})
	nd := startMember(t, "r2", false, memberOpts{})
	nd.ctrl.setDriver("r1", driver.srv.URL)
	code, reply := nd.call(t, http.MethodPost, "/v1/cutover/start", `{}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(reply, "the driver, r1, directly") ||
		!strings.Contains(reply, "secret_file") || strings.Contains(reply, driver.srv.URL) {
		t.Fatalf("action: %d %s", code, reply)
	}
	code, reply = nd.call(t, http.MethodGet, "/v1/cutover/status", "")
	if code != http.StatusOK || !strings.Contains(reply, `"member":"r2"`) {
		t.Fatalf("status: %d %s, want r2's own view", code, reply)
	}
	select {
	case h := <-driver.hits:
		t.Fatalf("the driver served %s", h)
	default:
	}
	// And the driver's peer path space answers nothing without a secret either.
	resp, err := http.Post(driver.srv.URL+peerCutoverPath+"start", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("peer path without a secret: %d", resp.StatusCode)
	}
}

// TestGoodForward: over TLS, status and a control call go to the driver and its signed reply
// comes back unchanged; a driver that no longer drives refuses actions with a signed 503.
func TestGoodForward(t *testing.T) {
	ca := testpki.NewCA(t, "fleet CA", time.Now().Add(time.Hour))
	fa := FleetAdmin{RootCAs: ca.Pool, OwnNames: []string{"xks.example.com"}}
	driver := startMember(t, "r1", true, memberOpts{secret: fleetSecret, tls: serverTLS(t, ca, "xks.example.com"), fa: fa})
	// The operator reaches r2 at 127.0.0.1; r2 reaches r1 there too, which its certificate
	// does not name: it carries the fleet's name, which r2's own certificate has.
	nd := startMember(t, "r2", false, memberOpts{secret: fleetSecret, tls: serverTLS(t, ca, "xks.example.com", "127.0.0.1"), fa: fa})
	nd.ctrl.setDriver("r1", driver.srv.URL) // https://127.0.0.1:port: no certificate names it
	for _, tc := range []struct{ method, path, body, want string }{
		{http.MethodGet, "/v1/cutover/status", "", `"path":"/v1/cutover/status"`},
		{http.MethodPost, "/v1/cutover/rollback", `{"reason":"r"}`, `"body":"{\"reason\":\"r\"}"`},
	} {
		code, reply := nd.call(t, tc.method, tc.path, tc.body)
		if code != http.StatusOK || !strings.Contains(reply, `"member":"r1"`) || !strings.Contains(reply, tc.want) {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, code, reply)
		}
	}
	driver.ctrl.mu.Lock()
	driver.ctrl.driver = false
	driver.ctrl.mu.Unlock()
	code, reply := nd.call(t, http.MethodPost, "/v1/cutover/switch", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(reply, "r1 no longer drives") {
		t.Fatalf("former driver: %d %s", code, reply)
	}
}

// A control call forwarded to the driver answers even when the driver takes longer than the
// forwarding member's write timeout: the hour soak's finalize, forwarded while an automatic
// rollback held the driver for over a minute, ended in EOF before the deadline was lifted here.
func TestForwardedControlCallOutlastsWriteTimeout(t *testing.T) {
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(400 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"echo":` + string(b) + `}`))
	})
	driver := startMember(t, "r1", true, memberOpts{secret: fleetSecret, local: slow})
	nd := startMember(t, "r2", false, memberOpts{secret: fleetSecret, writeTime: 100 * time.Millisecond})
	nd.ctrl.setDriver("r1", driver.srv.URL)
	for _, path := range []string{"/v1/cutover/finalize", "/v1/cutover/rollback"} {
		t.Run(path, func(t *testing.T) {
			code, b := nd.call(t, http.MethodPost, path, `{"reason":"slow"}`)
			if code != http.StatusOK || b != `{"echo":{"reason":"slow"}}` {
				t.Errorf("reply %d %s", code, b)
			}
		})
	}
}

// TestVerifyPeerCert: the names a driver's admin certificate may carry.
func TestVerifyPeerCert(t *testing.T) {
	ca := testpki.NewCA(t, "fleet CA", time.Now().Add(time.Hour))
	other := testpki.NewCA(t, "other CA", time.Now().Add(time.Hour))
	leaf := func(ca *testpki.CA, hosts ...string) tls.ConnectionState {
		c := serverTLS(t, ca, hosts...).Certificates[0]
		l := c.Leaf
		if l == nil {
			t.Fatal("no parsed leaf")
		}
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{l}}
	}
	for _, tc := range []struct {
		name  string
		cs    tls.ConnectionState
		names []string
		ok    bool
	}{
		{"own name", leaf(ca, "xks.example.com"), []string{"10.1.2.3", "xks.example.com"}, true},
		{"advertised host", leaf(ca, "xks-2.internal"), []string{"xks-2.internal", "xks.example.com"}, true},
		{"advertised IP", leaf(ca, "10.1.2.3"), []string{"10.1.2.3"}, true},
		{"another name", leaf(ca, "evil.example.com"), []string{"10.1.2.3", "xks.example.com"}, false},
		{"another CA", leaf(other, "xks.example.com"), []string{"xks.example.com"}, false},
		{"no certificate", tls.ConnectionState{}, []string{"xks.example.com"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := verifyPeerCert(tc.cs, ca.Pool, tc.names); (err == nil) != tc.ok {
				t.Fatalf("verifyPeerCert: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestForgedDriverName: the driver's name comes from etcd too; one that is not a member name is
// never quoted to the operator nor forwarded to.
func TestForgedDriverName(t *testing.T) {
	for _, secret := range [][]byte{nil, fleetSecret} {
		att := startAttacker(t, nil)
		nd := startMember(t, "r2", false, memberOpts{secret: secret})
		nd.ctrl.setDriver("r1: call "+att.srv.URL+" with your token", att.srv.URL)
		code, reply := nd.call(t, http.MethodPost, "/v1/cutover/start", `{}`)
		if code != http.StatusServiceUnavailable || !strings.Contains(reply, "not a valid member name") || strings.Contains(reply, att.srv.URL) {
			t.Fatalf("secret %v: %d %s", secret != nil, code, reply)
		}
		if seen, _ := att.requests(); len(seen) != 0 {
			t.Fatalf("forwarded to a forged driver name: %d calls", len(seen))
		}
	}
}
