package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/xksproxy/xksproxy/sigv4"
	"github.com/xksproxy/xksproxy/xks"
)

// maxReply bounds a reply body; XKS replies are a few KB.
const maxReply = 64 << 10

// endpoint sends signed XKS requests over Config.Conns connections, round-robin.
//
// One http.Transport with MaxConnsPerHost = Conns does not spread the load: it opens a new
// connection only when every open one is busy and reuses the most recently idle one, so at a
// rate where each reply comes back before the next request leaves (100 req/s) every request
// rides one HTTP/1.1 connection — and HTTP/2 multiplexes everything onto one anyway. Behind a
// load balancer that balances connections, one connection is one replica. So each connection
// is its own transport (MaxConnsPerHost 1) and requests take them in turn.
type endpoint struct {
	conns   []*http.Client // one connection each (per host with Config.Endpoints)
	next    atomic.Uint64  // round-robin position over conns
	signer  *sigv4.Signer
	base    string // Endpoint + Prefix + /kms/xks/v1
	timeout time.Duration
	// Replies by HTTP major version, so a report says what was spoken, not what was asked for.
	replies1, replies2 atomic.Int64
	bal                *balance
}

func newEndpoint(cfg *Config) (*endpoint, error) {
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: cfg.Credential, Region: cfg.Region, Service: cfg.Service, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var tc *tls.Config
	if cfg.TLS != nil {
		tc = cfg.TLS.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	if tc.ClientSessionCache == nil {
		// Resumption keeps reconnects cheap if the server drops idle connections; the
		// connections share one cache.
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(2 * cfg.Conns)
	}
	if !cfg.HTTP2 {
		tc.NextProtos = []string{"http/1.1"}
	}
	e := &endpoint{
		signer:  signer,
		base:    cfg.Endpoint + cfg.Prefix + xks.APIPathSuffix,
		timeout: cfg.Timeout,
		bal:     newBalance(cfg),
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout + time.Second, KeepAlive: 30 * time.Second}
	for range cfg.Conns {
		tr := &http.Transport{
			Proxy:               nil, // talk to the endpoint directly, never through $HTTPS_PROXY
			DialContext:         dialer.DialContext,
			TLSClientConfig:     tc.Clone(),
			TLSHandshakeTimeout: cfg.Timeout + time.Second,
			MaxIdleConns:        len(e.bal.hosts),
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			IdleConnTimeout:     10 * time.Minute,
			DisableCompression:  true,
			ForceAttemptHTTP2:   cfg.HTTP2,
		}
		if !cfg.HTTP2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		e.conns = append(e.conns, &http.Client{Transport: tr})
	}
	return e, nil
}

func (e *endpoint) close() {
	for _, c := range e.conns {
		c.CloseIdleConnections()
	}
}

// roundTripOnce signs and sends body to url and reads the reply into resp (reused). class is
// "" when a reply was read, else ErrClientTimeout or ErrNetwork; class is "" with a non-nil err
// when ctx ended (the request is not counted).
func (e *endpoint) roundTripOnce(ctx context.Context, url string, body, resp []byte) (status int, reply []byte, class string, err error) {
	rctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, resp, ErrNetwork, err
	}
	// Sign before adding Content-Type, so the signed headers are host;x-amz-date as AWS KMS's.
	if err := e.signer.Sign(rctx, req, body); err != nil {
		return 0, resp, ErrNetwork, err
	}
	req.Header["Content-Type"] = []string{"application/json"}
	res, err := e.conns[e.next.Add(1)%uint64(len(e.conns))].Do(req)
	if err != nil {
		return 0, resp, classify(ctx, rctx, err), err
	}
	if res.ProtoMajor == 2 {
		e.replies2.Add(1)
	} else {
		e.replies1.Add(1)
	}
	reply, err = readAll(resp[:0], res.Body)
	res.Body.Close()
	if err != nil {
		return 0, reply, classify(ctx, rctx, err), err
	}
	return res.StatusCode, reply, "", nil
}

func classify(parent, rctx context.Context, err error) string {
	if parent.Err() != nil {
		return ""
	}
	if rctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return ErrClientTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrClientTimeout
	}
	return ErrNetwork
}

// readAll reads r into dst, failing beyond maxReply.
func readAll(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			if len(dst) > maxReply {
				return dst, errors.New("reply too large")
			}
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// errorClass returns the error class of a non-2xx reply: its errorName if it is a spec name.
func errorClass(body []byte) string {
	class := ErrUnknownError
	_ = scanObject(body, func(key, val []byte, isString bool) {
		if isString && string(key) == "errorName" {
			if n, ok := xks.ParseErrorName(string(val)); ok {
				class = string(n)
			}
		}
	})
	return class
}
