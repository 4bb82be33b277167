package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// maxBackendReply bounds a backend reply; XKS replies are a few KB.
const maxBackendReply = 256 << 10

type backend struct {
	cfg       BackendConfig
	name      string
	scheme    string
	host      string
	keysBase  string // path prefix + "/kms/xks/v1/keys/"
	healthURL string
	transport *http.Transport
	client    *http.Client
	signer    *sigv4.Signer
	xks       *xks.Client  // for health probes
	healthKey string       // the health probe's key id (HealthKeyID)
	conns     atomic.Int64 // connections open to the backend (gauge; sizes the pre-warm of a switch)
}

// countedConn keeps backend.conns true: one decrement per connection, however often it is
// closed.
type countedConn struct {
	net.Conn
	once sync.Once
	n    *atomic.Int64
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.n.Add(-1) })
	return c.Conn.Close()
}

var ctJSON = []string{"application/json"}

// maxDialing bounds the connections being opened (TCP connect and TLS handshake) to one backend
// at once. A latency blip makes the requests in flight grow and, over HTTP/1.1, each wants a
// connection of its own: unbounded, they all dialled and handshook at once (~50 per replica in
// 0.2 s in the three-replica demo), and the handshakes' CPU turned the blip into requests past
// their budget. A request waiting for its dial is handed any connection freed meanwhile.
const maxDialing = 4

const tlsHandshakeTimeout = 2 * time.Second

// callKey finds, from a dial's context, the context of the backend call that started the dial.
// net/http detaches a dial from its request's cancellation, so that a later request may use
// the connection. But a dial still waiting for a maxDialing slot after its call ended only
// opens a connection nobody waits for. At 600 req/s per replica, after a backend restart or
// slow spell, such dials queued by the thousand (12 000 goroutines per replica after four
// minutes). They kept the four slots busy, so live calls waited behind them and timed out,
// and each timed-out call queued one more.
type callKey struct{}

// callCtx is a call's context that also answers callKey with itself: one allocation, where
// context.WithValue would be a larger one.
type callCtx struct{ context.Context }

func (c *callCtx) Value(key any) any {
	if key == (callKey{}) {
		return c.Context
	}
	return c.Context.Value(key)
}

var errDialUnwanted = errors.New("dial abandoned: the call that wanted the connection has ended")

