// Package soak runs xksproxy for a long time under AWS-like signed load while injecting the
// faults a production endpoint meets (backend restarts, latency above the backend timeout,
// error bursts, certificate renewals, credential rotations, replica crashes, migrations with a
// rollback), samples every replica's RSS, goroutines, open fds and p99, and proves at the end
// that nothing was lost: every recorded ciphertext decrypts through every replica and every
// key is identical on both backends. bench/cmd/soak is its command line.
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xksproxy/xksproxy/bench/compare"
	"github.com/xksproxy/xksproxy/bench/loadgen"
	"github.com/xksproxy/xksproxy/cosmian/kmsemu"
	"github.com/xksproxy/xksproxy/cutover/adminapi"
	"github.com/xksproxy/xksproxy/sigv4"
)

// Options configures Run. Zero values take the defaults named on each field.
type Options struct {
	Rate           float64       // total req/s over all replicas; default 1800 (AWS's default quota)
	Duration       time.Duration // load duration; default 10m
	Replicas       int           // default 1; more: fleet mode over an etcd process
	Faults         []FaultSpec   // default ParseFaults(DefaultFaults); empty slice (not nil): none
	SampleEvery    time.Duration // default 1m (at most Duration/6, so a short run has samples)
	Keys           int           // seeded keys taking traffic; default 50
	CreateKeyShare float64       // share of requests creating a key (GetKeyMetadata of a new id); default 0.002
	BackendTimeout time.Duration // proxy's per-attempt backend timeout; default 200ms
	Probation      time.Duration // migration probation before finalize; default 30s, at most Duration/10
	Grace          time.Duration // recovery allowed after a fault ends; default 3s
	// ClientTimeout is the load's per-request timeout; default 1s. AWS gives up at 250 ms, and
	// the report counts those requests (requests_over_250ms), but on a shared machine a
	// starved process answers late anywhere: a failure is an error reply or a broken
	// connection, not a late success.
	ClientTimeout time.Duration
	// HTTP2 makes the load offer h2 and http/1.1, as curl does in AWS's example (the proxy
	// picks h2 by default). Default: HTTP/1.1 only, the harder case for the proxy: a request
	// that times out closes its connection, and the next one needs a new TLS handshake.
	HTTP2 bool
	// AdversaryRate is the adversarial callers' requests a second beside the load (adversary.go);
	// default 2; negative: none.
	AdversaryRate float64
	MaxRecorded   int    // ciphertexts kept for re-decryption; default 50 000
	Bin           string // xksproxy binary; default: built from the module into Dir
	Dir           string // work directory (configs, logs); default a fresh temporary one, removed
	// Interrupt, when closed, ends the load early: no further fault is injected, the final
	// checks run and the report says when the load stopped. Cancelling Run's context instead
	// abandons the run without a report.
	Interrupt <-chan struct{}
	Progress  io.Writer // one line per event; default discard
	Logger    *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Rate == 0 {
		o.Rate = 1800
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Minute
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Faults == nil {
		f, err := ParseFaults(DefaultFaults)
		if err != nil {
			return err
		}
		o.Faults = f
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = min(time.Minute, o.Duration/6)
	}
	if o.Keys == 0 {
		o.Keys = 50
	}
	if o.CreateKeyShare == 0 {
		o.CreateKeyShare = 0.002
	}
	if o.BackendTimeout == 0 {
		o.BackendTimeout = 200 * time.Millisecond
	}
	if o.Probation == 0 {
		o.Probation = min(30*time.Second, o.Duration/10) // compressed with the faults
	}
	if o.Grace == 0 {
		o.Grace = 3 * time.Second
	}
	if o.ClientTimeout == 0 {
		o.ClientTimeout = time.Second
	}
	if o.AdversaryRate == 0 {
		o.AdversaryRate = 2
	}
	if o.MaxRecorded == 0 {
		o.MaxRecorded = 50_000
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Rate < 1 || o.Rate > 20000:
		return errors.New("soak: rate must be 1..20000 req/s")
	case o.Duration < 10*time.Second:
		return errors.New("soak: duration must be at least 10s")
	case o.Replicas < 1 || o.Replicas > 9:
		return errors.New("soak: replicas must be 1..9")
	case o.SampleEvery < time.Second || o.Keys < 1 || o.Keys > 100000 || o.CreateKeyShare < 0 || o.CreateKeyShare > 0.5:
		return errors.New("soak: sample interval ≥ 1s, keys 1..100000, create-key share 0..0.5")
	}
	return nil
}

// soak is one run's state.
type soak struct {
	o         Options
	dir       string
	backends  []*backend
	serving   string // backend serving now ("a" until a migration finalizes)
	pki       *pki
	etcd      *etcdProc // fleet mode (Replicas > 1) only
	replicas  []*replica
	loadCred  sigv4.Credential // signs the load; stays in every credential rotation
	rotating  sigv4.Credential // the other credential set; replaced by each rotation
	admTok    string
	fleetSec  string // base64 of 32 random bytes: the fleet secret of every replica
	loads     []*loadgen.Runner
	adv       *adversary // nil: AdversaryRate < 0
	start     time.Time
	loadStart time.Time

	mu      sync.Mutex
	fails   []failure
	windows []Window
	samples [][]Sample // per replica
	probs   []string
	// interrupted is when (after the load's start) Options.Interrupt ended the load; 0: it ran out.
	interrupted time.Duration
}

func (s *soak) say(format string, args ...any) {
	fmt.Fprintf(s.o.Progress, "%7.1fs  %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func (s *soak) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.probs = append(s.probs, msg)
	s.mu.Unlock()
	s.say("PROBLEM: %s", msg)
}

// Run performs one soak and returns its report; err is set only when the run could not be
// carried out (a verdict of FAIL is a report with Pass false).
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	s := &soak{o: o, serving: "a", start: time.Now(), admTok: randHex(24), fleetSec: randBase64(32)}
	s.dir = o.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "xksproxy-soak-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		s.dir = d
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.setUp(ctx); err != nil {
		return nil, err
	}
	return s.run(ctx)
}

func (s *soak) close() {
	for _, r := range s.replicas {
		r.stop()
		_ = r.log.Close()
	}
	if s.etcd != nil {
		s.etcd.stop()
		_ = s.etcd.log.Close()
	}
	for _, b := range s.backends {
		_ = b.run.Close()
	}
}

// buildProxy builds cmd/xksproxy of the module the soak runs from.
func buildProxy(ctx context.Context, out string) error {
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("soak: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(root))
	if mod == "" || mod == os.DevNull {
		return errors.New("soak: run from inside the xksproxy module, or pass --xksproxy BINARY")
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", out, "./cmd/xksproxy")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("soak: go build: %w\n%s", err, b)
	}
	return nil
}

func (s *soak) setUp(ctx context.Context) error {
	bin := s.o.Bin
	if bin == "" {
		bin = filepath.Join(s.dir, "xksproxy")
		s.say("building xksproxy")
		if err := buildProxy(ctx, bin); err != nil {
			return err
		}
	}
	for name, gen := range map[string]kmsemu.Generation{"a": kmsemu.Cosmian526, "b": kmsemu.NewestGeneration} {
		b, err := startBackend(name, gen)
		if err != nil {
			return fmt.Errorf("soak: backend %s: %w", name, err)
		}
		s.backends = append(s.backends, b)
	}
	slices.SortFunc(s.backends, func(x, y *backend) int { return strings.Compare(x.name, y.name) })
	if err := s.backends[0].seed(s.seededKeys()); err != nil {
		return err
	}
	var err error
	if s.pki, err = newPKI(); err != nil {
		return err
	}
	s.loadCred, s.rotating = newCredential("LOAD"), newCredential("ROT")
	if s.o.Replicas > 1 {
		if s.etcd, err = newEtcd(s.dir); err != nil {
			return err
		}
		if err := s.etcd.start(ctx); err != nil {
			return err
		}
	}
	for i := range s.o.Replicas {
		r, err := s.newReplica(bin, i)
		if err != nil {
			return err
		}
		s.replicas = append(s.replicas, r)
		if err := r.start(ctx); err != nil {
			return err
		}
	}
	s.samples = make([][]Sample, len(s.replicas))
	s.say("backends a (%d keys) and b (empty); %d replica(s) of %s; work directory %s", s.o.Keys, len(s.replicas), bin, s.dir)
	return nil
}

func (s *soak) seededKeys() []string {
	ids := make([]string, s.o.Keys)
	for i := range ids {
		ids[i] = fmt.Sprintf("soak-key-%04d", i)
	}
	return ids
}

func (s *soak) newReplica(bin string, i int) (*replica, error) {
	name := fmt.Sprintf("r%d", i)
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f := replicaFiles{dir: dir, config: filepath.Join(dir, "xksproxy.toml"), cert: filepath.Join(dir, "cert.pem"),
		key: filepath.Join(dir, "key.pem"), admin: filepath.Join(dir, "admin-token"), journal: filepath.Join(dir, "cutover.json")}
	if s.etcd != nil {
		f.member, f.etcd = name, s.etcd.endpoint()
	}
	for _, p := range []*string{&f.listen, &f.metrics, &f.adminListen} {
		a, err := compare.FreePort() // a restarted replica binds the same ports again
		if err != nil {
			return nil, err
		}
		*p = a
	}
	if _, err := s.pki.writeLeaf(f.cert, f.key); err != nil {
		return nil, err
	}
	if err := writeConfig(&f, prefixCreds{s.loadCred, s.rotating}, s.backends, s.admTok, s.fleetSec, &s.o); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(filepath.Join(dir, "xksproxy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &replica{name: name, bin: bin, files: f, log: log,
		admin: &adminapi.Client{BaseURL: "http://" + f.adminListen, Token: s.admTok, HTTP: adminClient()}}, nil
}
