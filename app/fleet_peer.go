package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// peerDialer decides where this member may send a forwarded call and how it verifies the
// driver it reaches: the address comes from etcd, so it is checked before anything is sent.
type peerDialer struct {
	adminTLS   bool            // this member's admin listener has TLS
	adminAddr  func() net.Addr // this member's bound admin listener (nil before it listens)
	roots      *x509.CertPool  // nil: the system roots
	serverName string
	ownNames   []string
}

// Refusals of an advertised address (the operator reads them after "not forwarded to the
// driver NAME: ").
var (
	errNoAddress    = errors.New("it advertises no admin address: set [fleet] advertise_admin on every replica")
	errBadAddress   = errors.New("its advertised admin address is not an http(s)://host:port URL")
	errLocalAddress = errors.New("it advertises a loopback or unspecified address, which names this replica's own host, not the driver's: " +
		"set [fleet] advertise_admin on every replica to an address the others reach (a loopback address is accepted only " +
		"when this replica's admin listener is itself on loopback, for replicas sharing one host)")
	errHTTPWithTLS = errors.New("it advertises plain http while this replica's admin listener has TLS: " +
		"set [fleet] advertise_admin = \"https://ADDRESS:PORT\" on every replica")
	errHTTPRemote = errors.New("it advertises plain http beyond loopback: its admin listener must have TLS and advertise https://")
)

// checkDriverAddress applies the forwarding rule to an advertised address: https (http only
// between loopback listeners without TLS, on one host), and no loopback or unspecified host
// unless this member's own admin listener is on loopback. It returns the URL's scheme and host.
func checkDriverAddress(raw string, adminTLS, selfLoopback bool) (*url.URL, error) {
	if raw == "" {
		return nil, errNoAddress
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errBadAddress
	}
	local := isLocalHost(u.Hostname())
	if local && !selfLoopback {
		return nil, errLocalAddress
	}
	if u.Scheme == "http" {
		if adminTLS {
			return nil, errHTTPWithTLS
		}
		if !local {
			return nil, errHTTPRemote
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// isLocalHost: a name or address that designates the host it is dialled from.
func isLocalHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

func (d peerDialer) selfLoopback() bool {
	if d.adminAddr == nil {
		return false
	}
	a, ok := d.adminAddr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

func (d peerDialer) check(raw string) (*url.URL, error) {
	return checkDriverAddress(raw, d.adminTLS, d.selfLoopback())
}

// control refuses, at dial time, a loopback or unspecified address that a host name resolved
// to: the rule of checkDriverAddress, for names.
func (d peerDialer) control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if isLocalHost(host) && !d.selfLoopback() {
		return errLocalAddress
	}
	return nil
}

// client returns a client for one forwarded call to host (the advertised one) and the function
// that releases it. It follows no redirect (a signed call goes to the address checked, or
// nowhere) and uses no environment proxy. Over https the driver's certificate must chain to
// roots and carry serverName, or, with none configured, the advertised host or one of this
// member's own names.
func (d peerDialer) client(host string) (*http.Client, func()) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: d.roots}
	if d.serverName != "" {
		tc.ServerName = d.serverName
	} else {
		names := append([]string{host}, d.ownNames...)
		if len(d.ownNames) > 0 {
			tc.ServerName = d.ownNames[0] // SNI: the name the fleet's certificate is served for
		}
		// Go's own check would accept the SNI name only: VerifyConnection does the whole
		// verification (chain to roots, server usage, then any of names) instead.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPeerCert(cs, d.roots, names) }
	}
	tr := &http.Transport{
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, Control: d.control}).DialContext,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    5 * time.Second,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, tr.CloseIdleConnections
}

// verifyPeerCert verifies the driver's certificate chain against roots (nil: the system roots)
// for server authentication, then that it is valid for one of names.
func verifyPeerCert(cs tls.ConnectionState, roots *x509.CertPool, names []string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the driver presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the driver's admin certificate does not verify: %w", err)
	}
	for _, n := range names {
		if n != "" && leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	return fmt.Errorf("the driver's admin certificate is valid for none of %q (set [fleet] admin_server_name to the name it carries)", names)
}

// certNames are the DNS names of the first certificate of a TLS configuration (nil when it has
// none loaded: a source that chooses by SNI gives its names another way).
func certNames(tc *tls.Config) []string {
	if tc == nil || len(tc.Certificates) == 0 {
		return nil
	}
	c := tc.Certificates[0]
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return nil
	}
	return leaf.DNSNames
}

// CheckForwardAddress reports whether a member configured with c forwards operator calls to a
// driver that advertises addr (nil: it does), by the rule of checkDriverAddress with c's admin
// listener. The deployment tests check the shipped fleet layouts with it.
func (c Config) CheckForwardAddress(addr string) error {
	host, _, err := net.SplitHostPort(c.Proxy.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listener %q: %w", c.Proxy.Admin.Listen, err)
	}
	ip := net.ParseIP(host)
	_, err = checkDriverAddress(addr, c.Proxy.Admin.TLS != nil, host == "localhost" || ip != nil && ip.IsLoopback())
	return err
}