func newBackend(bc BackendConfig, now func() time.Time) (*backend, error) {
	u, err := backendBase(bc.XKSURL)
	if err != nil {
		return nil, fmt.Errorf("XKSURL %w", err)
	}
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: bc.Credential, Region: bc.Region, Service: bc.Service, Now: now})
	if err != nil {
		return nil, err
	}
	var tlsCfg = &tls.Config{} // system roots
	if bc.TLS != nil {
		tlsCfg = bc.TLS.Clone()
	}
	if tlsCfg.ClientSessionCache == nil {
		// A new connection resumes a session instead of a full handshake (no certificate
		// chain to verify, no signature): cheaper when a burst needs more connections.
		tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(max(bc.MaxIdleConns, 8))
	}
	b := &backend{}
	d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	dialing := make(chan struct{}, maxDialing)
	var tr *http.Transport
	open := func(ctx context.Context, network, addr string, useTLS bool) (net.Conn, error) {
		var callDone <-chan struct{} // nil (never ready) for a dial no call of ours started
		if c, ok := ctx.Value(callKey{}).(context.Context); ok {
			callDone = c.Done()
		}
		select {
		case dialing <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-callDone:
			return nil, errDialUnwanted
		}
		defer func() { <-dialing }()
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		b.conns.Add(1)
		nc := &countedConn{Conn: c, n: &b.conns}
		if !useTLS {
			return nc, nil
		}
		cfg := tr.TLSClientConfig.Clone() // with the ALPN protocols net/http added
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		defer cancel()
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, err
		}
		return tc, nil
	}
	tr = &http.Transport{
		Proxy: nil, // never an environment proxy on the hot path
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return open(ctx, network, addr, false)
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return open(ctx, network, addr, true)
		},
		TLSClientConfig:        tlsCfg,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           bc.MaxIdleConns,
		MaxIdleConnsPerHost:    bc.MaxIdleConns,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  0, // the per-attempt context bounds the call
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
		// One write (one TLS record, one syscall) per request: with the default 4 KiB buffer a
		// request with a 4 KB plaintext (about 6 KB of JSON) took two.
		WriteBufferSize: 16 << 10,
	}
	b.cfg, b.name, b.scheme, b.host = bc, bc.Name, u.Scheme, u.Host
	b.keysBase = u.Path + xks.APIPathSuffix + "/keys/"
	b.healthURL = u.Path + xks.APIPathSuffix + "/health"
	b.transport, b.signer = tr, signer
	b.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	b.xks, err = xks.NewClient(xks.ClientConfig{
		BaseURL: u.Scheme + "://" + u.Host + u.Path + xks.APIPathSuffix,
		HTTP:    b.client,
		Signer:  signer,
		Timeout: 2 * time.Second,
		Header:  http.Header{"X-Xksproxy-Purpose": {"health-check"}},
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func opSegment(op xks.Operation) string {
	switch op {
	case xks.OpMetadata:
		return "/metadata"
	case xks.OpEncrypt:
		return "/encrypt"
	case xks.OpDecrypt:
		return "/decrypt"
	}
	return ""
}

// errNoReply marks a backend failure without a usable HTTP reply.
var errNoReply = errors.New("backend did not reply")

// call POSTs body to the backend for op/keyID, re-signed with the backend credential, and
// appends the raw reply body to dst. err != nil means no reply was received; a timeout of ctx
// satisfies errors.Is(err, context.DeadlineExceeded).
func (b *backend) call(ctx context.Context, op xks.Operation, keyID string, body []byte, bodySum *[32]byte, dst []byte) (int, []byte, error) {
	u := &url.URL{Scheme: b.scheme, Host: b.host}
	if op == xks.OpHealth {
		u.Path = b.healthURL
	} else {
		u.Path = b.keysBase + keyID + opSegment(op)
	}
	// *bytes.Reader in io.NopCloser, not a type of our own: net/http writes the headers and a
	// body it knows is in memory with one flush; any other reader gets its own write for the
	// headers (transfer.go, isKnownInMemoryReader).
	rd := bytes.NewReader(body)
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Host:          b.host,
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(rd),
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
		// Room for the two headers the signer adds and the one added after signing.
		Header: make(http.Header, 4),
	}).WithContext(&callCtx{ctx})
	req.Header["Content-Type"] = ctJSON
	// Only Content-Type is present: the signer signs req in place, without a shadow copy.
	if err := b.signer.SignPayloadHash(ctx, req, bodySum); err != nil {
		return 0, dst, fmt.Errorf("signing for backend %s: %w", b.name, err)
	}
	// XKS calls are stateless, so the transport may resend one on a connection the backend
	// closed while idle. A nil value is not sent (and is not signed: it is set after signing).
	req.Header["X-Idempotency-Key"] = nil
	// The transport directly: http.Client would clone the headers and the request for its
	// redirect logic, and CheckRedirect refuses redirects anyway (a 3xx is a reply like any
	// other and is normalised as a backend failure).
	resp, err := b.client.Transport.RoundTrip(req)
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return 0, dst, b.noReply(ctx, err)
	}
	defer resp.Body.Close()
	dst, err = readBounded(dst, resp.Body, resp.ContentLength, maxBackendReply)
	if err != nil {
		return 0, dst, b.noReply(ctx, err)
	}
	return resp.StatusCode, dst, nil
}

func (b *backend) noReply(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("backend %s: %w: %w: %w", b.name, errNoReply, cerr, err)
	}
	return fmt.Errorf("backend %s: %w: %w", b.name, errNoReply, err)
}

var errTooLarge = errors.New("body too large")

// readBounded appends r to dst, at most limit bytes; more is errTooLarge.
func readBounded(dst []byte, r io.Reader, contentLength, limit int64) ([]byte, error) {
	if contentLength > limit {
		return dst, errTooLarge
	}
	if contentLength > 0 && int64(cap(dst)-len(dst)) < contentLength+1 {
		n := make([]byte, len(dst), len(dst)+int(contentLength)+1)
		copy(n, dst)
		dst = n
	}
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)-start) > limit {
			return dst, errTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
