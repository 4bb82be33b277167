package proxy

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Admission. A request holds one of the MaxInFlight slots only once its body has been read and
// its signature verified: nobody without a credential can take a slot from signed traffic.
// Before that, unauthenticated work is bounded on its own:
//   - the whole body must arrive within Limits.BodyTimeout of the handler starting;
//   - a request still waiting for its body after Limits.SlowBodyAfter is "slow": it needs one
//     of Limits.MaxSlowBodies slots in total and of Limits.MaxSlowBodiesPerConn on its
//     connection (HTTP/1.1 connection or HTTP/2 connection with its streams). Without one its
//     read is cut at once and it is answered 429 (the connection is closed on HTTP/1.1).
//
// A signed request from AWS sends its body with its headers, so it is never slow and never
// competes for those slots: a flood of trickling bodies, however many connections or streams
// it opens, costs each of its requests at most SlowBodyAfter before it is cut.

// connState is per accepted connection (HTTP/2 streams share their connection's).
type connState struct{ slow atomic.Int32 }

type connKey struct{}

func connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}

// readDeadliner is implemented by net/http's HTTP/1.1 and HTTP/2 response writers.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// bodyGuard watches one request's body read.
type bodyGuard struct {
	p     *Proxy
	conn  *connState // nil for a handler called outside the server (tests, benchmarks)
	rd    readDeadliner
	timer *time.Timer

	mu       sync.Mutex
	done     bool
	slow     bool // counted in the slow-body counters
	rejected bool // cut because no slow-body slot was free
}

// guardBody sets the body deadline and arms the slow-body timer. The caller must call finish
// once the body is read (or failed). Guards are pooled with their timer: no allocation per
// request.
func (p *Proxy) guardBody(ctx context.Context, w any, start time.Time) *bodyGuard {
	g, _ := p.guards.Get().(*bodyGuard)
	conn, _ := ctx.Value(connKey{}).(*connState)
	rd, _ := w.(readDeadliner)
	if rd != nil {
		_ = rd.SetReadDeadline(start.Add(p.cfg.Limits.BodyTimeout))
	}
	if g == nil {
		g = &bodyGuard{p: p, conn: conn, rd: rd}
		g.timer = time.AfterFunc(p.cfg.Limits.SlowBodyAfter, g.fire)
		return g
	}
	g.conn, g.rd = conn, rd
	g.timer.Reset(p.cfg.Limits.SlowBodyAfter)
	return g
}

// fire runs when the body has not arrived after SlowBodyAfter.
func (g *bodyGuard) fire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return
	}
	l := &g.p.cfg.Limits
	total := g.p.slowBodies.Add(1)
	perConn := int32(1)
	if g.conn != nil {
		perConn = g.conn.slow.Add(1)
	}
	g.slow = true
	if total > int64(l.MaxSlowBodies) || perConn > int32(l.MaxSlowBodiesPerConn) {
		g.rejected = true
		g.p.m.slowBodyRejected.Inc()
		if g.rd != nil {
			// A deadline in the past ends the blocked read now.
			_ = g.rd.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// finish stops the timer and releases the slow-body slots; it reports whether the read was
// cut for want of a slot.
func (g *bodyGuard) finish() (rejected bool) {
	stopped := g.timer.Stop()
	g.mu.Lock()
	g.done = true
	slow, rejected := g.slow, g.rejected
	g.mu.Unlock()
	if slow {
		g.p.slowBodies.Add(-1)
		if g.conn != nil {
			g.conn.slow.Add(-1)
		}
	}
	if stopped {
		// fire will not run for this use: the guard may serve another request. (When it
		// fired, or is firing now, the guard is left to the garbage collector instead.)
		g.conn, g.rd = nil, nil
		g.done, g.slow, g.rejected = false, false, false
		g.p.guards.Put(g)
	}
	return rejected
}
