package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// Handshakes. A TLS handshake is the costliest work a client can ask for before proving
// anything: a key exchange (X25519 with ML-KEM by default) and, unless the session resumes, a
// signature. When many clients reconnect at once, unbounded handshakes take the CPU from the
// signed requests on connections already open. This happens after a network blip, or when
// their timeouts closed HTTP/1.1 connections. Those requests time out as well, their clients
// reconnect, and the proxy stays there after the cause is gone. The soak at 1800 req/s saw
// this: 60 % of the proxies' CPU went to handshakes, p50 over 1 s, for minutes after a 30 s
// backend fault.
//
// So the main listener runs at most Limits.MaxHandshakes handshakes at once. A ClientHello
// waits for a slot for up to ReadHeaderTimeout, the time a client has anyway to send its
// request; after that its handshake is refused. The slot is taken once the ClientHello has
// arrived, so a client that connects and sends nothing holds none. It is given back when the
// server has sent its last handshake message, so a slow client's own part holds none either.

// errHandshakeBusy fails a handshake that waited ReadHeaderTimeout for a slot.
var errHandshakeBusy = errors.New("tls: too many handshakes in progress")

type handshakeGate struct {
	slots   chan struct{}
	wait    time.Duration
	waiting atomic.Int64
	refused atomic.Int64
}

func newHandshakeGate(n int, wait time.Duration) *handshakeGate {
	return &handshakeGate{slots: make(chan struct{}, n), wait: wait}
}

// gatedConn is an accepted connection. It holds a handshake slot from its ClientHello until
// its handshake has done the server's work, or until it closes.
type gatedConn struct {
	net.Conn
	g    *handshakeGate
	held atomic.Bool
}

func (c *gatedConn) release() {
	if c.held.CompareAndSwap(true, false) {
		<-c.g.slots
	}
}

func (c *gatedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

type gateListener struct {
	net.Listener
	g *handshakeGate
}

func (l gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, g: l.g}, nil
}

func (g *handshakeGate) acquire(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-t.C:
		g.refused.Add(1)
		return errHandshakeBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

// config returns base with the gate in front of every handshake of a gatedConn. The
// connection's own configuration is a clone of base (or of what base.GetConfigForClient
// picks) whose VerifyConnection gives the slot back: crypto/tls calls it on every server
// path once the server's flight is sent, before waiting for the client's Finished. A
// handshake that fails before that ends with the connection's Close, which gives it back.
func (g *handshakeGate) config(base *tls.Config) *tls.Config {
	inner := base.GetConfigForClient
	out := base.Clone()
	out.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		gc, ok := hello.Conn.(*gatedConn)
		if !ok {
			if inner != nil {
				return inner(hello)
			}
			return nil, nil
		}
		if err := g.acquire(hello.Context()); err != nil {
			return nil, err
		}
		gc.held.Store(true)
		conf := base
		if inner != nil {
			c, err := inner(hello)
			if err != nil {
				gc.release()
				return nil, err
			}
			if c != nil {
				conf = c
			}
		}
		per := conf.Clone()
		verify := conf.VerifyConnection
		per.VerifyConnection = func(cs tls.ConnectionState) error {
			gc.release()
			if verify != nil {
				return verify(cs)
			}
			return nil
		}
		return per, nil
	}
	return out
}
