package soak

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/sigv4"
)

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (s *soak) backend(name string) *backend {
	for _, b := range s.backends {
		if b.name == name {
			return b
		}
	}
	return nil
}

// inject carries out one fault and fills w (target, note). Faults that cannot be carried
// out as intended are problems (the run fails): the soak must not pass on a fault it did not
// inject.
func (s *soak) inject(ctx context.Context, i int, p planned, w *Window) {
	switch p.Kind {
	case FaultBackendRestart, FaultBackendSlow, FaultBackendErrors:
		b := s.backend(s.serving)
		w.Target = b.name
		f := kmsemu.Faults{Down: true}
		switch p.Kind {
		case FaultBackendSlow:
			f = kmsemu.Faults{Latency: s.o.BackendTimeout + 100*time.Millisecond, XKSOnly: true}
			w.Note = fmt.Sprintf("(+%s per XKS call)", f.Latency)
		case FaultBackendErrors:
			f = kmsemu.Faults{ErrorRate: 0.2, XKSOnly: true}
			w.Note = "(20 % of XKS calls fail)"
		default:
			w.Note = "(connections dropped and refused, state kept)"
		}
		b.emu.SetFaults(f)
		sleepCtx(ctx, p.Length)
		b.emu.SetFaults(kmsemu.Faults{})
	case FaultCertReplace:
		w.Target = "every replica"
		s.replaceCerts(ctx, w)
	case FaultCredRotate:
		w.Target = "every replica"
		s.rotateCredential(ctx, w)
	case FaultReplicaKill:
		r := s.replicas[i%len(s.replicas)]
		w.Target = r.name
		if err := r.kill(); err != nil {
			s.problem("kill %s: %v", r.name, err)
			return
		}
		sleepCtx(ctx, p.Length)
		if err := r.start(ctx); err != nil {
			s.problem("restart %s: %v", r.name, err)
			return
		}
		r.restarts++
		w.Note = "(kill -9, restarted)"
	case FaultEtcdStop:
		w.Target = "etcd"
		s.etcd.stop()
		sleepCtx(ctx, p.Length)
		if err := s.etcd.start(ctx); err != nil {
			s.problem("restart etcd: %v", err)
			return
		}
		w.Note = "(stopped, started again on the same data)"
	case FaultMigrateRollback, FaultMigrateFinalize:
		w.Target = "a → b"
		s.migrate(ctx, p.Kind == FaultMigrateFinalize, w)
	}
}

// replaceCerts writes a new leaf into every replica's certificate files and waits until each
// serves it (the proxy polls the files every second).
func (s *soak) replaceCerts(ctx context.Context, w *Window) {
	for _, r := range s.replicas {
		serial, err := s.pki.writeLeaf(r.files.cert, r.files.key)
		if err != nil {
			s.problem("certificate for %s: %v", r.name, err)
			return
		}
		if err := waitFor(ctx, 30*time.Second, func() bool { return servedSerial(r.files.listen, s.pki) == serial.String() }); err != nil {
			s.problem("%s still serves the old certificate after 30s", r.name)
			return
		}
	}
	w.Note = "(new leaf served)"
}

