package loadgen

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
)

// Several endpoints behind one load balancer (Config.Endpoints): requests go round-robin over
// them, and a request that cannot connect to one (refused: the replica is down) goes to the
// next, as a load balancer does with a target that fails its connection. A request that did
// connect is never sent twice: whatever happens to it after that is what AWS would see.

// EndpointStats counts the requests one endpoint received.
type EndpointStats struct {
	Requests int64 `json:"requests"` // sent to it and connected
	Failed   int64 `json:"failed"`   // of those: no reply, a timeout or a 5xx
	// Refused counts connection attempts refused by it and sent on to the next endpoint.
	Refused int64 `json:"refused"`
}

type hostStats struct{ requests, failed, refused atomic.Int64 }

// balance holds the endpoints after the first one's and the round-robin position.
type balance struct {
	hosts []string // "scheme://host[:port]", hosts[0] = Config.Endpoint
	stats []hostStats
	next  atomic.Uint64
}

func newBalance(cfg *Config) *balance {
	b := &balance{hosts: append([]string{cfg.Endpoint}, cfg.Endpoints...)}
	b.stats = make([]hostStats, len(b.hosts))
	return b
}

// refused reports whether err is a refused connection (nothing was sent).
func refused(err error) bool {
	var op *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &op) && op.Op == "dial"
}

// roundTrip sends the request to the next endpoint in turn; url names the first endpoint.
func (e *endpoint) roundTrip(ctx context.Context, url string, body, resp []byte) (status int, reply []byte, class string, err error) {
	b := e.bal
	n := len(b.hosts)
	start := int(b.next.Add(1) % uint64(n))
	for try := range n {
		i := (start + try) % n
		u := url
		if i != 0 {
			u = b.hosts[i] + url[len(b.hosts[0]):]
		}
		status, reply, class, err = e.roundTripOnce(ctx, u, body, resp)
		if err != nil && class != "" && refused(err) && try < n-1 && ctx.Err() == nil {
			b.stats[i].refused.Add(1)
			continue
		}
		if class == "" && err != nil {
			return // ctx ended: not counted
		}
		st := &b.stats[i]
		st.requests.Add(1)
		if class != "" || status >= 500 {
			st.failed.Add(1)
		}
		return
	}
	return
}

// byEndpoint reports per endpoint, keyed by "scheme://host[:port]".
func (b *balance) byEndpoint() map[string]EndpointStats {
	out := make(map[string]EndpointStats, len(b.hosts))
	for i, h := range b.hosts {
		s := &b.stats[i]
		out[h] = EndpointStats{Requests: s.requests.Load(), Failed: s.failed.Load(), Refused: s.refused.Load()}
	}
	return out
}
