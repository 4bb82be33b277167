package proxy

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// -flood.full runs TestSlowBodyFlood at the size of the report that found the problem (1100
// trickling TLS connections plus 5 HTTP/2 connections × 250 streams); by default the flood is
// scaled to the limits the test configures, which proves the same property on a small host.
var floodFull = flag.Bool("flood.full", false, "run TestSlowBodyFlood with 1100 connections + 5×250 HTTP/2 streams")

// trickle is a request body that sends one byte per period until ctx ends.
type trickle struct {
	ctx    context.Context
	period time.Duration
}

func (t trickle) Read(p []byte) (int, error) {
	select {
	case <-t.ctx.Done():
		return 0, t.ctx.Err()
	case <-time.After(t.period):
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = '{'
	return 1, nil
}

// TestSlowBodyFlood: unauthenticated requests that trickle their body over HTTP/1.1
// connections and HTTP/2 streams, far more than MaxInFlight and MaxSlowBodies, while signed
// Encrypts run. Every signed request must be answered 200: before authentication no request
// holds an in-flight slot, and slow bodies are bounded by their own limits.
func TestSlowBodyFlood(t *testing.T) {
	h1Conns, h2Conns, h2Streams := 48, 2, 40
	if *floodFull {
		h1Conns, h2Conns, h2Streams = 1100, 5, 250
	}
	e := newEmuEnv(t, func(c *Config) {
		c.Health.Disabled = true
		c.Limits.MaxInFlight = 4
		c.Limits.MaxSlowBodies = 8
		c.Limits.MaxSlowBodiesPerConn = 2
		// Generous for the signed requests on a loaded host under -race: their body arrives
		// with their headers, so they never come near either figure.
		c.Limits.SlowBodyAfter = 500 * time.Millisecond
		c.Limits.BodyTimeout = 3 * time.Second
	}, relaxTimeouts)
	// The property is "never refused", not a latency: on a starved host under -race a signed
	// request may take seconds, so its client waits long.
	e.client.Timeout = 60 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	attack, stopAttack := context.WithCancel(ctx)
	defer stopAttack()
	tlsCfg := e.client.Transport.(*http.Transport).TLSClientConfig
	addr := e.p.Addr().String()
	const head = "POST /aws/kms/xks/v1/keys/k1/encrypt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n"

	var wg sync.WaitGroup
	var h1Sent, h2Sent atomic.Int64
	for range h1Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attack.Err() == nil {
				d := tls.Dialer{Config: &tls.Config{RootCAs: tlsCfg.RootCAs, NextProtos: []string{"http/1.1"}}}
				c, err := d.DialContext(attack, "tcp", addr)
				if err != nil {
					continue
				}
				stop := context.AfterFunc(attack, func() { c.Close() })
				if _, err := io.WriteString(c, head); err == nil {
					h1Sent.Add(1)
					for attack.Err() == nil {
						if _, err := c.Write([]byte{'{'}); err != nil {
							break
						}
						select {
						case <-attack.Done():
						case <-time.After(time.Second):
						}
					}
				}
				stop()
				c.Close()
			}
		}()
	}
	for range h2Conns {
		tr := &http.Transport{TLSClientConfig: tlsCfg.Clone(), ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr}
		for range h2Streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for attack.Err() == nil {
					req, _ := http.NewRequestWithContext(attack, http.MethodPost, e.url+keysPath+"k1/encrypt", io.LimitReader(trickle{attack, time.Second}, 2000))
					req.ContentLength = 2000
					req.Header.Set("Content-Type", "application/json")
					h2Sent.Add(1)
					if resp, err := cl.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}()
		}
	}

	// The flood is on: every attacker has sent its headers and the flood holds what it can
	// (all the slow-body slots; with the in-flight slot taken before authentication, as the
	// proxy once did, those instead).
	for h1Sent.Load() < int64(h1Conns) || h2Sent.Load() < int64(h2Conns*h2Streams) ||
		(e.p.slowBodies.Load() < int64(e.p.cfg.Limits.MaxSlowBodies) && e.p.inFlight.Load() < int64(e.p.cfg.Limits.MaxInFlight)) {
		if ctx.Err() != nil {
			t.Fatalf("flood never started: %d+%d requests, %d slow, %d in flight", h1Sent.Load(), h2Sent.Load(), e.p.slowBodies.Load(), e.p.inFlight.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}

	const signers, each = 4, 25
	var failures atomic.Int64
	var firstFailure atomic.Value
	var sg sync.WaitGroup
	for i := range signers {
		sg.Add(1)
		go func() {
			defer sg.Done()
			for j := range each {
				st, b := e.post(t, keysPath+"k1/encrypt", encBody(fmt.Appendf(nil, "signed %d/%d", i, j), nil))
				if st != 200 {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", st, b))
				}
			}
		}()
	}
	sg.Wait()
	stopAttack()
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d signed requests failed during the flood, first: %v", n, signers*each, firstFailure.Load())
	}
	if counterValue(e.p.m.slowBodyRejected) == 0 {
		t.Error("no slow body was cut: the flood did not exceed MaxSlowBodies")
	}
	t.Logf("flood: %d HTTP/1.1 and %d HTTP/2 unauthenticated requests started; %v slow bodies cut", h1Sent.Load(), h2Sent.Load(), counterValue(e.p.m.slowBodyRejected))
	// Handlers finish just after their reply reached the client.
	for e.p.inFlight.Load() != 0 || e.p.slowBodies.Load() != 0 {
		if ctx.Err() != nil {
			t.Fatalf("after the flood: %d in flight, %d slow bodies", e.p.inFlight.Load(), e.p.slowBodies.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChunkedRefused: a request with Transfer-Encoding (with or without a Content-Length
// beside it) is refused and its connection closed, never answered and kept.
func TestChunkedRefused(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Health.Disabled = true })
	tlsCfg := e.client.Transport.(*http.Transport).TLSClientConfig
	for _, tc := range []struct{ name, head string }{
		{"CL and TE", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"},
		{"TE only", "Transfer-Encoding: chunked\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", e.p.Addr().String(), &tls.Config{RootCAs: tlsCfg.RootCAs, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			req := "POST /aws/kms/xks/v1/keys/k1/encrypt HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" + tc.head + "\r\n5\r\n{}{}{\r\n0\r\n\r\n"
			if _, err := io.WriteString(c, req+req); err != nil {
				t.Fatal(err)
			}
			all, _ := io.ReadAll(c) // until the server closes
			s := string(all)
			if !strings.HasPrefix(s, "HTTP/1.1 400") || !strings.Contains(s, "ValidationException") {
				t.Errorf("reply: %q", s)
			}
			if n := strings.Count(s, "HTTP/1.1 "); n != 1 {
				t.Errorf("%d replies on the connection, want 1 and a close", n)
			}
		})
	}
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// TestAdminOverTLS: with TLS the admin API answers https only (the bearer token never travels
// in clear text); the plain-HTTP attempt gets no admin reply.
func TestAdminOverTLS(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef-token"
	e := newEnv(t, func(c *Config) {
		c.Admin = AdminConfig{Listen: "127.0.0.1:0", Token: token, TLS: c.TLS}
		c.Health.Disabled = true
	})
	tlsCfg := e.client.Transport.(*http.Transport).TLSClientConfig
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg.Clone()}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "https://"+e.p.AdminAddr().String()+"/v1/route", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("https admin: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	plain, _ := http.NewRequest(http.MethodGet, "http://"+e.p.AdminAddr().String()+"/v1/route", nil)
	plain.Header.Set("Authorization", "Bearer "+token)
	if resp, err := hc.Do(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("admin API answered 200 over plain HTTP")
		}
	}
}