func servedSerial(addr string, p *pki) string {
	d := &tls.Dialer{Config: &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return new(big.Int).Set(certs[0].SerialNumber).String()
}

func waitFor(ctx context.Context, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		sleepCtx(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// rotateCredential replaces the second credential set (the load keeps signing with the
// first) in every replica's configuration, sends SIGHUP, and checks that the new set is
// accepted and the old one refused.
func (s *soak) rotateCredential(ctx context.Context, w *Window) {
	old, next := s.rotating, newCredential("ROT")
	for _, r := range s.replicas {
		if err := writeConfig(&r.files, prefixCreds{s.loadCred, next}, s.backends, s.admTok, s.fleetSec, &s.o); err != nil {
			s.problem("credentials for %s: %v", r.name, err)
			return
		}
		if err := r.signal(syscall.SIGHUP); err != nil {
			s.problem("SIGHUP %s: %v", r.name, err)
			return
		}
		if err := waitFor(ctx, 30*time.Second, func() bool { return s.probe(ctx, r, next) == http.StatusOK }); err != nil {
			s.problem("%s does not accept the new credential 30s after SIGHUP", r.name)
			return
		}
		if st := s.probe(ctx, r, old); st != http.StatusUnauthorized && st != http.StatusForbidden {
			s.problem("%s still answers %d to the removed credential", r.name, st)
			return
		}
	}
	s.rotating = next
	w.Note = "(new set accepted, old refused)"
}

// probe sends one signed GetHealthStatus and returns the HTTP status (0 on a network error).
func (s *soak) probe(ctx context.Context, r *replica, c sigv4.Credential) int {
	signer, err := sigv4.NewSigner(sigv4.SignerConfig{Credential: c, Region: region})
	if err != nil {
		return 0
	}
	body := []byte(`{"requestMetadata":{"kmsRequestId":"soak-probe-` + randHex(8) + `","kmsOperation":"KmsHealthCheck"}}`)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, r.endpoint()+"/aws/kms/xks/v1/health", strings.NewReader(string(body)))
	if err != nil {
		return 0
	}
	if err := signer.Sign(rctx, req, body); err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient(s.pki.pool).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// migrate runs a migration A → B through the first replica's admin API up to the switch,
// then rolls it back or (after the probation) finalizes it. When the probation itself rolls
// back (B erred more than the threshold: the product working), it is noted and the migration
// started again, at most twice more, as an operator would.
func (s *soak) migrate(ctx context.Context, finalize bool, w *Window) {
	if s.serving != "a" {
		s.problem("migration A → B asked for while %s serves (the schedule has one finalize at most)", s.serving)
		return
	}
	adm := s.replicas[0].admin
	// A probation may still be rolling an earlier migration back on its own: start from rest.
	if st, err := s.waitState(ctx, cutover.StateServing, cutover.StateRolledBack); err != nil {
		s.problem("no migration can start: %v %s", err, stateOf(st))
		return
	}
	var notes []string
	for attempt := 1; ; attempt++ {
		if err := whileNoDriver(ctx, func() error { _, err := adm.Start(ctx, cutover.StartOptions{AutoSwitch: true}); return err }); err != nil {
			s.problem("cutover start: %v", err)
			return
		}
		st, err := s.waitState(ctx, cutover.StateSwitched, cutover.StateCopyFailed, cutover.StateVerifyFailed, cutover.StateRolledBack)
		if err != nil || st.State != cutover.StateSwitched {
			s.problem("migration did not switch: %v %s", err, stateOf(st))
			return
		}
		notes = append(notes, fmt.Sprintf("%d keys copied, switched", st.Keys.Copied))
		if !finalize {
			// The probation may have rolled back by itself meanwhile (then that is the rollback).
			if cur, err := adm.Status(ctx); err == nil && (cur.State == cutover.StateRollingBack || cur.State == cutover.StateRolledBack) {
				notes = append(notes, "probation rolled back first: "+cur.Reason)
			} else if err := whileNoDriver(ctx, func() error { _, err := adm.Rollback(ctx, "soak: planned rollback"); return err }); err != nil {
				s.problem("cutover rollback: %v", err)
				return
			}
			if st, err = s.waitState(ctx, cutover.StateRolledBack); err != nil {
				s.problem("rollback did not complete: %v %s", err, stateOf(st))
				return
			}
			w.Note = "(" + strings.Join(notes, "; ") + "; rolled back)"
			return
		}
		sleepCtx(ctx, s.o.Probation+time.Second)
		if st, err = adm.Status(ctx); err == nil && (st.State == cutover.StateRollingBack || st.State == cutover.StateRolledBack) && attempt < 3 {
			notes = append(notes, "probation rolled back: "+st.Reason+"; started again")
			s.say("migration: %s", notes[len(notes)-1])
			if st, err = s.waitState(ctx, cutover.StateRolledBack); err != nil {
				s.problem("automatic rollback did not complete: %v %s", err, stateOf(st))
				return
			}
			continue
		}
		break
	}
	if err := whileNoDriver(ctx, func() error { _, err := adm.Finalize(ctx, cutover.FinalizeOptions{}); return err }); err != nil {
		s.problem("cutover finalize: %v", err)
		return
	}
	if st, err := s.waitState(ctx, cutover.StateFinalized); err != nil {
		s.problem("finalize did not complete: %v %s", err, stateOf(st))
		return
	}
	s.serving = "b"
	w.Note = "(" + strings.Join(notes, "; ") + "; finalized: b serves)"
}

// whileNoDriver retries call for up to a minute while the admin API answers 503: no driver is
// elected right now (a replica or etcd was just restarted by an earlier fault), which the
// answer itself says to retry shortly, as an operator would.
func whileNoDriver(ctx context.Context, call func() error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := call()
		var ae *adminapi.Error
		if err == nil || !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return err
		}
		sleepCtx(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return err
		}
	}
}

func stateOf(st *cutover.Status) string {
	if st == nil {
		return ""
	}
	return fmt.Sprintf("(state %s: %s%s)", st.State, st.Reason, st.LastError)
}

// waitState polls the first replica's cutover status until it is in one of states (10 min).
func (s *soak) waitState(ctx context.Context, states ...cutover.State) (*cutover.Status, error) {
	var last *cutover.Status
	// Ten minutes, or 10 ms a key past 60 000 keys (100 000: 16 minutes to list, copy and verify).
	err := waitFor(ctx, max(10*time.Minute, time.Duration(s.o.Keys)*10*time.Millisecond), func() bool {
		st, err := s.replicas[0].admin.Status(ctx)
		if err != nil {
			return false
		}
		last = st
		for _, want := range states {
			if st.State == want {
				return true
			}
		}
		return false
	})
	return last, err
}
