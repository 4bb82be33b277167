package loadgen

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/xks"
)

// HealthPoller polls GetHealthStatus (kmsOperation KmsHealthCheck) at a fixed interval and
// measures how long the endpoint looked disconnected: a poll that failed (error reply,
// timeout, network) or whose ekmFleetDetails were all UNAVAILABLE (or empty) marks the time
// from its start to the next poll's start (or the end of Run) as disconnected.
type HealthPoller struct {
	cfg      Config
	ep       *endpoint
	interval time.Duration

	mu           sync.Mutex
	total, bad   int
	disconnected time.Duration
	lastBad      bool
	lastAt       time.Time
}

// NewHealthPoller validates cfg (Keys, Mix and Sizes are not needed) and returns a poller.
func NewHealthPoller(cfg Config, interval time.Duration) (*HealthPoller, error) {
	if err := cfg.checkAndSetDefaults(false); err != nil {
		return nil, err
	}
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	ep, err := newEndpoint(&cfg)
	if err != nil {
		return nil, err
	}
	return &HealthPoller{cfg: cfg, ep: ep, interval: interval}, nil
}

// Run polls until ctx is done.
func (h *HealthPoller) Run(ctx context.Context) {
	defer h.ep.close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	url := h.ep.base + "/health"
	var body, reply []byte
	ticker := time.NewTicker(h.interval)
	defer ticker.Stop()
	for {
		at := h.cfg.Now()
		m := md{operation: "KmsHealthCheck"}
		formatUUID(&m.requestID, rng.Uint64(), rng.Uint64())
		body = appendShortBody(body[:0], &m)
		status, rep, class, err := h.ep.roundTrip(ctx, url, body, reply)
		reply = rep
		if class == "" && err != nil {
			break // ctx ended mid-poll
		}
		bad := err != nil || status != 200 || !anyAvailable(reply)
		if bad {
			h.cfg.Logger.Debug("health poll: disconnected", "status", status, "class", class)
		}
		h.mu.Lock()
		if h.lastBad && !h.lastAt.IsZero() {
			h.disconnected += at.Sub(h.lastAt)
		}
		h.total++
		if bad {
			h.bad++
		}
		h.lastBad, h.lastAt = bad, at
		h.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-ticker.C:
			continue
		}
		break
	}
	h.mu.Lock()
	if h.lastBad && !h.lastAt.IsZero() {
		h.disconnected += h.cfg.Now().Sub(h.lastAt)
	}
	h.lastBad = false
	h.mu.Unlock()
}

func anyAvailable(reply []byte) bool {
	var hr xks.HealthResponse
	if json.Unmarshal(reply, &hr) != nil {
		return false
	}
	for _, d := range hr.EkmFleetDetails {
		if d.HealthStatus != xks.HealthUnavailable {
			return true
		}
	}
	return false
}

// Disconnected returns the disconnected time measured so far (complete once Run returned).
func (h *HealthPoller) Disconnected() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.disconnected
	if h.lastBad {
		d += h.cfg.Now().Sub(h.lastAt)
	}
	return d
}

// Polls returns how many polls completed and how many of them found the endpoint disconnected.
func (h *HealthPoller) Polls() (total, unavailable int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total, h.bad
}
