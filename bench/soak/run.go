package soak

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/bench/loadgen"
)

// httpClient is a bounded client for metrics, admin and probe calls (pool: the proxies' CA).
func httpClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// adminClient is for the cutover admin API: rollback and finalize answer once their last
// copy pass is done, which on a loaded machine with thousands of keys takes minutes.
func adminClient() *http.Client {
	c := httpClient(nil)
	c.Timeout = 10 * time.Minute
	return c
}

// loadConfig is the load on replica i: its share of the rate, AWS-like mix and sizes, every
// Encrypt kept (up to MaxRecorded in all) for the final re-decryption.
func (s *soak) loadConfig(i int) loadgen.Config {
	perReplica := s.o.Rate / float64(len(s.replicas))
	encrypts := perReplica * s.o.Duration.Seconds() * 0.45
	every := max(1, int(encrypts*float64(len(s.replicas))/float64(s.o.MaxRecorded))+1)
	create := s.o.CreateKeyShare
	return loadgen.Config{
		Endpoint: s.replicas[i].endpoint(), Prefix: "/aws", Region: region, Credential: s.loadCred,
		TLS:  &tls.Config{RootCAs: s.pki.pool, MinVersion: tls.VersionTLS12},
		Keys: s.seededKeys(), Rate: perReplica, Duration: s.o.Duration, Timeout: s.o.ClientTimeout,
		// Room for every request outstanding up to the client timeout, so the client drops
		// none itself; connections for 100 ms of load at once (more would open in one storm of
		// handshakes at start, which AWS does not do).
		Workers: max(256, int(perReplica*s.o.ClientTimeout.Seconds())), Conns: max(16, int(perReplica/10)),
		HTTP2:           s.o.HTTP2,
		Mix:             loadgen.Mix{Encrypt: 0.45, Decrypt: 0.45, Metadata: 0.1 - create, CreateKey: create},
		CreateKeyPrefix: fmt.Sprintf("soak-r%d-new-%%d", i),
		Record:          true, RecordEvery: every,
		OnFailure: func(at time.Time, _, class string) {
			s.mu.Lock()
			s.fails = append(s.fails, failure{at: at, replica: i, class: class})
			s.mu.Unlock()
		},
		Logger: s.o.Logger,
	}
}

func (s *soak) run(ctx context.Context) (*Report, error) {
	for i := range s.replicas {
		lg, err := loadgen.New(s.loadConfig(i))
		if err != nil {
			return nil, err
		}
		s.loads = append(s.loads, lg)
	}
	s.say("load: %.0f req/s for %s over %d replica(s); %d faults; samples every %s", s.o.Rate, s.o.Duration, len(s.replicas), len(s.o.Faults), s.o.SampleEvery)
	loadStart := time.Now()
	s.loadStart = loadStart
	s.windows = append(s.windows, Window{Kind: Warmup, Target: "every replica", Start: loadStart,
		End: loadStart.Add(min(faultKinds[Warmup].length, s.o.Duration/20))})
	reports := make([]*loadgen.Report, len(s.loads))
	var wg sync.WaitGroup
	for i, lg := range s.loads {
		wg.Go(func() {
			rep, err := lg.Run(ctx)
			if err != nil {
				s.problem("load on %s: %v", s.replicas[i].name, err)
			}
			reports[i] = rep
		})
	}
	stopped := make(chan struct{}) // closed when the load ends early
	go func() {
		select {
		case <-s.o.Interrupt:
		case <-ctx.Done():
			return
		}
		s.mu.Lock()
		s.interrupted = time.Since(loadStart)
		s.mu.Unlock()
		s.say("interrupted: stopping the load, then the final checks")
		for _, lg := range s.loads {
			lg.Stop()
		}
		close(stopped)
	}()
	advDone := make(chan struct{})
	loadsDone := make(chan struct{})
	if s.o.AdversaryRate > 0 {
		adv, err := s.newAdversary()
		if err != nil {
			return nil, err
		}
		s.adv = adv
		go func() { defer close(advDone); adv.run(ctx, s.o.AdversaryRate, loadsDone) }()
	} else {
		close(advDone)
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() { s.sampleLoop(sampleCtx, loadStart); close(sampled) }()

	s.runFaults(ctx, loadStart, stopped)
	wg.Wait()
	close(loadsDone)
	<-advDone
	stopSampling()
	<-sampled
	s.takeSamples(ctx, time.Now()) // the last reading, after the load
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s.say("load done; re-decrypting and comparing keys")
	rep := s.report(reports)
	s.finalChecks(ctx, rep)
	rep.judge()
	return rep, nil
}

// sampleLoop reads every replica each SampleEvery, the first time one interval in.
func (s *soak) sampleLoop(ctx context.Context, from time.Time) {
	t := time.NewTicker(s.o.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.takeSamples(ctx, now)
		}
	}
}

func (s *soak) takeSamples(ctx context.Context, now time.Time) {
	hc := httpClient(nil)
	for i, r := range s.replicas {
		sm, err := r.sample(ctx, hc)
		if err != nil {
			if ctx.Err() != nil {
				return // sampling stopped as the load ended: the last reading follows
			}
			s.say("sample %s: %v", r.name, err) // a replica being restarted has none
			continue
		}
		s.mu.Lock()
		prev := time.Time{}
		if n := len(s.samples[i]); n > 0 {
			prev = s.samples[i][n-1].At
		}
		s.mu.Unlock()
		if prev.IsZero() {
			prev = now.Add(-s.o.SampleEvery)
		}
		w := s.loads[i].Window(prev, sm.At)
		sm.P99ms, sm.Requests = float64(w.P99)/1e6, w.Count
		s.mu.Lock()
		s.samples[i] = append(s.samples[i], sm)
		s.mu.Unlock()
		s.say("%s: rss %.1f MB, %d goroutines, %d fds, p99 %.2f ms over %d requests", r.name, sm.RSSMB, sm.Goroutines, sm.FDs, sm.P99ms, sm.Requests)
	}
}

// runFaults injects the schedule in order, each at its planned offset or right after the
// previous one ends.
func (s *soak) runFaults(ctx context.Context, loadStart time.Time, stopped <-chan struct{}) {
	for i, p := range plan(s.o.Faults, s.o.Duration) {
		if wait := time.Until(loadStart.Add(p.At)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-stopped:
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-stopped:
			return
		default:
		}
		w := Window{Kind: p.Kind, Start: time.Now()}
		if faultKinds[p.Kind].fleet && len(s.replicas) == 1 {
			w.Skipped = "needs fleet mode (--replicas > 1)"
		} else {
			s.inject(ctx, i, p, &w)
		}
		w.End = time.Now()
		if w.Skipped != "" {
			s.say("fault %s skipped: %s", p.Kind, w.Skipped)
		} else {
			s.say("fault %s on %s: %.1fs %s", p.Kind, w.Target, w.End.Sub(w.Start).Seconds(), w.Note)
		}
		s.mu.Lock()
		s.windows = append(s.windows, w)
		s.mu.Unlock()
	}
}
